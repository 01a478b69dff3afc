"""Run one command so that it, and everything it starts, dies with the orchestrator.

Started by ``orchestrator.procs`` as ``python _guard.py PARENT_PID GRACE_S -- COMMAND...`` in a process
group of its own, which the command joins. The guard ends the whole group when its parent is gone
(``kill -9`` included: it watches its parent pid, and the command gets ``PR_SET_PDEATHSIG`` on Linux in
case the guard itself is killed), when it is asked to stop (SIGTERM/SIGINT/SIGHUP: SIGTERM to the
group, SIGKILL after GRACE_S), and when the command exits (stragglers get SIGTERM). Standard library
only, and it imports nothing of the project, so it starts in milliseconds.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when the thread that started it ends (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the guard's own watch still stops the group when the orchestrator dies


def _end_group(grace: float, child: subprocess.Popen) -> int:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(0, signal.SIGKILL)  # the guard goes with the group
    return 137


def main(argv: list[str]) -> int:
    parent, grace, command = int(argv[1]), float(argv[2]), argv[4:]
    if os.getppid() != parent:
        return 1  # the orchestrator died before we got here
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    preexec = die_with_parent if sys.platform.startswith("linux") else None
    try:
        child = subprocess.Popen(command, preexec_fn=preexec)  # noqa: PLW1509 (single-threaded here)
    except OSError as exc:
        print(f"cannot start {command[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    while True:
        try:
            code = child.wait(timeout=0.25)
            break
        except subprocess.TimeoutExpired:
            pass
        if stop or os.getppid() != parent:
            return _end_group(grace, child)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)  # workers the command left behind
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
