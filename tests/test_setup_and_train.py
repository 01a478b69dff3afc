"""setup_and_train.py: the one-command install + run (the Colab notebook is tests/test_colab.py's)."""

import importlib.util
import sys

import pytest
from support import REPO

from orchestrator.cli import main as cli_main


@pytest.fixture
def sat():
    spec = importlib.util.spec_from_file_location("setup_and_train", REPO / "setup_and_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def plan(sat, *argv):
    parser_args = sat.argparse.Namespace(
        recipe=None, venv=str(REPO / ".venv-test"), skip_install=False, dry_run=False, force=False, until=None
    )
    for key, value in zip(argv[::2], argv[1::2], strict=True):
        setattr(parser_args, key, value)
    return sat.plan(parser_args)


def test_outside_a_venv_it_makes_one_and_installs_the_pinned_set(sat, monkeypatch):
    monkeypatch.setattr(sat, "in_virtualenv", lambda: False)
    monkeypatch.setattr(sat, "on_colab", lambda: False)
    steps = plan(sat, "recipe", "qwen3-4b-lora-cuda", "until", "gguf")
    venv_python = str(REPO / ".venv-test" / "bin" / "python")
    assert steps[0] == [sys.executable, "-m", "venv", str(REPO / ".venv-test")]
    assert steps[2] == [venv_python, "-m", "pip", "install", "-e", f"{REPO}[train]"]
    assert steps[-1] == [venv_python, "-m", "orchestrator", "run", "qwen3-4b-lora-cuda", "--until", "gguf"]


def test_a_python_with_its_own_torch_set_keeps_it(sat, monkeypatch):
    monkeypatch.setattr(sat, "on_colab", lambda: True)
    steps = plan(sat)  # this test's interpreter imports torch, torchaudio and torchvision together
    assert steps[1] == [sys.executable, "-m", "pip", "install", "-e", f"{REPO}[train-own-torch]"]
    monkeypatch.setattr(sat, "has_torch_set", lambda python: False)
    assert plan(sat)[1][-1] == f"{REPO}[train]"


def test_it_runs_the_recipe_for_real(sat, capsys):
    assert sat.main(["--skip-install", "--dry-run", "quickstart"]) == 0
    out = capsys.readouterr().out
    assert f"+ {sys.executable} -m orchestrator run quickstart --dry-run" in out
    assert sat.main(["--skip-install", "no-such-recipe", "--dry-run"]) == 2
    assert "step failed (exit 2)" in capsys.readouterr().err


def test_the_train_own_torch_extra_is_train_without_the_torch_pins():
    setup = (REPO / "setup.py").read_text()
    assert '"train-own-torch": [req for req in TRAIN if not req.startswith("torch")]' in setup
    assert '"torch==2.11.0"' in setup and '"torchaudio==2.11.0"' in setup


def test_until_cuts_the_stages_and_a_gpu_recipe_dry_runs_on_this_cpu(workdir, capsys):
    assert cli_main(["run", "qwen3-4b-lora-cuda", "--until", "train", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "train.yaml" in out and "export.yaml" not in out and "bf16: true" in out
    assert cli_main(["run", "qwen3-4b-lora-cuda", "--until", "train"]) == 2  # a real run needs the GPU
    assert "hardware: cuda was asked for" in capsys.readouterr().err
