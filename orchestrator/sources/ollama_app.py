"""The Ollama desktop app's chats (``db.sqlite``), read from a snapshot so the running app is never
disturbed: its file, ``-wal`` and ``-shm`` are only read (see ``snapshot.py``).

Schema 18 (app/store/database.go) and older ones: columns a migration added later (``thinking``,
``tool_result``, ``model_cloud``...) are read only where they exist. Messages are ordered by id; an
attachment (an image, a file) is not text: the chat keeps its text and each attachment is a counted skip.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

from orchestrator.conversations import Conversation, MalformedError, Message, SkippedRecord, ToolCall, loads_json
from orchestrator.errors import UsageError
from orchestrator.sources import MissingSource
from orchestrator.sources.filters import parse_time
from orchestrator.sources.snapshot import snapshot
from orchestrator.sources.sqlite import columns

WHAT = "the Ollama app's database"
MESSAGE_COLUMNS = ("id", "role", "content", "thinking", "model_name", "created_at", "tool_result")


def default_path(home: Path | None = None) -> Path:
    """Where the app keeps its database on this OS (app/store/store.go)."""
    home = home or Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return (Path(base) if base else home / "AppData" / "Local") / "Ollama" / "db.sqlite"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "Ollama" / "db.sqlite"
    return home / ".ollama" / "db.sqlite"


def open_app_db(path: str | Path | None) -> tuple[Path, sqlite3.Connection]:
    """The database's path and a snapshot of it, its tables checked; a UsageError naming the file otherwise."""
    path = Path(path).expanduser() if path else default_path()
    if path.is_dir():
        raise UsageError(f"{path}: a folder, not {WHAT}; give its db.sqlite")
    if not path.is_file():
        raise MissingSource(f"{path}: no such file; is the Ollama app installed? give the path of its db.sqlite")
    db = snapshot(path, WHAT)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        db.close()
        raise UsageError(f"{path}: cannot be read as {WHAT} ({exc})") from None
    if not {"chats", "messages"} <= tables:
        db.close()
        raise UsageError(f"{path}: not {WHAT} (no chats and messages tables)")
    return path, db


def count_chats(path: str | Path | None) -> int:
    """How many chats the database holds (no message is read)."""
    _, db = open_app_db(path)
    with db:
        return db.execute("SELECT count(*) FROM chats").fetchone()[0]


def read_ollama_app(path: str | Path | None = None) -> Iterator[Conversation | SkippedRecord]:
    """Yield each chat of the app's database, oldest first."""
    path, db = open_app_db(path)
    source = str(path)
    try:
        db.text_factory = _strict_text
        plan = _plan(db)
        order = "created_at, id" if "created_at" in columns(db, "chats") else "rowid"
        chats = db.execute(f"SELECT id FROM chats ORDER BY {order}").fetchall()
        for (chat_id,) in chats:
            try:
                yield from _chat(db, plan, source, chat_id)
            except (UnicodeDecodeError, sqlite3.OperationalError):
                yield SkippedRecord(source, f"chat {chat_id}", "invalid UTF-8")
            except sqlite3.DatabaseError as exc:
                yield SkippedRecord(source, f"chat {chat_id}", "unreadable rows", type(exc).__name__)
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"{path}: cannot be read as {WHAT} ({exc})") from None
    finally:
        db.close()


def _strict_text(raw: bytes) -> str:
    return raw.decode("utf-8")


def _plan(db: sqlite3.Connection) -> dict[str, str]:
    """The SELECTs this database's schema allows (missing columns read as NULL)."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    have = columns(db, "messages")
    picked = ", ".join(col if col in have else f"NULL AS {col}" for col in MESSAGE_COLUMNS)
    chat_cols = columns(db, "chats")
    plan = {
        "chat": f"SELECT {'title' if 'title' in chat_cols else 'NULL'}, "
        f"{'created_at' if 'created_at' in chat_cols else 'NULL'} FROM chats WHERE id = ?",
        "messages": f"SELECT {picked} FROM messages WHERE chat_id = ? ORDER BY id",
    }
    if "tool_calls" in tables:
        tc = columns(db, "tool_calls")
        result = "function_result" if "function_result" in tc else "NULL"
        plan["calls"] = (
            f"SELECT id, function_name, function_arguments, {result} FROM tool_calls WHERE message_id = ? ORDER BY id"
        )
    if "attachments" in tables:
        plan["attachments"] = "SELECT id FROM attachments WHERE message_id = ? ORDER BY id"
    return plan


def _chat(
    db: sqlite3.Connection, plan: dict[str, str], source: str, chat_id: str
) -> Iterator[Conversation | SkippedRecord]:
    title, created = db.execute(plan["chat"], (chat_id,)).fetchone()
    rows = db.execute(plan["messages"], (chat_id,)).fetchall()
    messages: list[Message] = []
    model = None
    for index, (mid, role, content, thinking, model_name, m_created, tool_result) in enumerate(rows):
        where = f"chat {chat_id}, message {mid}"
        for (attachment_id,) in db.execute(plan["attachments"], (mid,)) if "attachments" in plan else []:
            yield SkippedRecord(source, f"{where}, attachment {attachment_id}", "attachment (not text)")
        created = created or m_created
        try:
            calls, results = _calls(db, plan, mid)
        except MalformedError as exc:
            yield SkippedRecord(source, where, f"malformed tool call: {exc}")
            return
        if role == "assistant" and model_name:
            model = model_name
        if role == "tool":
            name = _last_call_name(messages)
            messages.append(Message("tool", content or tool_result or "", tool_name=name))
            continue
        messages.append(Message(role or "", content or "", thinking=thinking or None, tool_calls=calls))
        next_is_tool = index + 1 < len(rows) and rows[index + 1][1] == "tool"
        if results and len(results) == len(calls) and not next_is_tool:
            # this schema kept the results on the calls, not as tool messages of their own
            messages.extend(Message("tool", r, tool_name=c.name) for c, r in zip(calls, results, strict=True))
    if not messages:
        yield SkippedRecord(source, f"chat {chat_id}", "empty chat")
        return
    yield Conversation(
        id=str(chat_id),
        messages=messages,
        source=source,
        title=title,
        model=model,
        where=f"{source} chat {chat_id}",
        created_at=parse_time(created),
    )


def _calls(db: sqlite3.Connection, plan: dict[str, str], message_id: int) -> tuple[list[ToolCall], list[str]]:
    if "calls" not in plan:
        return [], []
    calls, results = [], []
    for call_id, name, arguments, result in db.execute(plan["calls"], (message_id,)):
        try:
            args = loads_json(arguments) if arguments else {}
        except ValueError:
            raise MalformedError(f"call {call_id}: arguments are not JSON") from None
        calls.append(ToolCall.from_ollama({"name": name, "arguments": args}))
        if result:
            results.append(result)
    return calls, results


def _last_call_name(messages: list[Message]) -> str | None:
    """The function the next tool message answers: results follow the calls of the turn before them in order."""
    answered = 0
    for message in reversed(messages):
        if message.role == "tool":
            answered += 1
        elif message.tool_calls:
            return message.tool_calls[min(answered, len(message.tool_calls) - 1)].name
        else:
            return None
    return None
