"""Atomic writes: modes kept, leftovers of killed writers removed, and OS errors as one line."""

import os
import subprocess
import sys
import textwrap

import pytest

from orchestrator.fsutil import LockedError, WriteError, atomic_path, file_lock, stale_temps, write_json, write_text


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_replaced_file_keeps_its_mode_and_a_new_one_follows_the_umask(tmp_path):
    target = tmp_path / "dataset_info.json"
    target.write_text("{}")
    target.chmod(0o640)
    write_json(target, {"a": 1})
    assert target.stat().st_mode & 0o777 == 0o640
    old = os.umask(0o022)
    try:
        fresh = write_text(tmp_path / "new.txt", "x")
    finally:
        os.umask(old)
    assert fresh.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_leftovers_of_dead_writers_are_removed_when_the_target_is_written_again(tmp_path):
    target = tmp_path / "model.gguf"
    stale = tmp_path / f".model.gguf.{dead_pid()}.partial"
    stale.write_bytes(b"x" * 1000)
    live = tmp_path / f".model.gguf.{os.getppid()}.partial"  # a writer that is still running
    live.write_bytes(b"y")
    other = tmp_path / f".other.gguf.{dead_pid()}.partial"
    other.write_bytes(b"z")
    assert stale_temps(target) == [stale]
    write_text(target, "new")
    assert not stale.exists() and live.exists() and other.exists()
    assert target.read_text() == "new"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@pytest.mark.parametrize(
    ("where", "expected"),
    [("parent-is-file", "a parent of it is a file"), ("proc", "cannot write /proc/")],
)
def test_os_errors_become_one_line(tmp_path, where, expected):
    if where == "parent-is-file":
        (tmp_path / "file").write_text("x")
        target = tmp_path / "file" / "out.json"
    else:
        target = "/proc/orchestrator-test/out.json"
    with pytest.raises(WriteError) as info:
        write_json(target, {})
    message = str(info.value)
    assert "\n" not in message and expected in message and "cannot write" in message


def test_a_file_size_limit_is_one_line(tmp_path):
    code = textwrap.dedent(
        f"""
        import resource
        from orchestrator.fsutil import WriteError, write_text
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        try:
            write_text({str(tmp_path / "big.txt")!r}, "x" * 100_000)
        except WriteError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "File too large; raise the file size limit" in out.stdout, out.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_held_lock_names_its_holder(tmp_path):
    lock = tmp_path / ".lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from orchestrator.fsutil import file_lock\nimport time\n"
            f"with file_lock({str(lock)!r}):\n    print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"run folder X is in use by pid {holder.pid}"):
            with file_lock(lock, wait=False, what="run folder X"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with file_lock(lock, wait=False):  # the lock died with its holder
        pass
