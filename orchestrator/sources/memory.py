"""The project's own memory store (written by `orchestrator chat`) as a conversation source."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from orchestrator.conversations import Conversation, SkippedRecord
from orchestrator.errors import UsageError

TEXT_COLUMNS = ("role", "content", "thinking", "tool_calls", "tool_name")


def read_memory(path: str | Path, sessions: list[str] | None = None) -> Iterator[Conversation | SkippedRecord]:
    """Yield each session as a Conversation, oldest first; a session with undecodable text is skipped."""
    from orchestrator.memory import MemoryStore

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such memory store; record chats with `orchestrator chat` or pass --db")
    with MemoryStore(path) as store:
        ids = sessions or [info.id for info in sorted(store.sessions(), key=lambda s: (s.created_at, s.id))]
        for session_id in ids:
            if store.session(session_id) is None:
                raise UsageError(f"no session {session_id!r} in {path}; run `orchestrator sessions` to list them")
        for session_id in ids:
            try:
                yield store.conversation(session_id)
            except sqlite3.OperationalError as exc:
                if "decode" not in str(exc):
                    raise
                yield SkippedRecord(
                    str(path), f"session {session_id}", "invalid UTF-8", _find_bad_text(path, session_id)
                )


def _find_bad_text(path: Path, session_id: str) -> str:
    """Name the message and column that hold bytes that are not UTF-8."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.text_factory = bytes
    try:
        rows = db.execute(
            f"SELECT id, {', '.join(TEXT_COLUMNS)} FROM messages WHERE session_id = ? ORDER BY id", (session_id,)
        )
        for row in rows:
            for column, value in zip(TEXT_COLUMNS, row[1:], strict=True):
                try:
                    if value is not None:
                        value.decode("utf-8")
                except UnicodeDecodeError:
                    return f"message {row[0]}, column {column}"
    finally:
        db.close()
    return "a session field"
