"""Make conversations ready to write: validate and repair them, redact their secrets, serialize them as
LLaMA-Factory ShareGPT lines and sign them for near-duplicate search, a chunk at a time.

LLaMA-Factory skips a malformed example with a log line and trains on fewer samples. Everything it
would skip is decided here instead: repaired when the repair cannot change meaning, otherwise
skipped, and both counted in the report. What is here depends only on its arguments and imports
nothing of the recipe (pydantic), so the export's worker processes (``export_pool``) start quickly
and prepare parts of a file exactly as the main process would; ``dataset`` deduplicates and writes.
"""

from __future__ import annotations

import array
import hashlib
import itertools
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from orchestrator import export_pool
from orchestrator.chat_templates import canonical_arguments, canonical_tools
from orchestrator.cleaning.dedupe import record_text, sign
from orchestrator.cleaning.redact import redact_conversations
from orchestrator.cleaning.screen import screen, screen_json_lines
from orchestrator.cleaning.tokens import may_exceed, measurer, sample_hash
from orchestrator.conversations import (
    Conversation,
    MalformedError,
    Message,
    SkippedRecord,
    ToolCall,
    check_tools,
    json_type,
    too_deep,
)
from orchestrator.errors import UsageError

THINK_OPEN, THINK_CLOSE = "<think>\n", "\n</think>\n\n"
# Several tool results in a row become one observation turn; LLaMA-Factory wraps the observation in
# <tool_response> tags, so joining with this separator yields Qwen3's own layout for parallel results.
TOOL_RESULT_JOIN = "\n</tool_response>\n<tool_response>\n"
_INLINE_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)
CHUNK = 256  # conversations repaired, screened for secrets and written per pass
LONG_MESSAGE_CHARS = 32_768  # a message this long is counted in the report (it is likely a pasted file)
DIGEST = 16  # bytes of a line's digest: identity, not security
_NO_FIXES: Counter = Counter()  # shared by every conversation that needed no repair: never changed


class Skip(Exception):
    """Raised by the repair steps when a conversation cannot be used; the message is the reason."""


def repair(conv: Conversation, *, keep_thinking: bool = True) -> tuple[list[Message], str, Counter]:
    """Return the conversation's turns (without system messages), its system prompt and the repairs made.

    Raises Skip when the conversation cannot be trained on.
    """
    plain = _plain_turns(conv)
    if plain is not None:
        return plain, conv.system or "", _NO_FIXES
    fixes: Counter = Counter()
    _check_shape(conv)
    for message in conv.messages:
        if message.role not in ("system", "user", "assistant", "tool"):
            raise Skip(f"unknown role '{message.role}'")
    turns = [_split_inline_thinking(m, fixes) for m in conv.messages]
    system_at = [i for i, m in enumerate(turns) if m.role == "system"]
    if system_at and system_at[-1] >= len(system_at):
        fixes["system message moved into the system prompt"] += 1
    system = conv.system or ""
    turns = [m for m in turns if m.role != "system"]
    if not keep_thinking and any(m.thinking for m in turns):
        fixes["thinking removed (template without thinking)"] += 1
        turns = [Message(m.role, m.content, None, m.tool_calls, m.tool_name) for m in turns]
    kept = [m for m in turns if not _is_empty(m)]
    if len(kept) != len(turns):
        fixes["empty turn dropped"] += len(turns) - len(kept)
    turns = _merge_same_role(kept, fixes)
    while turns and turns[0].role != "user":
        turns.pop(0)
        fixes["turn before the first user turn dropped"] += 1
    while turns and turns[-1].role == "user":
        turns.pop()
        fixes["trailing user turn dropped"] += 1
    if not any(m.role == "assistant" for m in turns):
        raise Skip("no assistant reply")
    _check_order(turns)
    return turns, system, fixes


def _plain_turns(conv: Conversation) -> list[Message] | None:
    """The turns of a conversation that needs no repair (leading system messages, then user and
    assistant text turns in turn, ending on the assistant); None when ``repair`` must look closer."""
    if conv.tools:
        return None
    messages = conv.messages
    start = 0
    while start < len(messages) and messages[start].role == "system":
        start += 1
    if (len(messages) - start) % 2 or start == len(messages):
        return None
    for index in range(start, len(messages)):
        m = messages[index]
        content = m.content
        if (
            type(m) is not Message
            or m.role != ("user" if (index - start) % 2 == 0 else "assistant")
            or type(content) is not str
            or not content
            or content[0].isspace()  # may be empty once stripped, or hold an inline <think> block
            or content[0] == "<"
            or m.thinking is not None
            or m.tool_calls
            or m.tool_name is not None
        ):
            return None
    for m in messages[:start]:
        if type(m) is not Message or type(m.content) is not str or m.thinking is not None or m.tool_calls:
            return None
    return messages[start:]


def _check_shape(conv: Conversation) -> None:
    """Conversations built in Python bypass the sources' checks: refuse here what would fail later."""
    try:
        check_tools(conv.tools)
    except MalformedError as exc:
        raise Skip(f"malformed tools: {exc}") from None
    for message in conv.messages:
        for key in ("role", "content", "thinking", "tool_name"):
            value = getattr(message, key)
            if not isinstance(value, str) and (key in ("role", "content") or value is not None):
                raise Skip(f"malformed message: {key} is {json_type(value)}, not text")
        for call in message.tool_calls:
            if not isinstance(call, ToolCall) or not isinstance(call.name, str) or not isinstance(call.arguments, dict):
                raise Skip("malformed message: a tool call is not a name with an arguments object")
            if too_deep(call.arguments):
                raise Skip("malformed message: tool-call arguments are nested too deep")


def _split_inline_thinking(message: Message, fixes: Counter) -> Message:
    """Some clients store the chain of thought inline in the content; move it to ``thinking``."""
    if message.role != "assistant" or message.thinking:
        return message
    match = _INLINE_THINK.match(message.content)
    if not match:
        return message
    fixes["inline <think> block moved to thinking"] += 1
    return Message(
        "assistant",
        message.content[match.end() :],
        match.group(1).strip() or None,
        message.tool_calls,
        message.tool_name,
    )


def _is_empty(message: Message) -> bool:
    if message.role == "tool":
        return False  # an empty tool result is still a result
    return not (message.content.strip() or (message.thinking or "").strip() or message.tool_calls)


def _merge_same_role(turns: list[Message], fixes: Counter) -> list[Message]:
    merged: list[Message] = []
    for message in turns:
        last = merged[-1] if merged else None
        if last is None or last.role != message.role or (last.role == "assistant" and last.tool_calls):
            merged.append(
                Message(message.role, message.content, message.thinking, list(message.tool_calls), message.tool_name)
            )
            continue
        fixes[f"consecutive {message.role} turns merged"] += 1
        joiner = TOOL_RESULT_JOIN if message.role == "tool" else "\n\n"
        last.content = joiner.join(p for p in (last.content, message.content) if p or message.role == "tool")
        last.thinking = "\n\n".join(p for p in (last.thinking, message.thinking) if p) or None
        last.tool_calls.extend(message.tool_calls)
    return merged


def _check_order(turns: list[Message]) -> None:
    """Turns must alternate user-side (user, tool) and assistant, and tool results follow a tool call."""
    for index, message in enumerate(turns):
        user_side = index % 2 == 0
        if user_side and message.role == "assistant" or not user_side and message.role != "assistant":
            raise Skip(f"role order: {message.role} at turn {index + 1}")
        if message.role == "tool" and not turns[index - 1].tool_calls:
            raise Skip("tool result without a tool call")


def to_sharegpt(turns: list[Message], system: str, tools: list[dict[str, Any]]) -> dict[str, Any]:
    """One LLaMA-Factory ShareGPT record (default tags: human, gpt, observation, function_call)."""
    out = []
    for message in turns:
        if message.role == "user":
            out.append({"from": "human", "value": message.content})
        elif message.role == "tool":
            out.append({"from": "observation", "value": message.content})
        else:
            value = f"{THINK_OPEN}{message.thinking.strip()}{THINK_CLOSE}" if message.thinking else ""
            if message.tool_calls:
                # Arguments and tools in the form Ollama hands its templates (sorted keys, Go numbers), so the
                # served prompt matches the trained one; text before the calls is kept as is, as Ollama keeps it.
                calls = [{"name": c.name, "arguments": canonical_arguments(c.arguments)} for c in message.tool_calls]
                text = message.content + "\n" if message.content else ""
                value += f"{text}<tool_call>{json.dumps(calls, ensure_ascii=False)}</tool_call>"
                out.append({"from": "function_call", "value": value})
            else:
                out.append({"from": "gpt", "value": value + message.content})
    tools_text = json.dumps(canonical_tools(tools), ensure_ascii=False) if tools else ""
    return {"conversations": out, "system": system, "tools": tools_text}


@dataclass(frozen=True)
class Options:
    """What preparing a conversation depends on, handed to the worker processes as it is."""

    redact: bool
    keep_thinking: bool
    near: tuple[int, int] | None  # the near-duplicate index's bands and rows
    cutoff_len: int | None
    tokens: tuple[str, bool] | None  # (template, enable_thinking) when token figures are made


@dataclass
class PreparedChunk:
    """A chunk of conversations made ready to write, in columns (cheap to hand between processes).

    The conversations that became lines are listed in input order by ``ids``, ``wheres`` and ``digests``
    (16 bytes each, joined); the lines themselves are joined in ``blob``, line i ending at ``ends[i]``; the
    sparse columns are keyed by a line's index. ``skips`` holds (index, reason, where) for each
    conversation that could not be used, the index being that of the next line, so the input order can
    be replayed. A plain record's id and place are its line number (an int), read with ``id`` and
    ``where`` against the chunk's ``path`` and ``stem``: ints and one bytes object pickle far faster
    than as many strings.
    """

    ids: list[str | int] = field(default_factory=list)
    wheres: list[str | int] = field(default_factory=list)
    path: str = ""  # the JSONL file of the plain records in the chunk
    stem: str = ""
    blob: bytes = b""
    ends: array.array = field(default_factory=lambda: array.array("Q"))
    digests: bytes = b""
    skips: list[tuple[int, str, str]] = field(default_factory=list)
    fixes: dict[int, Counter] = field(default_factory=dict)
    redacted: dict[int, Counter] = field(default_factory=dict)
    long_messages: list[int] = field(default_factory=list)  # lines holding a message over LONG_MESSAGE_CHARS
    exact: dict[int, int] = field(default_factory=dict)  # token counts of the lines that may exceed cutoff_len
    samples: dict[int, tuple] = field(default_factory=dict)  # (turns, system, tools) of the ones that may be sampled
    signed: Any = None  # the lines' near-duplicate signatures (a cleaning.dedupe.Signed), None without

    def id(self, index: int) -> str:
        key = self.ids[index]
        return f"{self.stem}:{key}" if type(key) is int else key

    def where(self, index: int) -> str:
        key = self.wheres[index]
        return f"{self.path} line {key}" if type(key) is int else key

    def digest_list(self) -> list[bytes]:
        digests = self.digests
        return [digests[at : at + DIGEST] for at in range(0, len(digests), DIGEST)]


class PlainRecord:
    """A JSONL record the export writes without reading it into a Conversation: what ``plain_contents``
    accepts. ``conversation()`` is what the general path reads of it, for when it must go that way."""

    __slots__ = ("part", "number", "record", "contents", "line")

    def __init__(self, part: Any, number: int, record: dict[str, Any], contents: list[str]) -> None:
        self.part, self.number, self.record, self.contents = part, number, record, contents
        self.line: bytes | None = None  # its JSONL line, once the screen has made it

    def conversation(self) -> Conversation:
        return self.part.parse(self.number, self.record)

    def dumps(self) -> bytes:
        """Its JSONL line: the bytes ``_dumps(to_sharegpt(...))`` makes of its turns on the general path,
        spliced from its texts; Skip when one cannot be JSON."""
        try:
            heads = itertools.cycle(_TURN_HEADS)
            turns = b"},".join([head + orjson.dumps(text) for head, text in zip(heads, self.contents, strict=False)])
        except TypeError as exc:  # orjson.JSONEncodeError: a lone surrogate
            raise _not_json(exc) from None
        return b'{"conversations":[' + turns + b'}],"system":"","tools":""}\n'

    def text(self) -> str:
        """``dedupe.record_text`` of its record."""
        return "\n".join(["", "", *self.contents])


# the opening of each turn of a plain record's line, user and assistant in turn
_TURN_HEADS = (b'{"from":"human","value":', b'{"from":"gpt","value":')


def plain_contents(record: Any) -> list[str] | None:
    """The texts of a record that needs nothing but writing: only bare ``{"role", "content"}`` messages,
    user and assistant in turn from a user turn to an assistant one, every text non-empty, starting with
    neither whitespace nor ``<``, and within LONG_MESSAGE_CHARS. Such a record passes every repair as
    it is and no filter but the message-length one can drop it; None for any other."""
    if type(record) is not dict or record.get("tools") is not None:
        return None
    messages = record.get("messages")
    if type(messages) is not list or not messages or len(messages) % 2:
        return None
    contents = []
    for index, message in enumerate(messages):
        if type(message) is not dict or len(message) != 2:
            return None
        content = message.get("content")
        if (
            message.get("role") != ("assistant" if index % 2 else "user")
            or type(content) is not str
            or not content
            or content[0].isspace()
            or content[0] == "<"
            or len(content) > LONG_MESSAGE_CHARS
        ):
            return None
        contents.append(content)
    return contents


def prepare_chunk(
    items: list[Conversation | SkippedRecord | PlainRecord], options: Options, sample_bound: int | None = None
) -> PreparedChunk:
    """Repair, redact (one screen pass for the whole chunk) and serialize, in input order; count the
    tokens of those that may exceed cutoff_len. A conversation keeps its turns for the token sample only
    when its hash is at most ``sample_bound`` (None: always). Depends on nothing but its arguments, so
    worker processes run it as the parent would. A PlainRecord the screen flags for a secret goes the
    general way."""
    if options.redact:
        items = _screen_plain(items)
    out = PreparedChunk()
    repaired = []
    for item in items:
        if type(item) is PlainRecord:
            repaired.append((item, None, None, None))
            continue
        if isinstance(item, SkippedRecord):
            out.skips.append((len(repaired), item.reason, f"{item.source} {item.record}"))
            continue
        try:
            turns, system, fixes = repair(item, keep_thinking=options.keep_thinking)
        except Skip as exc:
            out.skips.append((len(repaired), str(exc), item.where or item.id))
            continue
        repaired.append((item, fixes, turns, system))
    general = [(turns, system) for item, _, turns, system in repaired if type(item) is not PlainRecord]
    if options.redact:
        cleaned = iter(redact_conversations(general))
    else:
        cleaned = iter([(turns, system, None) for turns, system in general])
    skips, out.skips = out.skips, []
    texts, long, lines, digests = [], [], [], []
    part = next((item.part for item, *_ in repaired if type(item) is PlainRecord), None)
    if part is not None:  # the JSONL part of the chunk's plain records: their ids and places are ints
        out.path, out.stem = str(part.path), part.path.stem
    at = 0
    while at < len(repaired):
        while skips and skips[0][0] == at:
            out.skips.append((len(lines), *skips.pop(0)[1:]))
        item, fixes, *_ = repaired[at]
        plain = type(item) is PlainRecord
        if plain and item.part is part:  # the common case: a run of them, up to the next skip
            end, stop = at, skips[0][0] if skips else len(repaired)
            while end < stop and type(repaired[end][0]) is PlainRecord and repaired[end][0].part is part:
                end += 1
            _add_plain(
                [entry[0] for entry in repaired[at:end]], out, options, sample_bound, lines, digests, texts, long
            )
            at = end
            continue
        at += 1
        if plain:
            # of another part than the chunk's first plain record: named as the general path names it
            key = str(item.record.get("id") or f"{item.part.path.stem}:{item.number}")
            where = f"{item.part.path} line {item.number}"
        else:
            key, where = item.id, item.where or item.id
        try:
            if plain:
                turns, system, redacted, tools = None, "", None, []
                line = item.line or item.dumps()
            else:
                turns, system, redacted = next(cleaned)
                tools = item.tools
                line, record = _record_line(turns, system, tools)
        except Skip as exc:
            out.skips.append((len(lines), str(exc), where))
            continue
        index = len(lines)
        digest = hashlib.sha1(line).digest()[:DIGEST]  # SHA-1 runs in hardware here, twice blake2b
        out.ids.append(key)
        out.wheres.append(where)
        lines.append(line)
        digests.append(digest)
        if fixes:
            out.fixes[index] = fixes
        if redacted:
            out.redacted[index] = redacted
        if not plain and len(line) > LONG_MESSAGE_CHARS and any(len(m.content) > LONG_MESSAGE_CHARS for m in turns):
            out.long_messages.append(index)
        if options.tokens:
            sampled = sample_bound is None or sample_hash(digest) <= sample_bound
            size = len(item.contents) if plain else len(turns)
            exceeds = may_exceed(options.cutoff_len, len(line), size, tools)
            if sampled:  # a plain record's texts alone: Messages pickle slowly (tokens.template_messages)
                out.samples[index] = (item.contents if plain else turns, system, tools)
            if exceeds:
                long.append((index, (item.contents if plain else turns, system, tools)))
        if options.near:
            texts.append(item.text() if plain else record_text(record))
    out.skips += [(len(lines), *skip[1:]) for skip in skips]
    counter = measurer(*options.tokens) if long else None
    if counter is not None:
        out.exact = dict(zip([i for i, _ in long], counter.count([counter.render(*c) for _, c in long]), strict=True))
    out.signed = sign(texts, *options.near) if options.near else None
    out.blob, out.digests = b"".join(lines), b"".join(digests)
    out.ends = array.array("Q", itertools.accumulate(map(len, lines)))
    return out


def _add_plain(
    run: list[PlainRecord],
    out: PreparedChunk,
    options: Options,
    sample_bound: int | None,
    lines: list[bytes],
    digests: list[bytes],
    texts: list[str],
    long: list[tuple[int, tuple]],
) -> None:
    """What the loop of ``prepare_chunk`` does for each of a run of plain records of the chunk's part,
    done for the run at once: nothing of them is repaired or redacted, or long."""
    made, kept = [], []
    for plain in run:
        try:
            made.append(plain.line or plain.dumps())
        except Skip as exc:
            out.skips.append((len(lines) + len(made), str(exc), f"{out.path} line {plain.number}"))
            continue
        kept.append(plain)
    base = len(lines)
    lines += made
    signs = [hashlib.sha1(line).digest()[:DIGEST] for line in made]
    digests += signs
    out.ids += [str(own) if (own := plain.record.get("id")) else plain.number for plain in kept]
    out.wheres += [plain.number for plain in kept]
    if options.tokens:
        bound = None if sample_bound is None else sample_bound.to_bytes(8, "big")  # sample_hash, as bytes
        for index, (plain, line, digest) in enumerate(zip(kept, made, signs, strict=True), start=base):
            if bound is None or digest[:8] <= bound:
                out.samples[index] = (plain.contents, "", [])
            if may_exceed(options.cutoff_len, len(line), len(plain.contents), []):
                long.append((index, (plain.contents, "", [])))
    if options.near:
        texts += [plain.text() for plain in kept]


def _screen_plain(items: list[Any]) -> list[Any]:
    """``items`` with each PlainRecord the screen flags (it may hold a secret) read as a Conversation.
    The screen reads the JSONL lines they will be written as (made here, and kept), or their texts."""
    plains = [item for item in items if type(item) is PlainRecord]
    if not plains:
        return items
    for plain in plains:
        try:
            plain.line = plain.dumps()
        except Skip:
            plain.line = None
    flags = screen_json_lines([plain.line or b"" for plain in plains])
    if flags is None:
        texts = iter(screen([text for plain in plains for text in plain.contents]))
        flags = [any([next(texts) for _ in plain.contents]) for plain in plains]
    suspect = {id(plain) for plain, flag in zip(plains, flags, strict=True) if flag or plain.line is None}
    if not suspect:
        return items
    return [item.conversation() if id(item) in suspect else item for item in items]


def prepare_part(part: Any, options: Options, sample_bound: int | None) -> list[PreparedChunk]:
    """A worker's task: read one ``sources.SourcePart`` and prepare it, a chunk at a time."""
    return [prepare_chunk(chunk, options, sample_bound) for chunk in export_pool.batched(part_items(part), CHUNK)]


def part_items(part: Any) -> Iterator[Conversation | SkippedRecord | PlainRecord]:
    """The records of a ``sources.SourcePart``. Unless the source sets filters, a record that
    ``plain_contents`` accepts comes as a PlainRecord, sparing the Conversation the general path makes of
    it (a test holds the two paths to the same bytes)."""
    try:
        yield from part.read() if part.filtered() else _fast_items(part.part)
    except OSError as exc:  # the file changed under the export (removed, truncated, unreadable)
        raise UsageError(
            f"{part.part.path}: cannot be read ({exc.strerror or exc}); check the file and run again"
        ) from None


def _fast_items(jsonl: Any) -> Iterator[Conversation | SkippedRecord | PlainRecord]:
    """A JSONL part's records as ``SourcePart.read`` gives them without filters, plain ones as PlainRecord."""
    from orchestrator.sources.filters import apply_filters

    for number, record in jsonl.records():
        if type(record) is SkippedRecord:
            yield record
            continue
        contents = plain_contents(record)
        if contents is not None:
            yield PlainRecord(jsonl, number, record, contents)
        else:  # the message-length rule is the one filter a source without filters applies
            yield from apply_filters((jsonl.parse(number, record),), None)


def _record_line(turns: list[Message], system: str, tools: list[dict[str, Any]]) -> tuple[bytes, dict]:
    """The conversation as one JSONL line and its record; Skip when it cannot be one."""
    try:
        record = to_sharegpt(turns, system, tools)
    except MalformedError as exc:
        raise Skip(f"malformed tools: {exc}") from None
    except (TypeError, ValueError, RecursionError) as exc:  # tool calls json.dumps cannot write
        raise _not_json(exc) from None
    return _dumps(record), record


def _dumps(record: dict[str, Any]) -> bytes:
    """A ShareGPT record as one JSONL line; Skip when it cannot be one."""
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except (TypeError, ValueError, RecursionError) as exc:  # TypeError: orjson.JSONEncodeError
        raise _not_json(exc) from None


def _not_json(exc: Exception) -> Skip:
    if isinstance(exc, TypeError) and "surrogates" in str(exc):
        return Skip("text that is not valid Unicode (a lone surrogate)")
    return Skip("values that are not JSON data")
