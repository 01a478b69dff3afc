"""A real DPO run of the tiny model: an Open WebUI export with rated regenerations -> data.preferences ->
``llamafactory-cli train`` with stage dpo through ``orchestrator run``."""

import json

import pytest

from orchestrator.cli import main

pytestmark = pytest.mark.slow


def node(mid, parent, role, content, rating=None):
    extra = {"annotation": {"rating": rating}} if rating is not None else {}
    return {"id": mid, "parentId": parent, "childrenIds": [], "role": role, "content": content, **extra}


def rated_chat(i):
    nodes = [
        node("u", None, "user", f"What is {i} plus {i}?"),
        node("good", "u", "assistant", f"{i} plus {i} is {2 * i}.", rating=1),
        node("bad", "u", "assistant", f"I think it is {2 * i + 1}.", rating=-1),
    ]
    tree = {n["id"]: n for n in nodes}
    tree["u"]["childrenIds"] = ["good", "bad"]
    chat = {"id": f"c{i}", "title": "sums", "history": {"currentId": "good", "messages": tree}}
    return {"id": f"c{i}", "title": "sums", "chat": chat, "created_at": 1_740_000_000 + i}


def test_a_real_dpo_run_trains_an_adapter_on_the_rated_pairs(workdir, tiny_model, capsys):
    (workdir / "export.json").write_text(json.dumps([rated_chat(i) for i in range(4)]))
    (workdir / "r.yaml").write_text(
        f"name: dpo\nmodel: {{name_or_path: {tiny_model}, template: qwen3}}\nhardware: cpu\nstages: [data, train]\n"
        "data:\n  preferences: true\n  sources: [{type: open_webui, path: export.json}]\n"
        "train: {stage: dpo, max_steps: 2, logging_steps: 1, cutoff_len: 128, per_device_train_batch_size: 2,"
        " gradient_accumulation_steps: 1}\n"
    )
    assert main(["run", str(workdir / "r.yaml")]) == 0
    out, err = capsys.readouterr()
    assert "4 preference pairs" in out + err
    run = workdir / "llama_factory_data" / "runs" / "dpo"
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    logged = [json.loads(line) for line in (run / "adapter" / "trainer_log.jsonl").read_text().splitlines()]
    assert [r["current_steps"] for r in logged if "loss" in r] == [1, 2]
    history = json.loads((run / "adapter" / "trainer_state.json").read_text())["log_history"]
    assert any("rewards/chosen" in entry for entry in history)  # DPO's own metrics, not SFT's
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["train"]["status"] == "done" and manifest["stages"]["data"]["details"]["pairs"] == 4
    config = (run / "train.yaml").read_text()
    assert "stage: dpo" in config and "dataset: dpo_pref" in config
