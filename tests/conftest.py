import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ollama_emulator.py, tests/support.py

from support import REPO, SAMPLES  # noqa: E402,F401


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs the real llamafactory-cli (seconds to a minute)")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny random Qwen3 with the real tokenizer, built once per test session."""
    from orchestrator.tiny import build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("models") / "tiny-qwen3")


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A project-like working directory (data/samples copied in) that the test runs inside."""
    (tmp_path / "data" / "samples").mkdir(parents=True)
    shutil.copy(SAMPLES, tmp_path / "data" / "samples" / SAMPLES.name)
    monkeypatch.chdir(tmp_path)
    return tmp_path
