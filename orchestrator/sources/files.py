"""Plain JSON / JSONL files: Ollama- or OpenAI-style ``{"messages": [...]}`` records and ShareGPT
``{"conversations": [{"from", "value"}]}`` records, one conversation per record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.conversations import Conversation, Message, SkippedRecord, ToolCall
from orchestrator.errors import UsageError

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "observation": "tool",
    "tool": "tool",
    "function_call": "assistant",
}


def read_file(path: str | Path) -> Iterator[Conversation | SkippedRecord]:
    """Yield the conversations in a .json or .jsonl file, and a SkippedRecord for each bad record."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file; check the source's path (relative to the working directory)")
    if path.suffix == ".jsonl":
        yield from _read_jsonl(path)
    else:
        yield from _read_json(path)


def _read_jsonl(path: Path) -> Iterator[Conversation | SkippedRecord]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"line {number}"
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield SkippedRecord(str(path), where, "invalid UTF-8", str(exc))
                continue
            except ValueError as exc:
                yield SkippedRecord(str(path), where, "invalid JSON", str(exc))
                continue
            yield _parse_record(record, str(path), where, f"{path.stem}:{number}")


def _read_json(path: Path) -> Iterator[Conversation | SkippedRecord]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not valid UTF-8 ({exc}); re-save the file as UTF-8") from exc
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc}); fix the file or convert it to JSONL") from exc
    records = data if isinstance(data, list) else [data]
    for index, record in enumerate(records):
        yield _parse_record(record, str(path), f"record {index}", f"{path.stem}:{index}")


def _parse_record(record: Any, source: str, where: str, default_id: str) -> Conversation | SkippedRecord:
    if not isinstance(record, dict):
        return SkippedRecord(source, where, "not a conversation object", f"got {type(record).__name__}")
    conv_id = str(record.get("id") or default_id)
    tools = record.get("tools") or []
    if isinstance(tools, str):
        try:
            tools = json.loads(tools) if tools.strip() else []
        except ValueError:
            return SkippedRecord(source, where, "invalid tools JSON", tools[:80])
    try:
        if isinstance(record.get("messages"), list):
            messages = [_message(m) for m in record["messages"]]
        elif isinstance(record.get("conversations"), list):
            messages = [_sharegpt_message(m) for m in record["conversations"]]
            if record.get("system"):
                messages.insert(0, Message("system", str(record["system"])))
        else:
            return SkippedRecord(source, where, "no messages", "expected a 'messages' or 'conversations' list")
    except (TypeError, ValueError, AttributeError) as exc:
        return SkippedRecord(source, where, "malformed message", str(exc))
    return Conversation(
        id=conv_id,
        messages=messages,
        tools=list(tools),
        source=source,
        title=record.get("title"),
        model=record.get("model"),
    )


def _message(data: Any) -> Message:
    if not isinstance(data, dict):
        raise TypeError(f"a message must be an object, got {type(data).__name__}")
    content = data.get("content")
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    message = Message.from_ollama({**data, "content": content})
    if not isinstance(message.content, str):
        raise TypeError(f"content must be text, got {type(message.content).__name__}")
    return message


def _sharegpt_message(data: Any) -> Message:
    if not isinstance(data, dict):
        raise TypeError(f"a turn must be an object, got {type(data).__name__}")
    tag = data.get("from", data.get("role"))
    value = data.get("value", data.get("content")) or ""
    role = SHAREGPT_ROLES.get(tag, str(tag))
    if tag == "function_call":
        calls = json.loads(value)
        calls = calls if isinstance(calls, list) else [calls]
        return Message("assistant", "", tool_calls=[ToolCall.from_ollama(c) for c in calls])
    return Message(role, str(value))
