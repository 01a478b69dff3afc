"""A batch on Ray: each queued run is a Ray task that asks for its GPUs as Ray resources and runs the
same child process as a local batch (``python -m orchestrator run <resolved recipe>``), on a running
cluster or on a local head started for the batch alone (``ray start --block`` under the project's guard).
Run folders are written where the recipes say (shared storage on a cluster); every node needs this
package installed. The task writes ``logs/placement.json`` in its run folder (node and GPUs), which the
live view reads. Whatever ends the batch, its tasks are cancelled (their guarded children end with them)
and the local head stops with its whole process group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from orchestrator.batch import BatchRun, child_env, finish, prepare, size_runs
from orchestrator.errors import StageError, UsageError
from orchestrator.fsutil import read_json, write_json

log = logging.getLogger(__name__)
PLACEMENT = "placement.json"
CONNECT_TIMEOUT_S = 3.0
START_TIMEOUT_S = 90.0


def check_address(address: str, batch_path: Path) -> None:
    """A cluster address (``host:port`` of its GCS, or ``ray://host:port`` of a Ray client server) must
    answer a TCP connect within a few seconds; ``auto`` is left to Ray."""
    if address == "auto":
        return
    parts = urlsplit(address if "://" in address else f"ray-gcs://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise UsageError(f"{batch_path}: --ray {address}: give the cluster's address as HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise UsageError(
            f"{batch_path}: --ray {address}: no Ray cluster answers there ({exc.strerror or exc}); start it "
            "(ray start --head) or check the address; without an address a local cluster is started"
        ) from None


def _task(argv: list[str], log_path: str, placement: str, token: float) -> dict[str, Any]:
    """Runs on a Ray worker: the run's child process, with the GPUs Ray gave this task visible."""
    import ray

    from orchestrator.procs import run_logged

    gpu_ids = [str(i) for i in ray.get_gpu_ids()]
    node = ray.util.get_node_ip_address()
    started = time.time()
    write_json(placement, {"token": token, "node": node, "gpus": gpu_ids, "pid": os.getpid()})
    rc = run_logged(argv, Path(log_path), env=child_env(gpu_ids), poll_seconds=0.5)
    return {"rc": rc, "node": node, "gpus": gpu_ids, "started": started, "finished": time.time()}


def run_on_ray(
    runs: list[BatchRun], address: str | None, limit: int | None, batch_path: Path, folder: Path, on_update: Any
) -> None:
    """Join the cluster at ``address`` or start a local one, check every run fits it, then run the queued
    ones as Ray tasks, at most ``limit`` at once (default: as many as the cluster's resources take)."""
    if address:
        check_address(address, batch_path)
    else:
        local_token()
    import ray

    with contextlib.ExitStack() as stack:
        where = f"the Ray cluster at {address}"
        if not address:
            address, where = stack.enter_context(local_cluster(folder / "logs" / "ray.log")), "the local Ray cluster"
        handler = signal.getsignal(signal.SIGTERM)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            hint = "; with token authentication on, RAY_AUTH_MODE=token must be set before Ray is imported"
            raise UsageError(f"{batch_path}: --ray: {where} did not answer: {str(exc).splitlines()[0]}{hint}") from None
        stack.callback(ray.shutdown)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)  # ray.init put its own in (an exit, its stack printed): keep ours
        size_runs(runs, int(ray.cluster_resources().get("GPU", 0)), batch_path, where)
        prepare(runs, folder)
        _run_tasks(ray, runs, limit, on_update)


def local_token() -> None:
    """Token authentication for the local head, its workers and this driver. The head keeps Ray's token
    authentication on, and a driver uses it only when RAY_AUTH_MODE says so (read once, when Ray is first
    imported). Where no token is given (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), one is
    made for this process, in its environment only (the head and its workers inherit it): nothing is
    written to disk, and every local head this process starts shares it, as Ray's loader keeps the first."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    given = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not given and not (Path.home() / ".ray" / "auth_token").is_file():
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


@contextlib.contextmanager
def local_cluster(log_path: Path) -> Iterator[str]:
    """A Ray head for this batch alone, ``ray start --block`` run under the project's guard, so it and every
    process it starts end with the batch, whatever ends it (``kill -9`` included). Its own temp folder keeps
    it out of /tmp/ray, where another ``ray.init()`` would find it. Yields its address."""
    from orchestrator.procs import run_logged

    with socket.socket() as sock:  # a free port for its GCS
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    temp = Path(tempfile.mkdtemp(prefix="ray-"))  # short: Ray's socket paths must fit 107 bytes
    argv = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}"]
    argv += [f"--num-cpus={os.cpu_count() or 1}", "--include-dashboard=false", "--disable-usage-stats"]
    argv += [f"--temp-dir={temp}", "--node-ip-address=127.0.0.1"]
    stop, ended = threading.Event(), threading.Event()

    def poll() -> None:
        if stop.is_set():
            raise _Stop

    def head() -> None:
        with contextlib.suppress(_Stop):
            run_logged(argv, log_path, poll=poll, poll_seconds=0.2, grace_s=5.0)
        ended.set()

    thread = threading.Thread(target=head, name="ray-head", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers("127.0.0.1", port):
            if ended.is_set() or time.monotonic() > deadline:
                raise StageError(f"the local Ray cluster did not start; its output is in {log_path}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


class _Stop(Exception):
    """Ends the local head's run_logged (which then stops its whole process group)."""


def _answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _run_tasks(ray: Any, runs: list[BatchRun], limit: int | None, on_update: Any) -> None:
    task = ray.remote(_task)
    pending = [r for r in runs if r.status == "queued"]
    limit = limit or len(pending) or 1
    active: dict[Any, tuple[BatchRun, float]] = {}
    try:
        while pending or active:
            while pending and len(active) < limit:
                run, token = pending.pop(0), time.time()
                run.status, run.where = "queued on Ray", "Ray"
                placement = run.run_dir / "logs" / PLACEMENT
                placement.unlink(missing_ok=True)
                options = {"num_gpus": run.gpus, "num_cpus": 1, "max_retries": 0, "name": f"orchestrator-{run.name}"}
                ref = task.options(**options).remote(run.argv, str(run.log_path), str(placement), token)
                active[ref] = (run, token)
            ready, _ = ray.wait(list(active), num_returns=1, timeout=1.0)
            for ref in ready:
                run, _token = active.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 (a dead worker or node fails this run, not the batch)
                    finish(run, exc)
                    continue
                finish(run, outcome["rc"])
                run.where = _where(outcome["node"], outcome["gpus"])
                run.started, run.finished = outcome["started"], outcome["finished"]
            for run, token in active.values():
                _placed(run, token)
            on_update(runs)
    except BaseException:
        for ref, (run, _) in active.items():
            ray.cancel(ref, force=True)
            run.status, run.error = "interrupted", "the batch was interrupted"
        for run in pending:
            run.status, run.error = "interrupted", "the batch was interrupted"
        raise


def _placed(run: BatchRun, token: float) -> None:
    """A task that has started says where, in its run folder."""
    found = read_json(run.run_dir / "logs" / PLACEMENT)
    if isinstance(found, dict) and found.get("token") == token:
        run.status, run.where = "running", _where(found.get("node"), found.get("gpus") or [])


def _where(node: Any, gpus: list[str]) -> str:
    return f"{node} GPU {','.join(gpus)}" if gpus else f"{node} CPU"
