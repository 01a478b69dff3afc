"""Validate, repair and write conversations as a LLaMA-Factory ShareGPT dataset, with a report.

LLaMA-Factory skips a malformed example with a log line and trains on fewer samples. Everything it
would skip is decided here instead: repaired when the repair cannot change meaning, otherwise
skipped, and both counted in the report.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from orchestrator import export_pool
from orchestrator.chat_templates import canonical_arguments, canonical_tools
from orchestrator.cleaning.dedupe import NearDuplicates, record_text, sign
from orchestrator.cleaning.redact import check_available, redact_conversations
from orchestrator.cleaning.screen import screen
from orchestrator.cleaning.split import EVAL_SUFFIX, Splitter
from orchestrator.cleaning.tokens import TokenCounter, may_exceed, measurer, sample_hash
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
from orchestrator.dataset_info import (
    INFO_FILE,
    LOCK_FILE,
    check_name,
    dataset_entry,
    ranking_entry,
    read_dataset_info,
)
from orchestrator.errors import UsageError
from orchestrator.export_report import LONG_MESSAGE_CHARS, NEAR_DUPLICATES, ExportReport
from orchestrator.fsutil import atomic_path, file_lock, write_json
from orchestrator.recipe import DataSpec, TrainSpec
from orchestrator.sources import Sources

THINK_OPEN, THINK_CLOSE = "<think>\n", "\n</think>\n\n"
# Several tool results in a row become one observation turn; LLaMA-Factory wraps the observation in
# <tool_response> tags, so joining with this separator yields Qwen3's own layout for parallel results.
TOOL_RESULT_JOIN = "\n</tool_response>\n<tool_response>\n"
_INLINE_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)
CHUNK = 256  # conversations repaired, screened for secrets and written per pass
REPORT_SUFFIX = ".report.json"  # NAME.report.json, beside NAME.jsonl
# The recipe's defaults, so an export from Python or `orchestrator data export` cleans as a run does.
REDACT = DataSpec.model_fields["redact"].default
CUTOFF_LEN = TrainSpec.model_fields["cutoff_len"].default
EVAL_SPLIT = DataSpec.model_fields["eval_split"].default


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


def export_dataset(
    items: Iterable[Conversation | SkippedRecord],
    name: str,
    dataset_dir: str | Path = "data",
    *,
    keep_thinking: bool = True,
    redact: bool = REDACT,
    near_duplicates: float | None = NEAR_DUPLICATES,
    cutoff_len: int | None = CUTOFF_LEN,
    template: str = "qwen3",
    enable_thinking: bool | None = None,
    eval_split: float = EVAL_SPLIT,
    preferences: bool = False,
) -> ExportReport:
    """Write ``<dataset_dir>/<name>.jsonl``, its dataset_info.json entry and ``<name>.report.json``.

    Secrets are replaced by placeholders (``redact``), exact and near duplicates (MinHash similarity at
    least ``near_duplicates``; None: off) dropped, and the written conversations measured in Qwen3 tokens
    as ``template`` renders them (``enable_thinking``: default ``keep_thinking``) against ``cutoff_len``.
    ``eval_split`` (a share in (0, 1) or a count) holds conversations out in ``<name>_eval.jsonl``, its own
    dataset_info.json entry, chosen by the hash of each conversation's id (see ``cleaning.split``).
    ``preferences`` also writes the conversations' preference pairs as the ranking dataset ``<name>_pref``.

    A dataset_info.json that is not a JSON object of datasets stops the export before anything is
    replaced: it is checked before the sources are read and again, under its lock, before NAME.jsonl
    replaces the old file. Both files are replaced while that lock is held, so parallel exports into
    one folder keep each other's entries.
    """
    check_name(name)
    dataset_dir = Path(dataset_dir)
    info_path = dataset_dir / INFO_FILE
    read_dataset_info(info_path)  # fail before the (possibly long) read of the sources
    if redact:
        check_available()
    thinking = keep_thinking if enable_thinking is None else enable_thinking
    near = NearDuplicates(near_duplicates) if near_duplicates is not None else None
    tokens = TokenCounter(template, thinking, cutoff_len)
    options = Options(
        redact,
        keep_thinking,
        (near.bands, near.rows) if near else None,
        cutoff_len,
        (template, thinking) if tokens.enabled else None,
    )
    steps = _Steps(options, near, tokens)
    # Sources are read by parts (see prepare_part), in worker processes when their JSONL files are large;
    # any other iterable (and an export with preference pairs, which need each Conversation) as it is.
    by_parts = isinstance(items, Sources) and not preferences
    workers = _workers_for(items) if by_parts else 0
    with export_pool.PreparePool(workers) if workers else contextlib.nullcontext() as steps.pool:
        if by_parts:
            steps.parts = items.parts(export_pool.PART_BYTES)  # type: ignore[attr-defined]
            if steps.parts and not steps.parts[0][0]:  # the first source fails before any folder is made
                steps.parts[0] = (False, _peeked(steps.parts[0][1]))
        else:
            items = _peeked(items)
        from orchestrator.preferences import PREF_SUFFIX, PairWriter

        eval_name, pref_name = f"{name}{EVAL_SUFFIX}", f"{name}{PREF_SUFFIX}"
        wanted = [name] + [eval_name] * bool(eval_split) + [pref_name] * preferences
        targets = {entry: dataset_dir / f"{entry}.jsonl" for entry in wanted}
        report = ExportReport(name=name, redact=redact, near_threshold=near_duplicates, template=template)
        with contextlib.ExitStack() as locked:
            with contextlib.ExitStack() as files:
                handles = {entry: _open_target(files, target) for entry, target in targets.items()}
                steps.splitter = Splitter(eval_split, handles[name], handles.get(eval_name))
                if preferences:
                    steps.pairs = PairWriter(handles[pref_name], redact=redact, keep_thinking=keep_thinking)
                _write_records(items, report, steps)
                steps.splitter.finish()
                report.eval_written = steps.splitter.eval_written
                if steps.pairs:
                    report.pairs, report.pairs_skipped = steps.pairs.written, steps.pairs.skipped
                for handle in handles.values():
                    handle.flush()
                    os.fsync(handle.fileno())
                _check_written(name, report, eval_split, preferences)
                # Exports into one folder read, change and write dataset_info.json one at a time, so none loses
                # another's entry; held until it is written. The lock file stays (removing it would race).
                locked.enter_context(file_lock(dataset_dir / LOCK_FILE, what=str(info_path)))
                info = read_dataset_info(info_path)
            for entry, target in targets.items():  # every file is in place: register them
                info[entry] = ranking_entry(target.name) if entry == pref_name else dataset_entry(target.name)
            write_json(info_path, info)
    report.dataset_path, report.info_path = targets[name], info_path
    report.eval_path, report.pref_path = targets.get(eval_name), targets.get(pref_name)
    report.tokens = steps.tokens.summary()  # loads the tokenizer, if nothing did: then it may turn out unusable
    report.tokens_unavailable = steps.tokens.unavailable
    report.report_path = dataset_dir / f"{name}{REPORT_SUFFIX}"
    write_json(report.report_path, report.to_dict())
    return report


@dataclass
class _Steps:
    """What the export does to each conversation besides repairing it, and where it reads them."""

    options: Options
    near: NearDuplicates | None
    tokens: TokenCounter
    seen: set[bytes] = field(default_factory=set)
    splitter: Splitter | None = None
    pairs: Any = None  # a preferences.PairWriter when preference pairs are exported
    parts: list | None = None  # Sources.parts, when worker processes read the large JSONL files
    pool: Any = None  # their export_pool.PreparePool


def _workers_for(items: Any) -> int:
    """How many worker processes to prepare ``items`` with: none unless it holds large JSONL files
    (a ``Sources`` whose files add up to PARALLEL_BYTES) and this process may use several CPUs."""
    if not isinstance(items, Sources) or items.file_bytes() < export_pool.PARALLEL_BYTES:
        return 0
    workers = export_pool.worker_count()
    return workers if workers > 1 else 0


def _peeked(items: Iterable[Conversation | SkippedRecord]) -> Iterator[Conversation | SkippedRecord]:
    """``items``, its first one read now: a source that cannot be read at all fails here."""
    items = iter(items)
    first = next(items, None)
    return itertools.chain([] if first is None else [first], items)


def _open_target(files: contextlib.ExitStack, target: Path) -> Any:
    """A binary handle on ``target``'s temporary name; renamed into place when ``files`` closes cleanly."""
    tmp = files.enter_context(atomic_path(target))
    return files.enter_context(open(tmp, "wb"))


def _check_written(name: str, report: ExportReport, eval_split: float, preferences: bool) -> None:
    if report.written == 0:
        raise UsageError(_nothing_written(name, report))
    if preferences and not report.pairs:
        raise UsageError(
            f"data.preferences: none of the {report.read} conversations read holds a usable preference pair "
            "(rate answers up or down, or regenerate them, in Open WebUI); nothing was written"
        )
    if not eval_split:
        return
    if report.eval_written == 0:
        raise UsageError(
            f"data.eval_split: {eval_split} holds out none of the {report.written} conversations written; "
            "give a count instead (e.g. eval_split: 1); nothing was written"
        )
    if report.eval_written == report.written:
        raise UsageError(
            f"data.eval_split: {eval_split} holds out all {report.written} conversations written, leaving "
            "none to train on; hold out fewer; nothing was written"
        )


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

    The conversations that became lines are listed in input order by ``ids``, ``wheres`` and ``digests``;
    the lines themselves are joined in ``blob``, line i ending at ``ends[i]``; the sparse columns are keyed
    by a line's index. ``skips`` holds (index, reason, where)
    for each conversation that could not be used, the index being that of the next line, so the input
    order can be replayed.
    """

    ids: list[str] = field(default_factory=list)
    wheres: list[str] = field(default_factory=list)
    blob: bytes = b""
    ends: list[int] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)
    skips: list[tuple[int, str, str]] = field(default_factory=list)
    fixes: dict[int, Counter] = field(default_factory=dict)
    redacted: dict[int, Counter] = field(default_factory=dict)
    long_messages: list[int] = field(default_factory=list)  # lines holding a message over LONG_MESSAGE_CHARS
    exact: dict[int, int] = field(default_factory=dict)  # token counts of the lines that may exceed cutoff_len
    samples: dict[int, tuple] = field(default_factory=dict)  # (turns, system, tools) of the ones that may be sampled
    signed: Any = None  # the lines' near-duplicate signatures (a cleaning.dedupe.Signed), None without


class PlainRecord:
    """A JSONL record the export writes without reading it into a Conversation: what ``plain_contents``
    accepts. ``conversation()`` is what the general path reads of it, for when it must go that way."""

    __slots__ = ("part", "number", "record", "contents")

    def __init__(self, part: Any, number: int, record: dict[str, Any], contents: list[str]) -> None:
        self.part, self.number, self.record, self.contents = part, number, record, contents

    def conversation(self) -> Conversation:
        return self.part.parse(self.number, self.record)

    @property
    def id(self) -> str:
        return str(self.record.get("id") or f"{self.part.path.stem}:{self.number}")

    @property
    def where(self) -> str:
        return f"{self.part.path} line {self.number}"

    def turns(self) -> list[Message]:
        return [Message("assistant" if i % 2 else "user", text) for i, text in enumerate(self.contents)]

    def sharegpt(self) -> dict[str, Any]:
        """``to_sharegpt`` of its turns, as the general path builds it."""
        turns = [{"from": "gpt" if i % 2 else "human", "value": text} for i, text in enumerate(self.contents)]
        return {"conversations": turns, "system": "", "tools": ""}


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
    texts, long, lines = [], [], []
    for at, (item, fixes, *_) in enumerate(repaired):
        while skips and skips[0][0] == at:
            out.skips.append((len(lines), *skips.pop(0)[1:]))
        plain = type(item) is PlainRecord
        where = item.where if plain else item.where or item.id
        try:
            if plain:
                turns, system, redacted, tools = None, "", None, []
                record = item.sharegpt()
                line = _dumps(record)
            else:
                turns, system, redacted = next(cleaned)
                tools = item.tools
                line, record = _record_line(turns, system, tools)
        except Skip as exc:
            out.skips.append((len(lines), str(exc), where))
            continue
        index = len(lines)
        digest = hashlib.sha1(line).digest()[:16]  # identity, not security: SHA-1 runs in hardware, twice blake2b
        out.ids.append(item.id)
        out.wheres.append(where)
        lines.append(line)
        out.digests.append(digest)
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
            if plain and (sampled or exceeds):
                turns = item.turns()
            if sampled:
                out.samples[index] = (turns, system, tools)
            if exceeds:
                long.append((index, (turns, system, tools)))
        if options.near:
            texts.append(record_text(record))
    out.skips += [(len(lines), *skip[1:]) for skip in skips]
    counter = measurer(*options.tokens) if long else None
    if counter is not None:
        out.exact = dict(zip([i for i, _ in long], counter.count([counter.render(*c) for _, c in long]), strict=True))
    out.signed = sign(texts, *options.near) if options.near else None
    out.blob, out.ends = b"".join(lines), list(itertools.accumulate(map(len, lines)))
    return out


def _screen_plain(items: list[Any]) -> list[Any]:
    """``items`` with each PlainRecord the screen flags (it may hold a secret) read as a Conversation."""
    plains = [item for item in items if type(item) is PlainRecord]
    if not plains:
        return items
    flags = iter(screen([text for plain in plains for text in plain.contents]))
    suspect = {id(plain) for plain in plains if any([next(flags) for _ in plain.contents])}
    if not suspect:
        return items
    return [item.conversation() if id(item) in suspect else item for item in items]


def prepare_part(part: Any, options: Options, sample_bound: int | None) -> list[PreparedChunk]:
    """A worker's task: read one ``sources.SourcePart`` and prepare it, a chunk at a time."""
    with _reading(part):
        return [prepare_chunk(chunk, options, sample_bound) for chunk in export_pool.batched(part_items(part), CHUNK)]


def part_items(part: Any) -> Iterator[Conversation | SkippedRecord | PlainRecord]:
    """The records of a ``sources.SourcePart``. Unless the source sets filters, a record that
    ``plain_contents`` accepts comes as a PlainRecord, sparing the Conversation the general path makes of
    it (a test holds the two paths to the same bytes)."""
    return part.read() if part.filtered() else _fast_items(part.part)


@contextlib.contextmanager
def _reading(part: Any) -> Iterator[None]:
    try:
        yield
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


def _write_records(items: Iterable[Conversation | SkippedRecord], report: ExportReport, steps: _Steps) -> None:
    # The export keeps hundreds of thousands of objects alive (digests, sketches, the token sample) and
    # makes no reference cycles, so the cyclic collector would only walk them again and again (a fifth
    # of an export with near duplicates); it is paused meanwhile.
    collecting = gc.isenabled()
    gc.disable()
    try:
        parts = steps.parts
        if parts is None:
            _prepare_here(items, report, steps)
        else:
            for pooled, part in parts:
                if pooled and steps.pool:  # the parts of a large JSONL file, read by the worker processes
                    # the tokenizer the summary needs is loaded while they work on the first parts
                    for chunk in steps.pool.prepare(part, steps.options, steps.tokens.bound, steps.tokens.load):
                        _commit(chunk, report, steps)
                elif pooled:  # the same, here
                    for source_part in part:
                        with _reading(source_part):
                            for chunk in export_pool.batched(part_items(source_part), CHUNK):
                                _commit(prepare_chunk(chunk, steps.options, steps.tokens.bound()), report, steps)
                else:
                    _prepare_here(part, report, steps)
    finally:
        if collecting:
            gc.enable()


def _prepare_here(items: Iterable[Conversation | SkippedRecord], report: ExportReport, steps: _Steps) -> None:
    for chunk in export_pool.batched(items, CHUNK):
        if steps.pairs:
            for item in chunk:
                if isinstance(item, Conversation):
                    steps.pairs.add(item)
        _commit(prepare_chunk(chunk, steps.options, steps.tokens.bound()), report, steps)


def _commit(chunk: PreparedChunk, report: ExportReport, steps: _Steps) -> None:
    """Deduplicate a prepared chunk against everything written before it, and write it, in order."""
    digests = chunk.digests
    report.read += len(digests) + len(chunk.skips)
    if not chunk.skips and steps.seen.isdisjoint(digests) and len(set(digests)) == len(digests):
        steps.seen.update(digests)  # the common chunk: nothing skipped, no exact duplicate
        chosen = list(range(len(digests)))
    else:
        chosen = _unique(chunk, report, steps.seen)
    near = steps.near.seen_signed(chunk.signed, chosen) if steps.near else None
    if near is not None and any(near):
        for index in itertools.compress(chosen, near):
            report.near_duplicates += 1
            report.skip("near-duplicate conversation", chunk.wheres[index])
        chosen = list(itertools.compress(chosen, [not duplicate for duplicate in near]))
    kept = set(chosen) if len(chosen) < len(digests) else None  # None: every line
    for column, into in ((chunk.fixes, report.repaired), (chunk.redacted, report.redacted)):
        for index, counts in column.items():
            if kept is None or index in kept:
                into.update(counts)
    report.long_messages += sum(1 for index in chunk.long_messages if kept is None or index in kept)
    steps.splitter.write_lines(chunk.ids, chunk.blob, chunk.ends, None if kept is None else chosen)
    report.written += len(chosen)
    steps.tokens.add_chunk(chosen, digests, chunk.exact, chunk.samples)


def _unique(chunk: PreparedChunk, report: ExportReport, seen: set[bytes]) -> list[int]:
    """The indexes of the chunk's lines that are no exact duplicate, reporting the skips in input order."""
    skips = iter(chunk.skips)
    skip = next(skips, None)
    chosen = []
    for index, digest in enumerate([*chunk.digests, None]):
        while skip is not None and skip[0] == index:
            report.skip(skip[1], skip[2])
            skip = next(skips, None)
        if digest is None:
            break
        if digest in seen:
            report.exact_duplicates += 1
            report.skip("duplicate conversation", chunk.wheres[index])
            continue
        seen.add(digest)
        chosen.append(index)
    return chosen


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


def _nothing_written(name: str, report: ExportReport) -> str:
    which = (
        "the 1 conversation read cannot" if report.read == 1 else f"none of the {report.read} conversations read can"
    )
    return f"dataset {name}: {which} be trained on ({_reasons(report)}); nothing was written"


def _reasons(report: ExportReport) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in report.skipped.most_common()) or "no input"
