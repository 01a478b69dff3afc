"""ChatGPT's data export, ``conversations.json``: an array of ``{title, create_time, mapping: {id: {message,
parent, children}}, current_node}``.

The kept conversation is the path from ``current_node`` up to the root. Text parts are kept; other parts
(images, files) are attachments, each a counted skip. Hidden messages, empty ones and the tool traffic
of ChatGPT's own tools (browsing, code: messages to a recipient other than ``all`` and their ``tool``
answers) are dropped; a ``thoughts`` message becomes the thinking of the reply after it.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.conversations import Conversation, Message, SkippedRecord, json_type, loads_json
from orchestrator.errors import UsageError
from orchestrator.sources import MissingSource
from orchestrator.sources.filters import parse_time
from orchestrator.sources.trees import branch_to

HIDDEN_TYPES = {"user_editable_context", "model_editable_context", "reasoning_recap", "system_error"}


def read_chatgpt(path: str | Path) -> Iterator[Conversation | SkippedRecord]:
    """Yield each conversation of a ChatGPT export."""
    path = Path(path)
    for index, item in enumerate(export_items(path)):
        yield from _conversation(item, str(path), f"record {index}")


def export_items(path: Path) -> list[Any]:
    """The export's items, the file checked to be a ChatGPT export; a UsageError naming it otherwise."""
    if path.is_dir():
        hint = " (it holds conversations.json)" if (path / "conversations.json").is_file() else ""
        raise UsageError(f"{path}: a folder, not a ChatGPT conversations.json{hint}; give the file")
    if not path.is_file():
        raise MissingSource(f"{path}: no such file; give the conversations.json of a ChatGPT data export")
    try:
        data = loads_json(path.read_bytes().removeprefix(codecs.BOM_UTF8))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc}); give the conversations.json of a ChatGPT export") from None
    if not isinstance(data, list):
        raise UsageError(f"{path}: not a ChatGPT conversations.json (a JSON {json_type(data)}, not a list)")
    dicts = [item for item in data if isinstance(item, dict)]
    if dicts and not any(isinstance(item.get("mapping"), dict) for item in dicts):
        if any("chat" in item or "history" in item for item in dicts):
            raise UsageError(f"{path}: an Open WebUI export, not a ChatGPT one; give it as open_webui:{path}")
        raise UsageError(f"{path}: not a ChatGPT conversations.json (no item has a mapping)")
    return data


def _conversation(item: Any, source: str, where: str) -> Iterator[Conversation | SkippedRecord]:
    if not isinstance(item, dict) or not isinstance(item.get("mapping"), dict):
        yield SkippedRecord(source, where, "not a ChatGPT conversation", "expected an object with a mapping")
        return
    conv_id = str(item.get("id") or item.get("conversation_id") or where)
    where = f"{where} (conversation {conv_id})"
    nodes, problem = _kept_path(item["mapping"], item.get("current_node"))
    if problem == "cycle":
        yield SkippedRecord(source, where, "message tree has a cycle")
        return
    if problem:
        yield SkippedRecord(source, f"{where}, node {problem}", "missing parent message (kept the branch below it)")
    messages: list[Message] = []
    thinking: list[str] = []
    model = item.get("default_model_slug") if isinstance(item.get("default_model_slug"), str) else None
    for node in nodes:
        message = node.get("message")
        if not isinstance(message, dict):
            continue
        mid = message.get("id") or node.get("id")
        turn = _turn(message, thinking)
        if isinstance(turn, str):
            yield SkippedRecord(source, f"{where}, message {mid}", f"malformed message: {turn}")
            return
        text, role, attachments = turn
        for n in range(attachments):
            yield SkippedRecord(source, f"{where}, message {mid}, part {n}", "attachment (not text)")
        if role is None or not text.strip():
            continue
        slug = (message.get("metadata") or {}).get("model_slug") if isinstance(message.get("metadata"), dict) else None
        if role == "assistant" and isinstance(slug, str) and slug:
            model = slug
        joined = "\n\n".join(thinking) if role == "assistant" and thinking else None
        if role == "assistant":
            thinking.clear()
        messages.append(Message(role, text, thinking=joined))
    if not messages:
        yield SkippedRecord(source, where, "empty chat")
        return
    title = item.get("title")
    yield Conversation(
        id=conv_id,
        messages=messages,
        source=source,
        title=title if isinstance(title, str) else None,
        model=model,
        where=f"{source} {where}",
        created_at=parse_time(item.get("create_time")),
    )


def _kept_path(mapping: dict[str, Any], current: Any) -> tuple[list[dict[str, Any]], str | None]:
    """The nodes from the root to ``current_node``, and a problem: "cycle", a missing node's id, or None."""
    if current is None:  # no current node: the newest leaf
        leaves = [k for k, v in mapping.items() if isinstance(v, dict) and not v.get("children")]
        current = leaves[-1] if leaves else None
    return branch_to(mapping, current, "parent")


def _turn(message: dict[str, Any], thinking: list[str]) -> tuple[str, str | None, int] | str:
    """(text, role to keep it as or None to drop it, attachments), or what is wrong with the message."""
    author = message.get("author") if isinstance(message.get("author"), dict) else {}
    role = author.get("role")
    content = message.get("content") if isinstance(message.get("content"), dict) else {}
    kind = content.get("content_type")
    metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
    if kind == "thoughts":
        thoughts = content.get("thoughts") if isinstance(content.get("thoughts"), list) else []
        thinking.extend(t["content"] for t in thoughts if isinstance(t, dict) and isinstance(t.get("content"), str))
        return "", None, 0
    parts = content.get("parts")
    if parts is None:
        text = content.get("text") if isinstance(content.get("text"), str) else ""
        parts = [text]
    if not isinstance(parts, list):
        return f"parts are {json_type(parts)}, not a list"
    texts = [p for p in parts if isinstance(p, str)]
    attachments = len(parts) - len(texts)
    hidden = metadata.get("is_visually_hidden_from_conversation") or kind in HIDDEN_TYPES
    to_tool = message.get("recipient") not in (None, "all")
    if hidden or to_tool or role not in ("system", "user", "assistant"):
        return "", None, attachments
    return "\n".join(texts), role, attachments
