"""Plain JSON / JSONL files: Ollama- or OpenAI-style ``{"messages": [...]}`` records and ShareGPT
``{"conversations": [{"from", "value"}]}`` records, one conversation per record.

A record that is not valid JSON or lacks the conversation shape is yielded as a ``SkippedRecord`` naming
the line (JSONL) or record (JSON) and the message; a .json file that cannot be parsed at all is one
``UsageError``. A UTF-8 byte order mark (as Windows editors write) is accepted.
"""

from __future__ import annotations

import codecs
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.conversations import (
    Conversation,
    MalformedError,
    Message,
    SkippedRecord,
    ToolCall,
    check_tools,
    json_type,
    loads_json,
)
from orchestrator.errors import UsageError
from orchestrator.sources import MissingSource

BLOCK = 8 << 20  # bytes read at a time when a JSONL file is cut into parts
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
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
        hint = f" (it holds {', '.join(inside[:3])}{', ...' if len(inside) > 3 else ''})" if inside else ""
        raise UsageError(f"{path}: is a folder, not a file of conversations{hint}; give the file")
    if not path.is_file():
        raise MissingSource(f"{path}: no such file; check the source's path (relative to the working directory)")
    if path.suffix == ".jsonl":
        yield from _read_jsonl(path)
    else:
        yield from _read_json(path)


def _read_jsonl(
    path: Path, offset: int = 0, count: int | None = None, first: int = 1
) -> Iterator[Conversation | SkippedRecord]:
    """The records of ``count`` lines (None: all) from byte ``offset``, where line number ``first`` starts."""
    source, stem = str(path), path.stem
    for number, record in _jsonl_records(path, offset, count, first):
        if type(record) is SkippedRecord:
            yield record
        else:
            yield _parse_record(record, source, f"line {number}", f"{stem}:{number}")


def _jsonl_records(path: Path, offset: int, count: int | None, first: int) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON value) for each non-blank line, or a SkippedRecord for an unreadable one."""
    source = str(path)
    with path.open("rb") as handle:
        handle.seek(offset)
        for number, raw in enumerate(itertools.islice(handle, count), start=first):
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            if not raw or raw.isspace():
                continue
            try:
                yield number, loads_json(raw)  # orjson checks the UTF-8 itself
            except ValueError as exc:
                yield number, _unreadable_line(source, f"line {number}", raw, exc)


@dataclass(frozen=True)
class JsonlPart:
    """Whole lines of a JSONL file, to be read on their own (in a worker process): ``count`` lines (None:
    to the end) from byte ``offset``, the first of them line number ``first``."""

    path: Path
    offset: int
    count: int | None
    first: int

    def read(self) -> Iterator[Conversation | SkippedRecord]:
        return _read_jsonl(self.path, self.offset, self.count, self.first)

    def records(self) -> Iterator[tuple[int, Any]]:
        """(line number, parsed JSON value or SkippedRecord), for a reader that looks at records itself."""
        return _jsonl_records(self.path, self.offset, self.count, self.first)

    def parse(self, number: int, record: Any) -> Conversation | SkippedRecord:
        """What ``read`` makes of the record on line ``number``."""
        return _parse_record(record, str(self.path), f"line {number}", f"{self.path.stem}:{number}")


def jsonl_parts(path: str | Path, part_bytes: int) -> Iterator[JsonlPart] | None:
    """A JSONL file cut at line ends into parts of about ``part_bytes`` (found as the file is read, so
    the first can be read while the rest are looked for); read in order they give the same records as
    ``read_file``. None when the file is not JSONL (or is missing: ``read_file`` says so)."""
    path = Path(path)
    if path.suffix != ".jsonl" or not path.is_file():
        return None
    return _cut(path, part_bytes)


def _cut(path: Path, part_bytes: int) -> Iterator[JsonlPart]:
    offset, lines, start, start_line = 0, 0, 0, 1
    with path.open("rb") as handle:
        while block := handle.read(BLOCK):
            end = offset + len(block)
            cut = block.rfind(b"\n")
            lines += block.count(b"\n")  # all of them up to ``cut``, the last
            if cut >= 0 and end - start >= part_bytes:  # a part ends at this block's last line end
                yield JsonlPart(path, start, lines - (start_line - 1), start_line)
                start, start_line = offset + cut + 1, lines + 1
            offset = end
    if offset > start:
        yield JsonlPart(path, start, None, start_line)  # to the end of the file


def _unreadable_line(source: str, where: str, raw: bytes, exc: ValueError) -> SkippedRecord:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return SkippedRecord(source, where, "invalid UTF-8", str(bad))
    return SkippedRecord(source, where, "invalid JSON", str(exc))


def _read_json(path: Path) -> Iterator[Conversation | SkippedRecord]:
    try:
        data = loads_json(path.read_bytes().removeprefix(codecs.BOM_UTF8).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not valid UTF-8 ({exc}); re-save the file as UTF-8") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc}); fix the file or convert it to JSONL") from None
    records = data if isinstance(data, list) else [data]
    for index, record in enumerate(records):
        yield _parse_record(record, str(path), f"record {index}", f"{path.stem}:{index}")


def _parse_record(record: Any, source: str, where: str, default_id: str) -> Conversation | SkippedRecord:
    if type(record) is dict and record.get("tools") is None and type(record.get("messages")) is list:
        plain = _plain_messages(record["messages"])
        if plain is not None:  # the common record, read as the general path below would read it
            return Conversation(
                id=str(record.get("id") or default_id),
                messages=plain,
                source=source,
                title=record.get("title"),
                model=record.get("model"),
                where=f"{source} {where}",
            )
    if not isinstance(record, dict):
        return SkippedRecord(source, where, "not a conversation object", f"got {json_type(record)}")
    try:
        tools = _tools(record.get("tools"))
    except MalformedError as exc:
        return SkippedRecord(source, where, f"malformed tools: {exc}")
    if isinstance(record.get("messages"), list):
        turns, read = record["messages"], _message
    elif isinstance(record.get("conversations"), list):
        turns, read = record["conversations"], _sharegpt_message
    else:
        return SkippedRecord(source, where, "no messages", "expected a 'messages' or 'conversations' list")
    messages = []
    for index, turn in enumerate(turns, start=1):
        try:
            messages.append(read(turn))
        except MalformedError as exc:
            return SkippedRecord(source, f"{where}, message {index}", f"malformed message: {exc}")
    system = record.get("system") if read is _sharegpt_message else None
    if system is not None and not isinstance(system, str):
        return SkippedRecord(source, where, f"malformed record: system is {json_type(system)}, not text")
    if system:
        messages.insert(0, Message("system", system))
    return Conversation(
        id=str(record.get("id") or default_id),
        messages=messages,
        tools=tools,
        source=source,
        title=record.get("title"),
        model=record.get("model"),
        where=f"{source} {where}",
    )


def _plain_messages(turns: list[Any]) -> list[Message] | None:
    """The messages when every one is a bare ``{"role", "content"}`` pair of strings, else None."""
    messages = []
    for turn in turns:
        if type(turn) is not dict or len(turn) != 2:
            return None
        role, content = turn.get("role"), turn.get("content")
        if type(role) is not str or type(content) is not str:
            return None
        messages.append(Message(role, content))
    return messages


def _tools(tools: Any) -> list[dict[str, Any]]:
    if isinstance(tools, str):  # LLaMA-Factory's ShareGPT keeps tools as a JSON string
        try:
            tools = loads_json(tools) if tools.strip() else None
        except ValueError:
            raise MalformedError("tools is a string that is not JSON") from None
    return check_tools(tools)


def _message(data: Any) -> Message:
    if type(data) is dict and type(data.get("content")) is list:  # OpenAI content parts: the text ones
        parts = data["content"]
        if not all(isinstance(p, dict) for p in parts):
            raise MalformedError("a content part is not an object")
        texts = [p.get("text") for p in parts if p.get("type", "text") == "text"]
        if not all(isinstance(t, str) for t in texts):
            raise MalformedError("a text part of the content is not text")
        data = {**data, "content": "".join(texts)}
    return Message.from_ollama(data)


def _sharegpt_message(data: Any) -> Message:
    if not isinstance(data, dict):
        raise MalformedError(f"a turn is {json_type(data)}, not an object")
    tag = data.get("from", data.get("role"))
    value = data.get("value", data.get("content"))
    if value is not None and not isinstance(value, str):
        raise MalformedError(f"value is {json_type(value)}, not text")
    if not isinstance(tag, str):
        raise MalformedError(f"from is {json_type(tag)}, not text")
    if tag == "function_call":
        try:
            calls = loads_json(value or "")
        except ValueError:
            raise MalformedError("a function_call value is not JSON") from None
        calls = calls if isinstance(calls, list) else [calls]
        return Message("assistant", "", tool_calls=[ToolCall.from_ollama(c) for c in calls])
    return Message(SHAREGPT_ROLES.get(tag, tag), value or "")
