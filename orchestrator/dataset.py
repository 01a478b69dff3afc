"""Validate, repair and write conversations as a LLaMA-Factory ShareGPT dataset, with a report.

LLaMA-Factory skips a malformed example with a log line and trains on fewer samples. Everything it
would skip is decided here instead: repaired when the repair cannot change meaning, otherwise
skipped, and both counted in the report.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.chat_templates import canonical_arguments, canonical_tools
from orchestrator.conversations import Conversation, Message, SkippedRecord
from orchestrator.errors import UsageError
from orchestrator.fsutil import atomic_open, write_json

THINK_OPEN, THINK_CLOSE = "<think>\n", "\n</think>\n\n"
# Several tool results in a row become one observation turn; LLaMA-Factory wraps the observation in
# <tool_response> tags, so joining with this separator yields Qwen3's own layout for parallel results.
TOOL_RESULT_JOIN = "\n</tool_response>\n<tool_response>\n"
LONG_MESSAGE_CHARS = 32_768
_INLINE_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Skip(Exception):
    """Raised by the repair steps when a conversation cannot be used; the message is the reason."""


@dataclass
class ExportReport:
    name: str
    dataset_path: Path | None = None
    info_path: Path | None = None
    read: int = 0
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    long_messages: int = 0

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 3:
            self.examples[reason].append(where)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dataset": str(self.dataset_path) if self.dataset_path else None,
            "read": self.read,
            "written": self.written,
            "skipped": dict(self.skipped),
            "repaired": dict(self.repaired),
            "examples": self.examples,
            "long_messages": self.long_messages,
        }

    def lines(self) -> list[str]:
        """The report as human-readable lines."""
        skipped = sum(self.skipped.values())
        out = [f"dataset {self.name}: {self.read} conversations read, {self.written} written, {skipped} skipped"]
        for reason, count in self.skipped.most_common():
            out.append(f"  skipped {count:>5}  {reason} (e.g. {', '.join(self.examples.get(reason, []))})")
        for kind, count in self.repaired.most_common():
            out.append(f"  repaired {count:>4}  {kind}")
        if self.long_messages:
            out.append(
                f"  note: {self.long_messages} conversations hold a message over {LONG_MESSAGE_CHARS:,} "
                "characters; LLaMA-Factory cuts each example at cutoff_len tokens"
            )
        if self.dataset_path:
            out.append(f"  wrote {self.dataset_path} and the '{self.name}' entry of {self.info_path}")
        return out


def repair(conv: Conversation, *, keep_thinking: bool = True) -> tuple[list[Message], str, Counter]:
    """Return the conversation's turns (without system messages), its system prompt and the repairs made.

    Raises Skip when the conversation cannot be trained on.
    """
    fixes: Counter = Counter()
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


def dataset_entry(file_name: str) -> dict[str, Any]:
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
    }


def update_dataset_info(dataset_dir: Path, name: str, entry: dict[str, Any]) -> Path:
    """Add or replace one entry of dataset_info.json, leaving the others untouched."""
    info_path = dataset_dir / "dataset_info.json"
    info: dict[str, Any] = {}
    if info_path.exists():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise UsageError(f"{info_path}: not valid JSON ({exc}); fix or remove it, nothing was changed") from exc
        if not isinstance(info, dict):
            raise UsageError(f"{info_path}: expected a JSON object of datasets; fix or remove it")
    info[name] = entry
    return write_json(info_path, info)


def export_dataset(
    items: Iterable[Conversation | SkippedRecord],
    name: str,
    dataset_dir: str | Path = "data",
    *,
    keep_thinking: bool = True,
) -> ExportReport:
    """Write ``<dataset_dir>/<name>.jsonl`` and its dataset_info.json entry; return the report."""
    if not NAME_PATTERN.match(name):
        raise UsageError(f"dataset name '{name}' is not allowed; use letters, digits, '_', '-' and '.'")
    dataset_dir = Path(dataset_dir)
    report = ExportReport(name=name)
    seen: set[str] = set()
    target = dataset_dir / f"{name}.jsonl"
    with atomic_open(target) as handle:
        for item in items:
            report.read += 1
            if isinstance(item, SkippedRecord):
                report.skip(item.reason, f"{item.source} {item.record}")
                continue
            try:
                turns, system, fixes = repair(item, keep_thinking=keep_thinking)
            except Skip as exc:
                report.skip(str(exc), item.id)
                continue
            record = to_sharegpt(turns, system, item.tools)
            line = json.dumps(record, ensure_ascii=False)
            digest = hashlib.sha256(line.encode("utf-8")).hexdigest()
            if digest in seen:
                report.skip("duplicate conversation", item.id)
                continue
            seen.add(digest)
            report.repaired.update(fixes)
            report.long_messages += any(len(m.content) > LONG_MESSAGE_CHARS for m in turns)
            handle.write(line + "\n")
            report.written += 1
        if report.written == 0:
            raise UsageError(
                f"dataset {name}: none of the {report.read} conversations read can be trained on "
                f"({_reasons(report)}); nothing was written"
            )
    report.dataset_path = target
    report.info_path = update_dataset_info(dataset_dir, name, dataset_entry(target.name))
    return report


def _reasons(report: ExportReport) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in report.skipped.most_common()) or "no input"
