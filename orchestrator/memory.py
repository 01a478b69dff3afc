"""The conversation store: chats recorded into SQLite, read back as ``Conversation`` objects.

One database file holds ``sessions`` and their ``messages`` (thinking text, tool calls and tool turns
included). It runs in WAL mode so readers never block the writer, and every write is one
``BEGIN IMMEDIATE`` transaction: two processes recording at once wait for each other (up to the busy
timeout) instead of failing or losing turns.
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

from orchestrator.conversations import ROLES, Conversation, Message, ToolCall
from orchestrator.errors import OrchestratorError, UsageError

log = logging.getLogger(__name__)

DEFAULT_DB = Path("data/ollama_memory.db")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    model TEXT,
    title TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    tools TEXT
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


@dataclass(frozen=True)
class SessionInfo:
    """One row of ``MemoryStore.sessions()``; ``turns`` counts its messages."""

    id: str
    model: str | None
    title: str | None
    created_at: str
    updated_at: str
    turns: int


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

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_DB, *, busy_timeout: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; each write below opens its own BEGIN IMMEDIATE.
        self._db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
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
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise UsageError(
                    f"{self.path}: schema version {version} is newer than this orchestrator's "
                    f"({SCHEMA_VERSION}); upgrade the orchestrator"
                )
            if version < SCHEMA_VERSION:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _write(self) -> _Transaction:
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
        return ids

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
        rows = self._db.execute(
            "SELECT s.id, s.model, s.title, s.created_at, s.updated_at, count(m.id) AS turns "
            f"FROM sessions s LEFT JOIN messages m ON m.session_id = s.id {where} "
            "GROUP BY s.id ORDER BY s.updated_at DESC, s.id",
            params,
        ).fetchall()
        return [SessionInfo(**dict(row)) for row in rows]

    def messages(self, session_id: str) -> list[Message]:
        """The turns of a session in the order they were recorded (empty for an unknown id)."""
        rows = self._db.execute(
            "SELECT role, content, thinking, tool_calls, tool_name FROM messages WHERE session_id = ? ORDER BY id",
            (session_id,),
        ).fetchall()
        return [_from_row(row) for row in rows]

    def conversation(self, session_id: str) -> Conversation:
        """One session as a ``Conversation``; an unknown id is a ``UsageError``."""
        row = self._db.execute("SELECT id, model, title, tools FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            raise self._unknown(session_id)
        return Conversation(
            id=row["id"],
            messages=self.messages(session_id),
            tools=json.loads(row["tools"]) if row["tools"] else [],
            source="memory",
            title=row["title"],
            model=row["model"],
        )

    def conversations(self, session_ids: Iterable[str] | None = None) -> Iterator[Conversation]:
        """Yield sessions one at a time, oldest first (or in the order of ``session_ids``)."""
        if session_ids is None:
            ids = [r[0] for r in self._db.execute("SELECT id FROM sessions ORDER BY created_at, id").fetchall()]
        else:
            ids = list(session_ids)
            known = {r[0] for r in self._db.execute("SELECT id FROM sessions").fetchall()}
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


def _from_row(row: sqlite3.Row) -> Message:
    calls = json.loads(row["tool_calls"]) if row["tool_calls"] else []
    return Message(
        role=row["role"],
        content=row["content"] or "",
        thinking=row["thinking"],
        tool_calls=[ToolCall.from_ollama(call) for call in calls],
        tool_name=row["tool_name"],
    )
