"""The conversation store: chats recorded into SQLite, read back as ``Conversation`` objects.

One database file holds ``sessions`` and their ``messages`` (thinking text, tool calls and tool turns
included). It runs in WAL mode so readers never block the writer, and every write is one
``BEGIN IMMEDIATE`` transaction: two processes recording at once wait for each other (up to the busy
timeout) instead of failing or losing turns.

Readers (``MemoryStore(path, readonly=True)``: the data export, ``orchestrator sessions``) open the file
read-only: they never wait for the writer, never migrate and never create a file. A row that cannot be
read back (bytes that are not UTF-8, tool calls that are not JSON) is a ``StoreRowError`` naming the
session, the message and the column.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orchestrator.conversations import ROLES, Conversation, MalformedError, Message, check_tools, loads_json
from orchestrator.errors import OrchestratorError, UsageError
from orchestrator.sources.memory import (
    TEXT_COLUMNS,
    StoreRowError,
    Undecodable,
    check_version,
    find_undecodable,
    message_from_row,
    open_reader,
)

log = logging.getLogger(__name__)

DEFAULT_DB = Path("data/ollama_memory.db")
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    model TEXT,
    title TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    tools TEXT,
    failed TEXT
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    role TEXT NOT NULL,
    content TEXT NOT NULL DEFAULT '',
    thinking TEXT,
    tool_calls TEXT,
    tool_name TEXT,
    model TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_session ON messages(session_id, id);
"""
# Statements that bring a store of the version before the key up to it (run by the writer only).
_MIGRATIONS = {
    2: ("ALTER TABLE sessions ADD COLUMN failed TEXT",),  # why the last request got no reply; NULL once answered
}


@dataclass(frozen=True)
class SessionInfo:
    """One row of ``MemoryStore.sessions()``; ``turns`` counts its messages."""

    id: str
    model: str | None
    title: str | None
    created_at: str
    updated_at: str
    turns: int
    failed: str | None = None  # why the last request got no reply (None: answered, or never asked)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def new_session_id() -> str:
    """A fresh id that sorts by creation time and reads well: ``20260822-153012-a1b2c3``."""
    return f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


class MemoryStore:
    """A SQLite database of chat sessions. Use one store per thread; close it (or use ``with``).

    Args:
        path: the database file; its folder is created. Defaults to ``data/ollama_memory.db``.
        busy_timeout: seconds a write waits for another process's write to finish.
    """

    def __init__(
        self, path: str | os.PathLike[str] = DEFAULT_DB, *, busy_timeout: float = 30.0, readonly: bool = False
    ):
        self.path = Path(path)
        self.readonly = readonly
        self._failed = "s.failed"
        if readonly:
            self._db = open_reader(self.path, SCHEMA_VERSION)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(sessions)")}
            self._failed = "s.failed" if "failed" in columns else "NULL AS failed"  # a store not migrated yet
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; each write below opens its own BEGIN IMMEDIATE.
        self._db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._refuse_foreign()  # before WAL mode is switched on: another program's file stays as it is
            self._enable_wal(busy_timeout)
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if _is_busy(exc):
                raise OrchestratorError(f"{self.path} stayed locked by another process; try again") from exc
            raise UsageError(f"{self.path}: not a usable conversation database ({exc})") from exc
        except BaseException:
            self._db.close()
            raise

    def __repr__(self) -> str:
        return f"MemoryStore({str(self.path)!r})"

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _refuse_foreign(self) -> None:
        # Both reads in one read transaction: another process creating the store between them would
        # otherwise be seen half way, its tables there but its version not yet.
        self._db.execute("BEGIN")
        try:
            ours = check_version(self._db, self.path, SCHEMA_VERSION) > 0
            tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            self._db.execute("COMMIT")
        if not ours and tables:
            raise UsageError(
                f"{self.path}: not an orchestrator memory store (a SQLite file with other tables); "
                "give a new path or the file `orchestrator chat` records into"
            )

    def _enable_wal(self, timeout: float) -> None:
        # Switching a new file to WAL answers "locked" at once, without the busy handler, while another
        # process does the same: retry until the busy timeout.
        deadline = time.monotonic() + timeout
        while True:
            try:
                mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        if str(mode).lower() != "wal":
            log.warning("%s: SQLite kept journal mode %s (WAL unsupported here)", self.path, mode)

    def _migrate(self) -> None:
        with self._write():
            version = check_version(self._db, self.path, SCHEMA_VERSION)
            if version == 0:
                statements = [s for s in _SCHEMA.split(";") if s.strip()]
            else:
                statements = [s for v in range(version + 1, SCHEMA_VERSION + 1) for s in _MIGRATIONS[v]]
            for statement in statements:
                self._db.execute(statement)
            if version < SCHEMA_VERSION:
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _write(self) -> _Transaction:
        if self.readonly:
            raise OrchestratorError(f"{self.path} was opened read-only; open a MemoryStore without readonly to write")
        return _Transaction(self._db, self.path)

    # -- writes ----------------------------------------------------------------------------------

    def create_session(
        self,
        session_id: str | None = None,
        model: str | None = None,
        title: str | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        """Create a session, or reuse the one with this id (filling in a model or title it lacks)."""
        session_id = new_session_id() if session_id is None else _check_id(session_id)
        with self._write():
            self._ensure_session(session_id, model, title, tools)
        return session_id

    def add_message(self, session_id: str, message: Message, model: str | None = None) -> int:
        """Record one turn (creating the session if needed) and return its row id."""
        return self.add_messages(session_id, [message], model=model)[0]

    def add_messages(self, session_id: str, messages: Iterable[Message], model: str | None = None) -> list[int]:
        """Record turns in order, in one transaction: all of them are stored or none is."""
        session_id = _check_id(session_id)
        messages = list(messages)
        rows = [_to_row(message) for message in messages]
        ids: list[int] = []
        with self._write():
            now = self._ensure_session(session_id, model)
            for role, content, thinking, tool_calls, tool_name in rows:
                cursor = self._db.execute(
                    "INSERT INTO messages (session_id, role, content, thinking, tool_calls, tool_name, model, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (session_id, role, content, thinking, tool_calls, tool_name, model, now),
                )
                ids.append(int(cursor.lastrowid or 0))
            self._db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (now, session_id))
            if any(message.role == "assistant" for message in messages):
                self._db.execute("UPDATE sessions SET failed = NULL WHERE id = ?", (session_id,))
        return ids

    def mark_failed(self, session_id: str, reason: str | None) -> None:
        """Record why the session's last request got no reply (None clears it; an answer clears it too)."""
        with self._write():
            self._db.execute("UPDATE sessions SET failed = ? WHERE id = ?", (reason, _check_id(session_id)))

    def delete_session(self, session_id: str) -> int:
        """Delete a session and its turns, in one transaction; returns how many turns it had."""
        with self._write():
            if self._db.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is None:
                raise self._unknown(session_id)
            turns = self._db.execute("DELETE FROM messages WHERE session_id = ?", (session_id,)).rowcount
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        return turns

    def _ensure_session(
        self, session_id: str, model: str | None, title: str | None = None, tools: list[dict] | None = None
    ) -> str:
        now = _now()
        tools_json = json.dumps(tools, ensure_ascii=False) if tools else None
        self._db.execute(
            "INSERT INTO sessions (id, model, title, created_at, updated_at, tools) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET model = coalesce(sessions.model, excluded.model), "
            "title = coalesce(sessions.title, excluded.title), tools = coalesce(excluded.tools, sessions.tools)",
            (session_id, model, title, now, now, tools_json),
        )
        return now

    # -- reads -----------------------------------------------------------------------------------

    def session(self, session_id: str) -> SessionInfo | None:
        """The session with this id, or None."""
        rows = self._session_rows("WHERE s.id = ?", (session_id,))
        return rows[0] if rows else None

    def sessions(self) -> list[SessionInfo]:
        """Every session, the most recently updated first."""
        return self._session_rows("", ())

    def _session_rows(self, where: str, params: tuple[Any, ...]) -> list[SessionInfo]:
        try:
            rows = self._fetch(
                f"SELECT s.id, s.model, s.title, s.created_at, s.updated_at, count(m.id) AS turns, {self._failed} "
                f"FROM sessions s LEFT JOIN messages m ON m.session_id = s.id {where} "
                "GROUP BY s.id ORDER BY s.updated_at DESC, s.id",
                params,
            )
        except Undecodable:
            raise UsageError(f"{self.path}: a session's id, model or title is not valid UTF-8") from None
        return [SessionInfo(**dict(row)) for row in rows]

    def messages(self, session_id: str) -> list[Message]:
        """The turns of a session in the order they were recorded (empty for an unknown id)."""
        try:
            rows = self._fetch(
                f"SELECT id, {', '.join(TEXT_COLUMNS)} FROM messages WHERE session_id = ? ORDER BY id", (session_id,)
            )
        except Undecodable:
            raise find_undecodable(self._db, self.path, session_id) from None
        return [message_from_row(row, self.path, session_id) for row in rows]

    def conversation(self, session_id: str) -> Conversation:
        """One session as a ``Conversation``; an unknown id is a ``UsageError``."""
        try:
            rows = self._fetch("SELECT id, model, title, tools FROM sessions WHERE id = ?", (session_id,))
        except Undecodable:
            raise StoreRowError(self.path, session_id, None, "model, title or tools", "is not valid UTF-8") from None
        if not rows:
            raise self._unknown(session_id)
        row = rows[0]
        try:
            tools = check_tools(loads_json(row["tools"])) if row["tools"] else []
        except ValueError as exc:  # MalformedError included
            problem = f"malformed: {exc}" if isinstance(exc, MalformedError) else "is not valid JSON"
            raise StoreRowError(self.path, session_id, None, "tools", problem) from None
        return Conversation(
            id=row["id"],
            messages=self.messages(session_id),
            tools=tools,
            source="memory",
            title=row["title"],
            model=row["model"],
        )

    def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Run a read; SQLite errors become one-line errors naming the file."""
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "decode" in str(exc):
                raise Undecodable() from None
            if _is_busy(exc):
                raise OrchestratorError(f"{self.path} stayed locked by another process; try again") from None
            raise UsageError(f"{self.path}: cannot be read ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"{self.path}: cannot be read ({exc}); it may be damaged") from None

    def conversations(self, session_ids: Iterable[str] | None = None) -> Iterator[Conversation]:
        """Yield sessions one at a time, oldest first (or in the order of ``session_ids``)."""
        if session_ids is None:
            ids = [r[0] for r in self._fetch("SELECT id FROM sessions ORDER BY created_at, id")]
        else:
            ids = list(session_ids)
            known = {r[0] for r in self._fetch("SELECT id FROM sessions")}
            missing = [i for i in ids if i not in known]
            if missing:
                raise self._unknown(missing[0])
        for session_id in ids:
            yield self.conversation(session_id)

    def _unknown(self, session_id: str) -> UsageError:
        return UsageError(f"no session {session_id!r} in {self.path}; run `orchestrator sessions` to list them")


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any error (the write lock is taken up front)."""

    def __init__(self, db: sqlite3.Connection, path: Path):
        self._db = db
        self._path = path

    def __enter__(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise OrchestratorError(
                    f"{self._path} stayed locked by another writer past the busy timeout; try again"
                ) from exc
            raise

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        try:
            if exc_type is None:
                self._db.execute("COMMIT")
        finally:
            if self._db.in_transaction:  # an error above, or a COMMIT that failed
                self._db.execute("ROLLBACK")


def _is_busy(exc: sqlite3.Error) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _check_id(session_id: str) -> str:
    if not isinstance(session_id, str) or not session_id.strip():
        raise UsageError(f"a session id must be a non-empty string, not {session_id!r}")
    return session_id


def _to_row(message: Message) -> tuple[str, str, str | None, str | None, str | None]:
    if message.role not in ROLES:
        raise UsageError(f"cannot record a message with role {message.role!r}: roles are {', '.join(ROLES)}")
    calls = [call.to_ollama() for call in message.tool_calls]
    tool_calls = json.dumps(calls, ensure_ascii=False) if calls else None
    return message.role, message.content or "", message.thinking, tool_calls, message.tool_name
