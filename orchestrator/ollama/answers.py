"""Ask a served model a list of prompts, one ``POST /api/chat`` each, and keep every answer or failure.

Used by the eval stage after registration: the served model gets the prompts the base and the tuned
model answered in LLaMA-Factory, greedily, so the three can be read side by side. Nothing here raises
for Ollama's sake or logs a message's text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import OrchestratorError

_INLINE_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)


@dataclass
class ServedAnswers:
    """What the served model answered to each prompt (None where its request failed); ``host`` is the URL
    that was asked (Ollama's API takes no credentials, and a host holding some is refused unasked)."""

    model: str
    host: str | None
    answers: list[str | None]
    error: str | None = None
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "host": self.host, "answers": self.answers, "error": self.error}

    @property
    def answered(self) -> int:
        return sum(a is not None for a in self.answers)


def ask_all(
    prompts: list[list[dict[str, str]]],
    *,
    host: str | None,
    model: str,
    think: bool | None = None,
    num_predict: int | None = None,
    retries: int = 1,
) -> ServedAnswers:
    """Send each prompt (``{"role", "content"}`` messages) to ``model``: not streamed, temperature 0, at
    most ``num_predict`` tokens, ``think`` as given (None: the model decides). A failure is recorded, not
    raised: the first one's line goes to ``error``, and once Ollama cannot be reached the remaining
    prompts are not sent."""
    from orchestrator.ollama.client import OllamaClient, OllamaConnectionError

    try:
        client = OllamaClient(host, retries=retries)
    except OrchestratorError as exc:  # a host Ollama's rules refuse; its value is never echoed
        return ServedAnswers(model, None, [None] * len(prompts), one_line(exc))
    options: dict[str, Any] = {"temperature": 0}
    if num_predict:
        options["num_predict"] = num_predict
    answers: list[str | None] = []
    error = None
    with client:
        for messages in prompts:
            try:
                chunks = client.chat(model, chat_messages(messages), think=think, options=options, stream=False)
                replies = list(chunks)
                answers.append(answer_text(replies[-1] if replies else {}))
            except OllamaConnectionError as exc:
                error = error or one_line(exc)
                answers += [None] * (len(prompts) - len(answers))
                break
            except OrchestratorError as exc:
                error = error or one_line(exc)
                answers.append(None)
        return ServedAnswers(model, client.base_url, answers, error)


def chat_messages(messages: list[dict[str, str]]) -> list[dict[str, Any]]:
    """``{"role", "content"}`` messages as /api/chat takes them: an assistant turn's inline chain of thought
    moves to ``thinking``, which Ollama hands to the template (it strips <think> from history contents)."""
    out = []
    for message in messages:
        role, content = str(message.get("role") or ""), str(message.get("content") or "")
        item: dict[str, Any] = {"role": role, "content": content}
        match = _INLINE_THINK.match(content) if role == "assistant" else None
        if match:
            item["content"] = content[match.end() :]
            if match.group(1).strip():
                item["thinking"] = match.group(1).strip()
        out.append(item)
    return out


def answer_text(reply: dict[str, Any]) -> str:
    """A non-streamed /api/chat answer as one text, its chain of thought (if any) inline before the answer,
    the way LLaMA-Factory's generations read."""
    message = reply.get("message") if isinstance(reply.get("message"), dict) else {}
    content = str(message.get("content") or "")
    thinking = str(message.get("thinking") or "").strip()
    return f"<think>\n{thinking}\n</think>\n\n{content}" if thinking else content


def one_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
