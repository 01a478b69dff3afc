"""The Python API: ``import orchestrator`` stays light, every public name resolves, ``orchestrator.run``
runs a recipe, and ``FineTuningManager`` takes a memory store through the real chain to a model that
answers in (an emulated) Ollama."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from gguf import GGUFReader
from ollama_emulator import OllamaEmulator, Reply
from stages.pipeline_support import recipe_text

import orchestrator
from orchestrator.errors import UsageError
from orchestrator.memory import MemoryStore
from orchestrator.sources.files import read_file

HEAVY = ("torch", "transformers", "llamafactory", "matplotlib", "pydantic", "numpy", "detect_secrets")


def test_importing_the_package_loads_nothing_heavy():
    code = f"import sys, orchestrator; print([m for m in sys.modules if m.split('.')[0] in {HEAVY!r}])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_every_public_name_resolves_to_what_it_names():
    for name in orchestrator.__all__:
        assert getattr(orchestrator, name) is not None, name
    from orchestrator.ollama.register import register_model
    from orchestrator.stages.gguf import convert_to_gguf

    assert orchestrator.convert is convert_to_gguf and orchestrator.register is register_model
    assert callable(orchestrator.run) and callable(orchestrator.evaluate) and callable(orchestrator.report)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = orchestrator.nothing


def sample_store(path) -> list[str]:
    """A memory store holding the sample conversations, one session each; their ids."""
    ids = []
    with MemoryStore(path) as store:
        for index, conversation in enumerate(read_file("data/samples/conversations.jsonl")):
            session = store.create_session(f"s{index:02d}", model="qwen3:4b")
            store.add_messages(session, conversation.messages, model="qwen3:4b")
            ids.append(session)
    return ids


@pytest.mark.slow
def test_the_manager_takes_chosen_sessions_to_a_model_that_answers_in_ollama(workdir, tiny_model):
    sessions = sample_store(workdir / "chats.db")
    recipe = workdir / "manager.yaml"
    recipe.write_text(recipe_text(tiny_model, name="managed", stages="[data, train, merge, gguf, register]"))
    with OllamaEmulator() as ollama:
        ollama.default_replies = [Reply("tuned hello")]
        manager = orchestrator.FineTuningManager(recipe, db=workdir / "chats.db", host=ollama.url)

        report = manager.load_training_data_from_memory(session_ids=sessions[:12])
        assert report["read"] == 12 and report["written"] == 12
        dataset = workdir / "data" / "managed.jsonl"
        assert len(dataset.read_text().splitlines()) == 12

        trained = manager.train()
        assert trained["steps"] == 2 and trained["last_loss"] > 0

        gguf = manager.export_to_gguf("f16")
        assert gguf.suffix == ".gguf" and "f16" in gguf.name
        assert GGUFReader(gguf).fields["general.architecture"].contents() == "qwen3"  # a real GGUF

        assert manager.register("managed-tuned") == "managed-tuned"
        assert "managed-tuned:latest" in ollama.models

        reply = manager.chat("Hello there", session_id="after")
        assert reply.content == "tuned hello"
        asked = ollama.chat_requests()[-1]
        assert asked["model"] == "managed-tuned" and asked["messages"][-1]["content"] == "Hello there"
    with MemoryStore(workdir / "chats.db") as store:  # the chat with the tuned model was recorded
        assert [m.content for m in store.messages("after")] == ["Hello there", "tuned hello"]

    manifest = json.loads((manager.run_dir / "manifest.json").read_text())
    assert [manifest["stages"][s]["status"] for s in ("data", "train", "merge", "gguf", "register")] == ["done"] * 5
    # a step again with nothing changed is skipped, as in `orchestrator run`
    assert manager.train() == trained


def test_the_manager_names_a_bad_setting_in_one_line(workdir, tiny_model):
    recipe = workdir / "manager.yaml"
    recipe.write_text(recipe_text(tiny_model))
    manager = orchestrator.FineTuningManager(recipe, db=workdir / "none.db")
    with pytest.raises(UsageError, match=r"^gguf\.type: "):
        manager.export_to_gguf("q3_nonsense")


@pytest.mark.slow
def test_run_runs_a_recipe_until_a_stage_and_says_where_its_outputs_are(workdir, tiny_model):
    recipe = workdir / "api.yaml"
    recipe.write_text(recipe_text(tiny_model, name="api", stages="[data, train, merge, gguf]"))
    outcome = orchestrator.run(recipe, until="train")
    assert set(outcome.stages) == {"data", "train"} and outcome.stages["train"]["status"] == "done"
    assert outcome.output("data", "dataset").is_file() and outcome.output("gguf", "gguf") is None
    adapter = outcome.run_dir / "adapter" / "adapter_model.safetensors"
    written = adapter.stat().st_mtime_ns
    again = orchestrator.run(recipe, until="train")
    assert again.stages["train"]["started"] == outcome.stages["train"]["started"]  # skipped, not redone
    assert adapter.stat().st_mtime_ns == written


def test_run_and_report_stay_functions_whatever_was_imported_before():
    code = (
        "import orchestrator.context, orchestrator.run_report, orchestrator.pipeline\n"
        "from orchestrator import report, run\n"
        "import orchestrator\n"
        "print(callable(run), callable(report), callable(orchestrator.run), callable(orchestrator.report))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True"] * 4
