"""The pipeline loop and the train stage around llamafactory-cli, with a fake CLI: failures leave a true
manifest and one line, a run folder is locked, a killed run leaves nothing running, and a diverged
training fails."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_support import recipe_text
from support import wait_for

from orchestrator.cli import main
from orchestrator.stages import data as data_stage


def manifest(workdir: Path, name: str = "t") -> dict:
    return json.loads((workdir / "llama_factory_data" / "runs" / name / "manifest.json").read_text())


def write_recipe(workdir: Path, text: str, file: str = "r.yaml") -> str:
    (workdir / file).write_text(text)
    return str(workdir / file)


def test_a_run_trains_with_its_datasets_cache_inside_the_run_folder(workdir, fake_cli, local_model, capsys):
    recipe = write_recipe(workdir, recipe_text(local_model))
    assert main(["run", recipe]) == 0
    run = workdir / "llama_factory_data" / "runs" / "t"
    cache = Path(fake_cli()["env"]["HF_DATASETS_CACHE"])
    assert cache.is_relative_to(run)  # the tokenized chats never go to ~/.cache
    assert not cache.exists()  # and are removed once the adapter is trained
    stages = manifest(workdir)["stages"]
    assert stages["train"]["status"] == "done" and stages["train"]["details"]["steps"] == 2
    assert "resolved_recipe" in manifest(workdir) and not (run / "recipe.yaml").exists()


def test_an_unexpected_exception_marks_the_stage_failed_with_one_line(workdir, local_model, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("columns")

    monkeypatch.setattr(data_stage, "export", broken)
    assert main(["run", write_recipe(workdir, recipe_text(local_model))]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert "data stage failed unexpectedly: KeyError: 'columns'" in lines[0]
    log = Path(lines[0].split("details in ")[1])
    assert "Traceback" in log.read_text() and log.parent.name == "logs"
    entry = manifest(workdir)["stages"]["data"]
    assert entry["status"] == "failed" and "KeyError" in entry["error"]


def test_a_missing_train_extra_names_the_install(workdir, local_model, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    assert main(["run", write_recipe(workdir, recipe_text(local_model))]) == 2
    err = capsys.readouterr().err
    assert "the train stage needs the Python package 'torch'" in err and "pip install -e '.[train]'" in err
    assert "Traceback" not in err
    assert not (workdir / "data" / "t.jsonl").exists()  # checked before the first stage ran


def test_a_stale_trainer_log_is_not_shown_as_progress(workdir, fake_cli, local_model, capsys, monkeypatch):
    adapter = workdir / "llama_factory_data" / "runs" / "t" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "trainer_log.jsonl").write_text(json.dumps({"current_steps": 777, "total_steps": 777}) + "\n")
    monkeypatch.setenv("FAKE_LF_DELAY", "1.5")
    assert main(["run", write_recipe(workdir, recipe_text(local_model))]) == 0
    err = capsys.readouterr().err
    assert "step 777/777" not in err and "step 2/2" in err


@pytest.mark.parametrize("mode", ["nan_loss", "nan_weights"])
def test_a_diverged_training_fails_the_stage(workdir, fake_cli, local_model, capsys, monkeypatch, mode):
    monkeypatch.setenv("FAKE_LF_MODE", mode)
    assert main(["run", write_recipe(workdir, recipe_text(local_model))]) == 1
    err = capsys.readouterr().err
    assert "training diverged" in err and "learning_rate" in err
    assert manifest(workdir)["stages"]["train"]["status"] == "failed"


def pids_with(marker: str) -> list[str]:
    return subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()


def test_kill_9_leaves_no_trainer_and_a_second_run_refuses_while_the_first_lives(workdir, fake_cli, local_model):
    marker = f"fake-trainer-{os.getpid()}"
    recipe = write_recipe(workdir, recipe_text(local_model))
    code = (
        "import sys; from orchestrator import llamafactory as lf; from orchestrator.cli import main; "
        f"lf.cli_path = lambda: {lf_path(workdir)!r}; sys.exit(main(['run', {recipe!r}]))"
    )
    env = dict(os.environ, FAKE_LF_MODE="sleep", FAKE_LF_MARKER=marker)
    first = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=workdir, stderr=subprocess.PIPE)
    log = workdir / "llama_factory_data" / "runs" / "t" / "logs" / "train.log"
    assert wait_for(lambda: log.is_file() and "trainer started" in log.read_text()), first.stderr
    second = subprocess.run([sys.executable, "-c", code], env=env, cwd=workdir, capture_output=True, text=True)
    assert second.returncode == 1 and f"is in use by pid {first.pid}" in second.stderr
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert wait_for(lambda: not pids_with(marker), timeout=20), pids_with(marker)


def lf_path(workdir: Path) -> str:
    from orchestrator import llamafactory

    return llamafactory.cli_path()  # the fake, installed by the fixture


def test_without_torch_a_run_says_which_extra_to_install(workdir, local_model):
    recipe = write_recipe(workdir, recipe_text(local_model).replace("hardware: cpu", "hardware: auto"))
    code = (
        "import sys; sys.modules['torch'] = None; from orchestrator.cli import main; "
        f"sys.exit(main(['run', {recipe!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "the train stage needs the Python package 'torch'" in done.stderr and ".[train]" in done.stderr


def hide_module(monkeypatch, hidden: str) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == hidden else real(name, *a))


def test_the_dry_run_warns_of_a_missing_package_and_the_run_refuses(workdir, local_model, capsys, monkeypatch):
    hide_module(monkeypatch, "bitsandbytes")
    assert main(["run", "qwen3-8b-qlora-cuda", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "warning: method: qlora needs the Python package 'bitsandbytes'" in err and ".[train]" in err
    recipe = recipe_text(local_model).replace("hardware: cpu", "hardware: cpu\nmethod: qlora")
    from orchestrator.context import open_run
    from orchestrator.hardware import Hardware
    from orchestrator.pipeline import run_pipeline

    ctx = open_run(write_recipe(workdir, recipe), hardware=Hardware("cuda", ["GPU"], [24.0], bf16=True))
    with pytest.raises(Exception, match="method: qlora needs the Python package 'bitsandbytes'"):
        run_pipeline(ctx)
    assert not (workdir / "data" / "t.jsonl").exists()  # refused before the first stage


def test_only_and_from_redo_stages_without_the_ones_before(workdir, fake_cli, local_model, capsys):
    recipe = write_recipe(workdir, recipe_text(local_model))
    assert main(["run", recipe]) == 0
    capsys.readouterr()
    assert main(["run", recipe]) == 0
    assert capsys.readouterr().err.count("skipped") == 2  # nothing changed: nothing redone
    assert main(["run", recipe, "--only", "train"]) == 0
    err = capsys.readouterr().err
    assert "train  started" in err and "data " not in err
    assert main(["run", recipe, "--from", "data"]) == 0
    err = capsys.readouterr().err
    assert "data   started" in err and "train  started" in err
    assert main(["run", recipe, "--only", "merge"]) == 2
    assert "--only merge" in capsys.readouterr().err
