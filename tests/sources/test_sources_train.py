"""Every kind of chat people already have, exported one dataset per source into one folder, then ONE real
``llamafactory-cli train`` of the tiny Qwen3 over all of them (``dataset: a,b,c``): the proof that what
each reader yields is something LLaMA-Factory loads, tokenizes and trains on.

The sources are built with the schemas of the reader tests: the Ollama app's db.sqlite (schema 18), an
Open WebUI export and a webui.db, sessions saved in ``ollama run`` (the emulator), a ChatGPT export.
"""

import json
import re

import pytest
from ollama_emulator import OllamaEmulator
from source_helpers import build_webui_db
from test_source_chatgpt_and_saved import conversation
from test_source_ollama_app import build_v18
from test_source_open_webui import export_item, msg, tree_chat

from orchestrator import llamafactory as lf
from orchestrator.cli import main
from orchestrator.hardware import Hardware
from orchestrator.recipe import validate_recipe
from orchestrator.stages.train import train

pytestmark = pytest.mark.slow

# dataset name -> how many conversations its source holds that can be trained on
EXPECTED = {"ollama_app": 2, "open_webui_export": 1, "open_webui_db": 1, "ollama_saved": 1, "chatgpt": 1}


def build_sources(tmp_path, ollama) -> dict[str, str]:
    """Each source in ``tmp_path`` (or on the emulator), as dataset name -> ``--source TYPE:PATH``."""
    build_v18(tmp_path / "db.sqlite").close()
    webui_export = tmp_path / "chat-export-1740000000000.json"
    webui_export.write_text(json.dumps([export_item(tree_chat(), "t1")]))
    whale = {
        "id": "w1",
        "title": "whales",
        "history": {
            "currentId": "a",
            "messages": {
                "q": msg("q", None, "user", "How long is a blue whale?", ["a"]),
                "a": msg("a", "q", "assistant", "Up to about 30 metres.", model="qwen3:4b"),
            },
        },
    }
    webui_db = build_webui_db(tmp_path / "webui.db", [("w1", json.dumps(whale), 1_740_000_000)])
    (tmp_path / "conversations.json").write_text(json.dumps([conversation()]))
    saved = ollama.add_model("greeting")
    saved.messages = [{"role": "user", "content": "Say hello to me."}, {"role": "assistant", "content": "Hello!"}]
    return {
        "ollama_app": f"ollama_app:{tmp_path / 'db.sqlite'}",
        "open_webui_export": f"open_webui:{webui_export}",
        "open_webui_db": f"open_webui:{webui_db}",
        "ollama_saved": f"ollama_saved:{ollama.url}",
        "chatgpt": f"chatgpt:{tmp_path / 'conversations.json'}",
    }


def train_config(tiny_model, data_dir, run_dir) -> dict:
    """The project's own train config for the tiny model on the CPU, over every dataset at once. One batch
    holds every example, so each of the 2 steps trains on all of them."""
    recipe = validate_recipe(
        {
            "name": "sources",
            "model": {"name_or_path": str(tiny_model), "template": "qwen3"},
            "hardware": "cpu",
            "data": {"sources": [{"type": "file", "path": "unused.jsonl"}]},
            "train": {
                "max_steps": 2,
                "logging_steps": 1,
                "cutoff_len": 256,
                "per_device_train_batch_size": sum(EXPECTED.values()),
                "gradient_accumulation_steps": 1,
            },
        }
    )
    config = lf.train_config(
        recipe, Hardware("cpu"), model_path=str(tiny_model), dataset_dir=data_dir, output_dir=run_dir / "adapter"
    )
    # LLaMA-Factory's own option: keep the tokenized training set, to read back what was trained on
    config.update(dataset=",".join(EXPECTED), tokenized_path=str(run_dir / "tokenized"))
    return config


def test_one_training_run_over_a_dataset_from_every_source(tmp_path, tiny_model, capsys):
    data_dir, run_dir = tmp_path / "data", tmp_path / "run"
    with OllamaEmulator() as ollama:
        for name, source in build_sources(tmp_path, ollama).items():
            assert main(["data", "export", "--name", name, "--dataset-dir", str(data_dir), "--source", source]) == 0
            report = re.search(rf"dataset {name}: (\d+) conversations? read, (\d+) written", capsys.readouterr().out)
            assert report and int(report[1]) >= int(report[2]) == EXPECTED[name], name
    exported = {name: (data_dir / f"{name}.jsonl").read_text().splitlines() for name in EXPECTED}
    assert {name: len(lines) for name, lines in exported.items()} == EXPECTED
    assert set(EXPECTED) <= set(json.loads((data_dir / "dataset_info.json").read_text()))

    config = train_config(tiny_model, data_dir, run_dir)
    env = lf.subprocess_env(str(tiny_model), Hardware("cpu"), run_dir / "cache")
    result = train(config, run_dir, env=env, float32_weights=True)

    assert len(result.losses) == 2 and result.examples_skipped == 0
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    log = result.log_path.read_text()
    for name in EXPECTED:
        assert f"Loading dataset {name}.jsonl..." in log
    total = sum(EXPECTED.values())
    assert f"Num examples = {total}" in log
    assert f"Total train batch size (w. parallel, distributed & accumulation) = {total}" in log
    # What LLaMA-Factory tokenized and trained on holds every exported conversation of every source.
    from datasets import load_from_disk
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    trained = [tokenizer.decode(row["input_ids"]) for row in load_from_disk(config["tokenized_path"])["train"]]
    assert len(trained) == total
    for name, lines in exported.items():
        for line in lines:
            first = json.loads(line)["conversations"][0]["value"]
            assert sum(first in text for text in trained) == 1, (name, first)
