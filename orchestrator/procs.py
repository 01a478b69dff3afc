"""The one way the project runs another program: an argument list (never a shell), its output to a log
file in the run folder, and a guard (``_guard.py``) so that the program and its children never outlive
the orchestrator, whether it returns, raises, is interrupted or is killed with ``kill -9``."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from orchestrator.errors import StageError
from orchestrator.fsutil import describe_os_error

log = logging.getLogger(__name__)
GUARD = Path(__file__).with_name("_guard.py")


def run_logged(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    poll: Callable[[], None] | None = None,
    poll_seconds: float = 1.0,
    grace_s: float = 10.0,
) -> int:
    """Run ``argv`` with stdout and stderr to ``log_path``; ``poll`` is called while it runs. Returns its
    exit code. Any exception here (Ctrl-C included) stops it: SIGTERM to its group, SIGKILL after
    ``grace_s``; SIGTERM, since a program started in the background may have SIGINT ignored."""
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = log_path.open("wb")
    except OSError as exc:
        raise StageError(describe_os_error(log_path, exc)) from exc
    guarded = [sys.executable, "-I", str(GUARD), str(os.getpid()), str(grace_s), "--", *argv]
    log.info("running %s (log: %s)", argv, log_path)
    with log_file:
        proc = subprocess.Popen(
            guarded,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        try:
            while proc.poll() is None:
                time.sleep(poll_seconds)
                if poll:
                    poll()
        except BaseException:
            stop(proc, grace_s)
            raise
    if poll:
        poll()
    return proc.returncode


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """End a guarded program and its whole process group: SIGTERM, then SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s + 2)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
