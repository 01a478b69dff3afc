"""Real `orchestrator run`s of the quickstart through llamafactory-cli train and export, the built-in GGUF
converter, and registration with an emulated Ollama."""

import json
import socket
from pathlib import Path

import pytest
from gguf import GGUFReader
from ollama_emulator import OllamaEmulator
from safetensors import safe_open

from orchestrator.cli import main
from orchestrator.recipe import SHIPPED_DIR

pytestmark = pytest.mark.slow
QUICKSTART = (SHIPPED_DIR / "quickstart.yaml").read_text()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def with_register(host: str) -> str:
    text = QUICKSTART.replace(
        "stages: [data, train, merge, eval, gguf]", "stages: [data, train, merge, eval, gguf, register]"
    )
    return text.replace("  name: quickstart-qwen3-tiny", f"  name: quickstart-qwen3-tiny\n  host: {host}")


def check_training(run: Path) -> None:
    adapter = run / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    shards = sorted((run / "merged").glob("*.safetensors"))
    assert shards and (run / "merged" / "config.json").is_file() and (run / "merged" / "tokenizer.json").is_file()
    with safe_open(str(shards[0]), "pt") as f:
        assert "model.layers.0.self_attn.q_proj.weight" in f.keys()
        assert not any("lora" in key for key in f.keys())
    records = [json.loads(line) for line in (adapter / "trainer_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 18  # 36 conversations (4 held out) in batches of 4, 2 epochs
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.03, losses


def test_quickstart_then_register_after_ollama_comes_up(workdir, capsys):
    # 1. The README's quickstart: data -> train -> merge -> eval -> gguf, no Ollama needed.
    assert main(["run", "quickstart"]) == 0
    out, err = capsys.readouterr()
    assert "training:     18 logged steps, loss " in out and f"adapter:      {workdir}" in out
    assert "loss plot:" in out and "training_loss.png" in out
    assert "loading the model weights" in err and "training started" in err  # said before the first step
    assert "weights are loaded in float32" in err
    run = workdir / "llama_factory_data" / "runs" / "quickstart"
    assert "step 18/18" in err and "merge  done" in err and "eval   done" in err and "gguf   done" in err
    assert "Traceback" not in err  # LLaMA-Factory's raw output went to the log, not the terminal
    check_training(run)
    manifest = json.loads((run / "manifest.json").read_text())
    stages = manifest["stages"]
    assert [stages[s]["status"] for s in ("data", "train", "merge", "eval", "gguf")] == ["done"] * 5
    assert stages["data"]["details"]["written"] == 40 and stages["train"]["details"]["steps"] == 18
    evaluated = json.loads((run / "eval" / "results.json").read_text())
    assert evaluated["conversations"] == 4 and len(evaluated["answers"]) == 4
    assert evaluated["tuned"]["eval_loss"] < evaluated["base"]["eval_loss"]  # it learned, on chats it never saw
    gguf_file = Path(stages["gguf"]["outputs"]["gguf"])
    reader = GGUFReader(gguf_file)
    template = reader.fields["tokenizer.chat_template"]
    assert "<think>" in bytes(template.parts[template.data[0]]).decode()
    assert (run / "train.yaml").is_file() and (run / "export.yaml").is_file()
    assert manifest["resolved_recipe"]["gguf"]["type"] == "q8_0"

    # 2. The same recipe plus register, while Ollama is down: earlier stages are not redone, and the
    #    stage ends with the command to run later.
    recipe = workdir / "quickstart-serve.yaml"
    recipe.write_text(with_register(closed_port_url()))
    assert main(["run", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert err.count("skipped") == 5 and "step 1/" not in err
    assert f"ollama create quickstart-qwen3-tiny -f {run / 'Modelfile'}" in err
    assert (run / "Modelfile").is_file()

    # 3. Ollama is up: only register runs; the model is created from the uploaded GGUF and checked.
    with OllamaEmulator() as ollama:
        recipe.write_text(with_register(ollama.url))
        assert main(["run", str(recipe)]) == 0
        err = capsys.readouterr().err
        assert err.count("skipped") == 5 and "register done" in err
        assert "quickstart-qwen3-tiny:latest" in ollama.models
        served = json.loads((run / "eval" / "served.json").read_text())
        assert served["error"] is None and len(served["answers"]) == 4  # the served model was asked too
        shown = json.loads((run / "manifest.json").read_text())["stages"]["register"]
        assert shown["status"] == "done"
        # A rerun with nothing changed redoes nothing at all.
        assert main(["run", str(recipe)]) == 0
        assert capsys.readouterr().err.count("skipped") == 6
        # The model was deleted in Ollama: the register stage is not current any more, and only it runs.
        del ollama.models["quickstart-qwen3-tiny:latest"]
        assert main(["run", str(recipe)]) == 0
        err = capsys.readouterr().err
        assert "no longer in Ollama" in err and err.count("skipped") == 5 and "register done" in err
        assert "quickstart-qwen3-tiny:latest" in ollama.models


def test_failed_llamafactory_run_shows_its_error_and_log(workdir, capsys):
    recipe = workdir / "broken.yaml"
    recipe.write_text(
        QUICKSTART.replace("name: quickstart\n", "name: broken\n") + "llamafactory: {not_a_llamafactory_key: 1}\n"
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
