import json
import sys
from pathlib import Path

import pytest

from orchestrator import llamafactory

FAKE_CLI = Path(__file__).with_name("fake_llamafactory_cli.py")


@pytest.fixture
def fake_cli(tmp_path, monkeypatch):
    """``llamafactory-cli`` replaced by the fake; returns a function giving what the fake last saw."""
    wrapper = tmp_path / "llamafactory-cli"
    wrapper.write_text(
        f"#!{sys.executable}\nimport runpy, sys\nrunpy.run_path({str(FAKE_CLI)!r}, run_name='__main__')\n"
    )
    wrapper.chmod(0o755)
    seen = tmp_path / "fake-seen.json"
    monkeypatch.setattr(llamafactory, "cli_path", lambda: str(wrapper))
    monkeypatch.setenv("FAKE_LF_SEEN", str(seen))
    return lambda: json.loads(seen.read_text())


@pytest.fixture
def local_model(tmp_path) -> Path:
    """A model folder that only has to exist (the fake CLI never loads it)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["Qwen3ForCausalLM"]}))
    return model
