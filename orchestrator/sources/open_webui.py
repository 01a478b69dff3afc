"""Open WebUI chats: an "Export Chats" JSON file, or its ``webui.db`` (table ``chat``, column ``chat`` holding
the same JSON object as an export item's ``chat``).

Messages form a tree (edits and regenerations are siblings); the conversation kept is the path from
``history.currentId`` up through ``parentId`` to the root. Older exports carry a flat ``messages`` list,
or items without the ``chat`` wrapper. A parent that is missing ends the path there (counted); a cycle
skips the chat. Files and images on a message are not text: each is a counted skip.

Sibling answers to one user turn become preference pairs: the thumbs up or down on a message
(``annotation.rating``: 1 or -1) decides first, then whether it is the kept one (on the currentId path).
Newer versions also keep each rating as a row of ``webui.db``'s ``feedback`` table; a rating kept only
there counts too, and the one on the message wins where both exist.
"""

from __future__ import annotations

import codecs
import itertools
import logging
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.conversations import (
    Conversation,
    Message,
    PreferencePair,
    SkippedRecord,
    json_type,
    loads_json,
)
from orchestrator.errors import UsageError
from orchestrator.sources import MissingSource
from orchestrator.sources.filters import parse_time
from orchestrator.sources.snapshot import SQLITE_MAGIC
from orchestrator.sources.sqlite import columns
from orchestrator.sources.trees import branch_to

log = logging.getLogger(__name__)
WHAT_DB = "an Open WebUI database"
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "tool": "tool"}
# Open WebUI keeps a reasoning model's thinking inside the content, in a <details type="reasoning"> block.
_REASONING = re.compile(r'<details type="reasoning"[^>]*>\s*(?:<summary>.*?</summary>)?(.*?)</details>\s*', re.S)


def read_open_webui(path: str | Path) -> Iterator[Conversation | SkippedRecord]:
    """Yield each chat of an Open WebUI export file or ``webui.db``."""
    path = Path(path)
    if _is_sqlite(path):
        yield from _read_db(path)
        return
    for index, item in enumerate(_export_items(path)):
        yield from chat_conversation(item, str(path), f"record {index}")


def count_chats(path: str | Path) -> int:
    """How many chats the export or database holds (no message is read from a database)."""
    path = Path(path)
    if _is_sqlite(path):
        db = _open_db(path)
        try:
            return db.execute("SELECT count(*) FROM chat").fetchone()[0]
        finally:
            db.close()
    return len(_export_items(path))


def _is_sqlite(path: Path) -> bool:
    if path.is_dir():
        raise UsageError(f"{path}: a folder; give Open WebUI's webui.db or an exported chat-export-*.json")
    if not path.is_file():
        raise MissingSource(f"{path}: no such file; give Open WebUI's webui.db or an exported chat-export-*.json")
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head == SQLITE_MAGIC:
        return True
    if head.removeprefix(codecs.BOM_UTF8).lstrip()[:1] in (b"[", b"{"):
        return False
    raise UsageError(
        f"{path}: neither a SQLite database nor a JSON export (an encrypted webui.db? with DATABASE_ENCRYPTION_KEY "
        "set, use Open WebUI's Export Chats instead)"
    )


def _export_items(path: Path) -> list[Any]:
    try:
        data = loads_json(path.read_bytes().removeprefix(codecs.BOM_UTF8))
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc}); export the chats again from Open WebUI") from None
    items = data if isinstance(data, list) else [data]
    dicts = [item for item in items if isinstance(item, dict)]
    if dicts and all("mapping" in item for item in dicts):
        raise UsageError(f"{path}: a ChatGPT export, not an Open WebUI one; give it as chatgpt:{path}")
    if dicts and not any(isinstance(_chat_of(item), dict) for item in dicts):
        raise UsageError(f"{path}: not an Open WebUI export (no item has a chat with history or messages)")
    return items


def _open_db(path: Path) -> sqlite3.Connection:
    from orchestrator.sources.sqlite import connect_readonly

    db = connect_readonly(path, WHAT_DB)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        db.close()
        raise UsageError(f"{path}: cannot be read as {WHAT_DB} ({exc})") from None
    if "chat" not in tables:
        db.close()
        raise UsageError(f"{path}: not {WHAT_DB} (no chat table)")
    return db


def _read_db(path: Path) -> Iterator[Conversation | SkippedRecord]:
    db = _open_db(path)
    db.text_factory = bytes  # a row that is not UTF-8 is one skip, not the end of the read
    try:
        ratings = _feedback_ratings(db, path)
        have = columns(db, "chat")
        created = "created_at" if "created_at" in have else "NULL"
        title = "title" if "title" in have else "NULL"
        rows = db.execute(f"SELECT id, {title}, chat, {created} FROM chat ORDER BY {created}, id")
        for chat_id, chat_title, raw, created_at in rows:
            chat_id = chat_id.decode("utf-8", "replace") if isinstance(chat_id, bytes) else str(chat_id)
            where = f"chat {chat_id}"
            try:
                chat = loads_json(raw) if raw else None
                chat_title = chat_title.decode("utf-8") if isinstance(chat_title, bytes) else chat_title
            except (ValueError, UnicodeDecodeError):
                yield SkippedRecord(str(path), where, "invalid JSON in the chat column")
                continue
            item = {"id": chat_id, "title": chat_title, "chat": chat, "created_at": created_at}
            yield from chat_conversation(item, str(path), where, ratings.get(chat_id))
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"{path}: cannot be read as {WHAT_DB} ({exc})") from None
    finally:
        db.close()


def _feedback_ratings(db: sqlite3.Connection, path: Path) -> dict[str, dict[str, int]]:
    """Ratings from the ``feedback`` table (open_webui/models/feedbacks.py), by chat id then message id.

    A row is ``(id, user_id, version, type, data JSON, meta JSON, snapshot JSON, created_at, updated_at)``;
    a thumbs up or down has ``type`` "rating", ``data.rating`` 1 or -1 (a number or a string) and the rated
    message in ``meta.chat_id`` / ``meta.message_id``. Older databases have no such table, and a row that
    cannot be read only loses its rating: neither stops the read. The latest update of a message wins.
    """
    try:
        have = columns(db, "feedback")
        if not {"data", "meta"} <= have:
            return {}
        kind = "type" if "type" in have else "NULL"
        chat_column = "chat_id" if "chat_id" in have else "NULL"
        order = "updated_at, rowid" if "updated_at" in have else "rowid"
        rows = db.execute(f"SELECT {kind}, data, meta, {chat_column} FROM feedback ORDER BY {order}").fetchall()
    except sqlite3.DatabaseError as exc:
        log.warning("%s: the feedback table cannot be read (%s); ratings kept only there are not used", path, exc)
        return {}
    ratings: dict[str, dict[str, int]] = {}
    for row in rows:
        found = _feedback_row(*row)
        if found is not None:
            chat_id, message_id, rating = found
            ratings.setdefault(chat_id, {})[message_id] = rating
    log.debug("%s: ratings of %d messages in %d feedback rows", path, sum(map(len, ratings.values())), len(rows))
    return ratings


def _feedback_row(kind: Any, data: Any, meta: Any, chat_column_id: Any) -> tuple[str, str, int] | None:
    """One feedback row as (chat id, message id, rating), or None when it holds no usable thumbs up or down."""
    if kind not in (None, b"rating", "rating"):
        return None
    try:
        data, meta = _json_column(data), _json_column(meta)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(meta, dict):
        return None
    chat_id = meta.get("chat_id")
    if not isinstance(chat_id, str) and isinstance(chat_column_id, bytes):
        chat_id = chat_column_id.decode("utf-8", "replace")
    message_id, rating = meta.get("message_id"), _rating(data.get("rating"))
    if not isinstance(chat_id, str) or not isinstance(message_id, str) or rating is None:
        return None
    return chat_id, message_id, rating


def _json_column(raw: Any) -> Any:
    """A JSON column's value; SQLAlchemy writes JSON as text, and a value saved twice over is a JSON string."""
    if raw is None:
        return None
    value = loads_json(raw)
    return loads_json(value) if isinstance(value, str) else value


def _chat_of(item: dict[str, Any]) -> Any:
    chat = item.get("chat")
    if isinstance(chat, dict):
        return chat
    if isinstance(item.get("history"), dict) or isinstance(item.get("messages"), list):
        return item  # an old export: the chat object itself
    return None


def chat_conversation(
    item: Any, source: str, where: str, ratings: dict[str, int] | None = None
) -> Iterator[Conversation | SkippedRecord]:
    """One export item (or ``chat`` row) as a Conversation, with SkippedRecords for what it cannot hold.
    ``ratings`` (message id -> 1 or -1) are thumbs kept outside the chat JSON, in the feedback table."""
    if not isinstance(item, dict):
        yield SkippedRecord(source, where, "not a chat object", f"got {json_type(item)}")
        return
    chat = _chat_of(item)
    if chat is None:
        yield SkippedRecord(source, where, "no chat", "expected a chat with history or messages")
        return
    chat_id = str(item.get("id") or chat.get("id") or where)
    where = where if where.startswith("chat ") else f"{where} (chat {chat_id})"
    path, problem = _kept_path(chat)
    if problem == "cycle":
        yield SkippedRecord(source, where, "message tree has a cycle")
        return
    if problem:
        yield SkippedRecord(source, f"{where}, message {problem}", "missing parent message (kept the branch below it)")
    messages: list[Message] = []
    params = chat.get("params") if isinstance(chat.get("params"), dict) else {}
    system = chat.get("system") or params.get("system")
    if isinstance(system, str) and system.strip():
        messages.append(Message("system", system))
    model = None
    for index, raw in enumerate(path):
        mid = raw.get("id", index) if isinstance(raw, dict) else index
        message = _message(raw)
        if isinstance(message, str):
            yield SkippedRecord(source, f"{where}, message {mid}", f"malformed message: {message}")
            return
        for kind in ("files", "images"):
            attached = raw.get(kind) if isinstance(raw.get(kind), list) else []
            for n in range(len(attached)):
                yield SkippedRecord(source, f"{where}, message {mid}, {kind[:-1]} {n}", "attachment (not text)")
        if message.role == "assistant" and isinstance(raw.get("model"), str) and raw["model"]:
            model = raw["model"]
        messages.append(message)
    if not any(m.role != "system" for m in messages):
        yield SkippedRecord(source, where, "empty chat")
        return
    models = chat.get("models")
    if model is None and isinstance(models, list) and models and isinstance(models[0], str):
        model = models[0]
    started = parse_time(item.get("created_at")) or parse_time(chat.get("timestamp"))
    title = item.get("title") or chat.get("title")
    kept = {raw.get("id") for raw in path if isinstance(raw, dict)}
    system_messages = [m for m in messages[:1] if m.role == "system"]
    yield Conversation(
        preferences=preference_pairs(chat, kept, system_messages, f"{source} {where}", ratings),
        id=chat_id,
        messages=messages,
        source=source,
        title=title if isinstance(title, str) else None,
        model=model,
        where=f"{source} {where}",
        created_at=started,
    )


def _kept_path(chat: dict[str, Any]) -> tuple[list[Any], str | None]:
    """The kept branch, root first, and a problem: "cycle", the id of a missing parent, or None."""
    history = chat.get("history")
    tree = history.get("messages") if isinstance(history, dict) else None
    current = history.get("currentId") if isinstance(history, dict) else None
    if isinstance(tree, dict) and tree and current is not None:
        return branch_to(tree, current, "parentId")
    flat = chat.get("messages")
    return (flat if isinstance(flat, list) else []), None


def _message(raw: Any) -> Message | str:
    """An Open WebUI message as a Message, or what is wrong with it."""
    if not isinstance(raw, dict):
        return f"a message is {json_type(raw)}, not an object"
    role, content = raw.get("role"), raw.get("content")
    if role not in ROLES:
        return f"role is {role!r}" if isinstance(role, str) else f"role is {json_type(role)}"
    if isinstance(content, list):  # OpenAI-style parts: keep the text ones
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    if content is not None and not isinstance(content, str):
        return f"content is {json_type(content)}, not text"
    content, thinking = content or "", None
    if role == "assistant":
        found = _REASONING.findall(content)
        if found:
            lines = "\n".join(found).strip().splitlines()
            thinking = "\n".join(line.removeprefix(">").removeprefix(" ") for line in lines).strip() or None
            content = _REASONING.sub("", content).strip()
    return Message(ROLES[role], content, thinking=thinking)


def preference_pairs(
    chat: dict[str, Any],
    kept: set[Any],
    system: list[Message],
    where: str,
    ratings: dict[str, int] | None = None,
) -> list[PreferencePair]:
    """Pairs of sibling answers where one is preferred: rated higher (up over unrated over down), or,
    both unrated, kept over not kept. The prompt is the history down to the user turn they answer.
    A message's own ``annotation.rating`` wins over its entry in ``ratings`` (the feedback table)."""
    history = chat.get("history")
    tree = history.get("messages") if isinstance(history, dict) else None
    if not isinstance(tree, dict):
        return []
    siblings: dict[str, list[dict[str, Any]]] = {}
    for node in tree.values():
        if isinstance(node, dict) and node.get("role") == "assistant" and isinstance(node.get("parentId"), str):
            siblings.setdefault(node["parentId"], []).append(node)
    pairs = []
    for parent_id, answers in siblings.items():
        prompt = [_message(node) for node in _branch_to(tree, parent_id)] if len(answers) > 1 else []
        if not prompt or any(isinstance(m, str) for m in prompt) or prompt[-1].role != "user":
            continue
        for a, b in itertools.combinations(answers, 2):
            (ra, ka), (rb, kb) = _rank(a, kept, ratings), _rank(b, kept, ratings)
            if ra == rb and (ra != 0 or ka == kb):
                continue  # equally rated, or both unrated and both (not) kept: no preference
            better, worse = (a, b) if (ra, ka) > (rb, kb) else (b, a)
            chosen, rejected = _message(better), _message(worse)
            if isinstance(chosen, Message) and isinstance(rejected, Message):
                pairs.append(PreferencePair(system + prompt, chosen, rejected, f"{where}, message {better.get('id')}"))
    return pairs


def _rank(node: dict[str, Any], kept: set[Any], ratings: dict[str, int] | None) -> tuple[int, bool]:
    annotation = node.get("annotation")
    rating = _rating(annotation.get("rating")) if isinstance(annotation, dict) else None
    node_id = node.get("id")
    if rating is None and ratings and isinstance(node_id, str):
        rating = ratings.get(node_id)
    return rating or 0, node_id in kept


def _rating(value: Any) -> int | None:
    """A thumbs up (1) or down (-1); Open WebUI's RatingData allows the number or its string."""
    if isinstance(value, str) and value.strip() in ("1", "-1"):
        return int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value in (1, -1):
        return int(value)
    return None


def _branch_to(tree: dict[str, Any], node_id: str) -> list[Any]:
    """The messages from the root down to ``node_id``; empty when a parent is missing or there is a cycle."""
    branch: list[Any] = []
    seen: set[str] = set()
    current: Any = node_id
    while current is not None:
        node = tree.get(current) if isinstance(current, str) else None
        if not isinstance(node, dict) or current in seen:
            return []
        seen.add(current)
        branch.append(node)
        current = node.get("parentId")
    return branch[::-1]
