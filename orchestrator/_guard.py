"""Run one command so that it, and everything it starts, dies with the orchestrator.

Started by ``orchestrator.procs`` as ``python _guard.py PARENT_PID GRACE_S -- COMMAND...`` in a process
group of its own, which the command joins. The guard ends the whole group when its parent is gone
(``kill -9`` included: it watches its parent pid, and the command gets ``PR_SET_PDEATHSIG`` on Linux in
case the guard itself is killed), when it is asked to stop (SIGTERM/SIGINT/SIGHUP: SIGTERM to the
group, SIGKILL after GRACE_S), and when the command exits (stragglers get SIGTERM). A descendant that
left the group (torchrun starts its workers in sessions of their own) is signalled too: on Linux the guard
is a child subreaper, so such a process stays its descendant even when its own parent dies first. Standard
library only, and it imports nothing of the project, so it starts in milliseconds.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when the thread that started it ends (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the guard's own watch still stops the group when the orchestrator dies


def become_subreaper() -> None:
    """Orphaned descendants are re-parented to this process instead of init (Linux 3.4+)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
    except (OSError, AttributeError):
        pass


def descendants() -> list[int]:
    """Every process below this one, from /proc (empty where there is none)."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [os.getpid()]
    while todo:
        for pid in children.get(todo.pop(), ()):
            found.append(pid)
            todo.append(pid)
    return found


def _signal_all(sig: signal.Signals) -> None:
    """The guard's group, and the descendants that left it."""
    for pid in descendants():
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    os.killpg(0, sig)


def _reap() -> None:
    """Collect re-parented descendants that have exited (a subreaper must, or they stay zombies)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _end_group(grace: float, child: subprocess.Popen) -> int:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    _signal_all(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while (child.poll() is None or descendants()) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.05)
    _signal_all(signal.SIGKILL)  # the guard goes with the group
    return 137


def main(argv: list[str]) -> int:
    parent, grace, command = int(argv[1]), float(argv[2]), argv[4:]
    if os.getppid() != parent:
        return 1  # the orchestrator died before we got here
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    linux = sys.platform.startswith("linux")
    if linux:
        become_subreaper()
    preexec = die_with_parent if linux else None
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
    _signal_all(signal.SIGTERM)  # workers the command left behind
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
