"""`orchestrator batch --ray`: runs as Ray tasks on a real local Ray cluster (Ray from PyPI, the test
extra), with the same summary as a local batch; no Ray process is left behind, even when the batch is
killed; an address where no cluster answers is one line before anything starts."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from stages.pipeline_support import recipe_text
from support import wait_for

from orchestrator.cli import main


def ray_processes() -> set[int]:
    """Pids of Ray's own processes: its daemons started from this environment (raylet, gcs_server, the
    head's `ray start`) and its agents and workers (named ray::...)."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        daemon = any(
            name in cmdline for name in (b"/raylet/raylet ", b"/gcs/gcs_server ", b"ray.scripts.scripts start")
        )
        if entry.name.isdigit() and (cmdline.startswith(b"ray::") or (daemon and sys.prefix.encode() in cmdline)):
            found.add(int(entry.name))
    return found


@pytest.fixture
def no_ray_left():
    before = ray_processes()
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()
    assert wait_for(lambda: not ray_processes() - before, timeout=30), "Ray processes were left behind"


@pytest.fixture(autouse=True)
def no_ray_token(tmp_path, monkeypatch):
    """A machine where Ray never made a token (no ~/.ray/auth_token, none in the environment): the local
    head still starts, and no token is written to disk."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    yield
    assert not (home / ".ray").exists()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_ray_address_that_does_not_answer_is_one_line_before_anything_starts(workdir, capsys):
    (workdir / "b.yaml").write_text("recipes: [quickstart]\n")
    port = closed_port()
    assert main(["batch", "b.yaml", "--ray", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: b.yaml: --ray 127.0.0.1:{port}: no Ray cluster answers there (Connection refused); start it "
        "(ray start --head) or check the address; without an address a local cluster is started\n"
    )
    assert not (workdir / "llama_factory_data").exists()


@pytest.mark.slow
def test_two_tiny_runs_train_as_ray_tasks_on_a_local_cluster(workdir, tiny_model, capsys, no_ray_left):
    for name in ("ray1", "ray2"):
        (workdir / f"{name}.yaml").write_text(
            recipe_text(tiny_model, name=name).replace("max_steps: 2", "max_steps: 1, cutoff_len: 64")
        )
    (workdir / "b.yaml").write_text("recipes: [ray1.yaml, ray2.yaml]\n")
    assert main(["batch", "b.yaml", "--ray"]) == 0
    out, err = capsys.readouterr()
    batch = json.loads((workdir / "llama_factory_data" / "batches" / "b" / "batch.json").read_text())
    rows = batch["runs"]
    assert [r["status"] for r in rows] == ["done", "done"]
    assert all(r["where"].endswith(" CPU") for r in rows) and all(r["train_loss"] is not None for r in rows)
    for row in rows:
        run = Path(row["run_dir"])
        assert run == workdir / "llama_factory_data" / "runs" / row["run"]  # where the recipe says
        assert (run / "adapter" / "adapter_model.safetensors").is_file()
        assert json.loads((run / "logs" / "placement.json").read_text())["gpus"] == []
        assert f"{row['run']}  {row['where']}  done" in err
    assert "ray1" in out and "summary:" in out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_ray_batch_leaves_no_ray_process_and_no_run_behind(workdir, no_ray_left, sig):
    (workdir / "slow.yaml").write_text(
        "name: slow\nmodel: {name_or_path: tiny-qwen3, template: qwen3}\nstages: [data]\n"
        "data:\n  sources: [{type: file, path: data/samples/conversations.jsonl}]\n"
    )
    (workdir / "b.yaml").write_text("recipes: [slow.yaml]\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "batch", "b.yaml", "--ray"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    placement = workdir / "llama_factory_data" / "runs" / "slow" / "logs" / "placement.json"
    try:
        assert wait_for(placement.is_file, timeout=120), "the Ray task did not start"
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=60) == (130 if sig == signal.SIGTERM else -9)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    worker = json.loads(placement.read_text())["pid"]  # the Ray worker that ran the run, and its guarded child
    assert wait_for(lambda: not Path(f"/proc/{worker}").exists(), timeout=30)
    assert wait_for(lambda: not any(b"orchestrator run" in cmd for cmd in run_cmdlines(workdir)), timeout=30)
    ray_log = (workdir / "llama_factory_data" / "batches" / "b" / "logs" / "ray.log").read_text()
    temp = Path(re.search(r"saved to: (/tmp/ray-[^/]+)/", ray_log).group(1))
    if sig == signal.SIGTERM:
        assert b"interrupted" in proc.stderr.read() and not temp.exists()
        batch = json.loads((workdir / "llama_factory_data" / "batches" / "b" / "batch.json").read_text())
        assert batch["runs"][0]["status"] in ("interrupted", "done")  # done when it won the race
    shutil.rmtree(temp, ignore_errors=True)  # what a kill -9 leaves: the head's temp folder


def run_cmdlines(workdir: Path) -> list[bytes]:
    """Command lines of the processes running a recipe of this test's batch folder."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if str(workdir).encode() in cmdline:
            found.append(cmdline)
    return found
