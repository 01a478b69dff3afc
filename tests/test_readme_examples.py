"""The README's Python examples, executed as they are written, in order, each in a fresh interpreter, in a
working folder like a user's (the sample data, a memory store of chats) with an emulated Ollama."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from ollama_emulator import OllamaEmulator, Reply
from support import REPO

from orchestrator.memory import MemoryStore
from orchestrator.sources.files import read_file

pytestmark = pytest.mark.slow
README = REPO / "README.md"


def python_examples() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_the_readme_has_python_examples_of_the_api_and_the_manager():
    examples = "\n".join(python_examples())
    for call in (
        "OllamaChat(",
        "orchestrator.run(",
        "FineTuningManager(",
        ".load_training_data_from_memory(",
        ".export_to_gguf(",
        ".register(",
        ".chat(",
    ):
        assert call in examples, call


def test_every_python_example_runs_as_written(workdir):
    with MemoryStore(workdir / "data" / "ollama_memory.db") as store:  # chats people had before
        for index, conversation in enumerate(read_file(workdir / "data" / "samples" / "conversations.jsonl")):
            store.add_messages(f"chat{index:02d}", conversation.messages, model="qwen3:4b")
    with OllamaEmulator() as ollama:
        ollama.add_model(
            "qwen3:4b", thinking=True, replies=[Reply("WAL: readers never block the writer.", thinking="hm")]
        )
        env = {**os.environ, "OLLAMA_HOST": ollama.url}
        for number, code in enumerate(python_examples(), start=1):
            done = subprocess.run(
                [sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True, timeout=900
            )
            assert done.returncode == 0, f"README example {number} failed:\n{code}\n{done.stderr[-3000:]}"
        assert any(name.startswith("quickstart-qwen3-tiny") for name in ollama.models)  # the manager registered it
    run = workdir / "llama_factory_data" / "runs" / "quickstart"
    assert (run / "report.html").is_file() and list((run / "gguf").glob("*.gguf"))
