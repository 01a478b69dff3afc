"""One real `orchestrator run` of the quickstart through llamafactory-cli train and export."""

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from orchestrator.cli import main
from orchestrator.recipe import SHIPPED_DIR

pytestmark = pytest.mark.slow


def test_quickstart_trains_and_merges_then_resumes(workdir, capsys):
    assert main(["run", "quickstart"]) == 0
    out = capsys.readouterr()
    run = workdir / "llama_factory_data" / "runs" / "quickstart"
    assert "step 20/20" in out.err and "merge  done" in out.err

    adapter = run / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    shards = sorted((run / "merged").glob("*.safetensors"))
    assert shards and (run / "merged" / "config.json").is_file() and (run / "merged" / "tokenizer.json").is_file()
    with safe_open(str(shards[0]), "pt") as f:
        assert "model.layers.0.self_attn.q_proj.weight" in f.keys()
        assert not any("lora" in key for key in f.keys())

    records = [json.loads(line) for line in (adapter / "trainer_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 20
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.03, losses

    manifest = json.loads((run / "manifest.json").read_text())
    stages = manifest["stages"]
    assert [stages[s]["status"] for s in ("data", "train", "merge")] == ["done"] * 3
    assert stages["data"]["details"]["written"] == 40
    assert stages["train"]["details"]["steps"] == 20 and stages["train"]["duration_s"] > 0
    assert (run / "train.yaml").is_file() and (run / "export.yaml").is_file() and (run / "recipe.yaml").is_file()
    assert "Traceback" not in out.err  # LLaMA-Factory's raw output went to the log, not the terminal
    assert (run / "logs" / "train.log").stat().st_size > 0

    # A rerun with nothing changed redoes nothing.
    assert main(["run", "quickstart"]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped") == 3 and "step 1/" not in err


def test_failed_llamafactory_run_shows_its_error_and_log(workdir, capsys):
    recipe = workdir / "broken.yaml"
    recipe.write_text(
        (SHIPPED_DIR / "quickstart.yaml").read_text().replace("name: quickstart", "name: broken")
        + "llamafactory: {not_a_llamafactory_key: 1}\n"
    )
    assert main(["run", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert "llamafactory-cli train failed" in err
    assert "not_a_llamafactory_key" in err
    log = Path(err.split("full log: ")[1].split()[0])
    assert log.is_file() and log.name == "train.log"
    manifest = json.loads((workdir / "llama_factory_data/runs/broken/manifest.json").read_text())
    assert manifest["stages"]["train"]["status"] == "failed"
    assert manifest["stages"]["data"]["status"] == "done"
