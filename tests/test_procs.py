"""The guarded subprocess runner: a program started by the orchestrator never outlives it."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support import wait_for

from orchestrator import procs

# A program that starts a grandchild, says so, and sleeps; both carry a marker in their command line.
SPAWNER = textwrap.dedent(
    """
    import subprocess, sys, time
    marker = sys.argv[1]
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", marker])
    print("started", flush=True)
    time.sleep(120)
    """
)


# Like torchrun: the workers in a session of their own (out of the guard's process group), and the launcher
# deaf to SIGTERM, so that only SIGKILL after the grace period ends it.
SESSION_SPAWNER = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    marker = sys.argv[1]
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", marker], start_new_session=True)
    print("started", flush=True)
    time.sleep(120)
    """
)


def alive_with(marker: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in out if int(pid) != os.getpid()]


def start_orchestrator_like(tmp_path: Path, marker: str, spawner: str = SPAWNER) -> tuple[subprocess.Popen, Path]:
    """A Python process that runs the spawner through procs.run_logged, as a stage does."""
    log = tmp_path / "child.log"
    script = tmp_path / "spawner.py"
    script.write_text(spawner)
    code = (
        "import sys; from pathlib import Path; from orchestrator import procs; "
        f"procs.run_logged([sys.executable, {str(script)!r}, {marker!r}], Path({str(log)!r}), poll_seconds=0.1, "
        "grace_s=1.0)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code])
    assert wait_for(lambda: log.is_file() and "started" in log.read_text()), "the program did not start"
    assert wait_for(lambda: len(alive_with(marker)) >= 2)  # the program and its grandchild
    return parent, log


def test_kill_9_of_the_orchestrator_ends_the_program_and_its_children(tmp_path):
    marker = f"marker-{os.getpid()}-kill9"
    parent, _ = start_orchestrator_like(tmp_path, marker)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    assert wait_for(lambda: not alive_with(marker), timeout=15), f"left running: {alive_with(marker)}"


def test_kill_9_also_ends_workers_in_a_session_of_their_own_under_a_launcher_deaf_to_sigterm(tmp_path):
    marker = f"marker-{os.getpid()}-session"
    parent, _ = start_orchestrator_like(tmp_path, marker, SESSION_SPAWNER)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    assert wait_for(lambda: not alive_with(marker), timeout=15), f"left running: {alive_with(marker)}"


def test_an_exception_in_the_caller_stops_the_program_even_with_sigint_ignored(tmp_path):
    # As under nohup or `&`: SIGINT is ignored by the program, so stopping must not rely on it.
    script = tmp_path / "deaf.py"
    script.write_text(
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', sys.argv[1]])\n"
        "time.sleep(120)\n"
    )
    marker = f"marker-{os.getpid()}-deaf"
    calls = []

    def poll():
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt

    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        procs.run_logged([sys.executable, str(script), marker], tmp_path / "log", poll=poll, poll_seconds=0.1)
    assert time.monotonic() - began < 8  # SIGTERM, not a 15 s wait for an ignored SIGINT
    assert wait_for(lambda: not alive_with(marker), timeout=5)


def test_exit_code_and_output_go_to_the_log(tmp_path):
    log = tmp_path / "logs" / "x.log"
    code = procs.run_logged([sys.executable, "-c", "print('hello'); raise SystemExit(3)"], log, poll_seconds=0.05)
    assert code == 3 and log.read_text().strip() == "hello"


def test_a_missing_program_is_a_failed_run_not_a_traceback(tmp_path):
    log = tmp_path / "x.log"
    code = procs.run_logged([str(tmp_path / "no-such-program")], log, poll_seconds=0.05)
    assert code == 127 and "cannot start" in log.read_text()
