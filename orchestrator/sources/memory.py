"""The project's own memory store (written by `orchestrator chat`) as a conversation source, and the
read side of ``orchestrator.memory.MemoryStore``: the read-only open and the rows read back."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from orchestrator.conversations import Conversation, MalformedError, Message, SkippedRecord, ToolCall, loads_json
from orchestrator.errors import UsageError

TEXT_COLUMNS = ("role", "content", "thinking", "tool_calls", "tool_name")


class StoreRowError(UsageError):
    """A row of the store that cannot be read back; ``reason`` is short enough to count skips by."""

    def __init__(self, path: Path, session_id: str, message_id: int | None, column: str, problem: str):
        self.session_id, self.message_id, self.column = session_id, message_id, column
        self.reason = "invalid UTF-8" if problem == "is not valid UTF-8" else f"{column} {problem}"
        at = f"session {session_id!r}" + (f", message {message_id}" if message_id is not None else "")
        super().__init__(
            f"{path}: {at}: {column} {problem}; delete the session (`orchestrator sessions delete {session_id}`)"
        )


class Undecodable(Exception):
    """A text column held bytes that are not UTF-8 (sqlite3's own message quotes the text: never shown)."""


class UnknownSession(UsageError):
    """A session asked for that the store does not hold; ``source_key`` names the recipe key at fault."""

    source_key = "sessions"


def create_hint(path: Path) -> str:
    """How a store comes to be, for any caller (the commands and the recipe add their own options)."""
    return f"record chats into it with `orchestrator chat --model MODEL --db {path}`"


def read_memory(path: str | Path, sessions: list[str] | None = None) -> Iterator[Conversation | SkippedRecord]:
    """Yield each session as a Conversation, oldest first, reading the store read-only (a chat recording
    meanwhile is neither blocked nor blocks this). A session with a row that cannot be read back is a
    SkippedRecord naming the session and the message."""
    from orchestrator.memory import MemoryStore
    from orchestrator.sources.filters import parse_time

    path = Path(path)
    with MemoryStore(path, readonly=True) as store:
        ids = sessions or [info.id for info in sorted(store.sessions(), key=lambda s: (s.created_at, s.id))]
        started = {}
        for session_id in ids:
            info = store.session(session_id)
            if info is None:
                raise UnknownSession(f"no session {session_id!r} in {path}; run `orchestrator sessions` to list them")
            started[session_id] = info.created_at
        for session_id in ids:
            try:
                conversation = store.conversation(session_id)
            except StoreRowError as exc:
                record = f"session {session_id}" + (f", message {exc.message_id}" if exc.message_id else "")
                yield SkippedRecord(str(path), record, exc.reason, f"column {exc.column}")
                continue
            conversation.where = f"{path} session {session_id}"
            conversation.created_at = parse_time(started[session_id])
            yield conversation


def message_from_row(row: sqlite3.Row, path: Path, session_id: str) -> Message:
    """One ``messages`` row as a Message; tool calls that cannot be read are a StoreRowError."""
    try:
        calls = loads_json(row["tool_calls"]) if row["tool_calls"] else []
    except ValueError:
        raise StoreRowError(path, session_id, row["id"], "tool_calls", "is not valid JSON") from None
    try:
        if not isinstance(calls, list):
            raise MalformedError("is not a list")
        tool_calls = [ToolCall.from_ollama(call) for call in calls]
    except MalformedError as exc:
        raise StoreRowError(path, session_id, row["id"], "tool_calls", f"malformed: {exc}") from None
    return Message(
        role=row["role"],
        content=row["content"] or "",
        thinking=row["thinking"],
        tool_calls=tool_calls,
        tool_name=row["tool_name"],
    )


def find_undecodable(db: sqlite3.Connection, path: Path, session_id: str) -> StoreRowError:
    """Name the message and column of a session that hold bytes that are not UTF-8."""
    db.text_factory = bytes
    try:
        rows = db.execute(
            f"SELECT id, {', '.join(TEXT_COLUMNS)} FROM messages WHERE session_id = ? ORDER BY id", (session_id,)
        ).fetchall()
    finally:
        db.text_factory = str
    for row in rows:
        for column in TEXT_COLUMNS:
            try:
                if row[column] is not None:
                    row[column].decode("utf-8")
            except UnicodeDecodeError:
                return StoreRowError(path, session_id, row["id"], column, "is not valid UTF-8")
    return StoreRowError(path, session_id, None, "a text column", "is not valid UTF-8")


def check_version(db: sqlite3.Connection, path: Path, supported: int) -> int:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > supported:
        raise UsageError(
            f"{path}: schema version {version} is newer than this orchestrator's ({supported}); "
            "upgrade the orchestrator"
        )
    return version


def open_reader(path: Path, supported: int) -> sqlite3.Connection:
    """A read-only connection to an existing store, its schema checked (never migrated)."""
    from orchestrator.sources import MissingSource
    from orchestrator.sources.sqlite import connect_readonly

    if not path.is_file():
        if path.is_dir():
            raise UsageError(f"{path}: a folder, not an orchestrator memory store; give the database file")
        raise MissingSource(f"{path}: no such memory store; {create_hint(path)}")
    if path.stat().st_size == 0:
        raise UsageError(f"{path}: not an orchestrator memory store (an empty file); {create_hint(path)}")
    db = connect_readonly(path, "an orchestrator memory store")
    db.row_factory = sqlite3.Row
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"sessions", "messages"} <= tables or check_version(db, path, supported) == 0:
            raise UsageError(f"{path}: not an orchestrator memory store (no sessions and messages tables)")
    except sqlite3.DatabaseError as exc:
        db.close()
        raise UsageError(f"{path}: cannot be read ({exc})") from None
    except BaseException:
        db.close()
        raise
    return db
