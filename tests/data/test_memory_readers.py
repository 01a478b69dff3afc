"""Reading the memory store (`data export --db`, `sessions`, `sessions show`, the recipe's memory source)
opens it read-only: it never waits for a writer, never writes, migrates or creates a file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.conversations import Conversation, Message, SkippedRecord
from orchestrator.memory import MemoryStore
from orchestrator.sources.memory import read_memory

REPO = Path(__file__).resolve().parents[2]
SECRET = "SECRET-chat-text"


def make_store(path: Path) -> Path:
    with MemoryStore(path) as store:
        store.add_messages("s1", [Message("user", "q"), Message("assistant", "a")], model="m")
        store.add_messages("s2", [Message("user", "q2"), Message("assistant", "a2")], model="m")
    return path


def reader_commands(db: Path, out: Path) -> list[list[str]]:
    return [
        ["sessions", "--db", str(db)],
        ["sessions", "show", "s1", "--db", str(db)],
        ["data", "export", "--db", str(db), "--name", "mem", "--dataset-dir", str(out)],
    ]


def snapshot(db: Path) -> tuple[bytes, int]:
    return db.read_bytes(), db.stat().st_mtime_ns


def test_readers_do_not_wait_for_a_writer(tmp_path, capsys):
    db = make_store(tmp_path / "m.db")
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # the chat wrapper in the middle of recording a turn
    writer.execute("UPDATE sessions SET title = 'being written'")
    try:
        for argv in reader_commands(db, tmp_path / "out"):
            started = time.monotonic()
            assert main(argv) == 0, capsys.readouterr().err
            assert time.monotonic() - started < 5
        started = time.monotonic()
        assert [c.id for c in read_memory(db)] == ["s1", "s2"]  # the recipe's memory source
        assert time.monotonic() - started < 5
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert "2 conversations read, 2 written" in capsys.readouterr().out


def _run_in_read_only_folder(folder: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """Run the CLI where ``folder`` cannot be written: a read-only bind mount (root ignores modes), else chmod."""
    command = [sys.executable, "-m", "orchestrator", *argv]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if os.geteuid() == 0:
        script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
        command = ["unshare", "--mount", "sh", "-c", script, str(folder), *command]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    folder.chmod(0o555)
    try:
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    finally:
        folder.chmod(0o755)


def test_readers_work_in_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    db = make_store(folder / "m.db")
    db.chmod(0o444)
    before = snapshot(db)
    for argv in reader_commands(db, tmp_path / "out"):
        done = _run_in_read_only_folder(folder, argv)
        assert (done.returncode, done.stderr) == (0, ""), argv
    assert "2 conversations read, 2 written" in done.stdout
    assert snapshot(db) == before
    assert sorted(p.name for p in folder.iterdir()) == ["m.db"]


def _foreign(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")


@pytest.mark.parametrize("kind", ["empty", "foreign sqlite", "not sqlite"])
def test_a_file_that_is_not_a_memory_store_is_one_error_line_and_untouched(tmp_path, capsys, kind):
    db = tmp_path / "m.db"
    if kind == "empty":
        db.write_bytes(b"")
    elif kind == "foreign sqlite":
        _foreign(db)
    else:
        db.write_bytes(b"plain text, not a database\n" * 200)
    before = snapshot(db)
    for argv in reader_commands(db, tmp_path / "out"):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {db}: not an orchestrator memory store") and err.count("\n") == 1
    assert snapshot(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.db"]


def test_a_missing_store_is_one_error_line_naming_how_to_create_it(tmp_path, capsys):
    db = tmp_path / "none" / "m.db"
    for argv in reader_commands(db, tmp_path / "out")[1:]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {db}: no such memory store") and "orchestrator chat" in err
        assert err.count("\n") == 1
    assert not db.parent.exists()


def _break_tool_calls(db: Path) -> int:
    with MemoryStore(db) as store:
        store.add_messages("tools", [Message("user", SECRET), Message("assistant", "a")])
    with sqlite3.connect(db) as raw:
        (row_id,) = raw.execute("SELECT id FROM messages WHERE session_id = 'tools' AND role = 'assistant'").fetchone()
        raw.execute("UPDATE messages SET tool_calls = ? WHERE id = ?", ('[{"function": ' + SECRET, row_id))
    return row_id


def test_bad_tool_calls_json_in_the_store_is_a_counted_skip(tmp_path, capsys):
    db = make_store(tmp_path / "m.db")
    row_id = _break_tool_calls(db)
    items = list(read_memory(db))
    assert [c.id for c in items if isinstance(c, Conversation)] == ["s1", "s2"]
    (skipped,) = [i for i in items if isinstance(i, SkippedRecord)]
    assert skipped.record == f"session tools, message {row_id}" and "tool_calls" in skipped.reason
    assert main(["data", "export", "--db", str(db), "--name", "mem", "--dataset-dir", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "3 conversations read, 2 written, 1 skipped" in out and SECRET not in out


def test_sessions_show_with_bad_tool_calls_json_is_one_error_line(tmp_path, capsys):
    db = make_store(tmp_path / "m.db")
    row_id = _break_tool_calls(db)
    assert main(["sessions", "show", "tools", "--db", str(db)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: {db}: session 'tools', message {row_id}: tool_calls") and err.count("\n") == 1
    assert SECRET not in err + out
