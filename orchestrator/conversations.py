"""The one conversation shape every source yields and every consumer reads.

Roles follow Ollama's chat API: ``system``, ``user``, ``assistant`` and ``tool``. An assistant turn may
carry ``thinking`` (its chain of thought, without ``<think>`` tags) and ``tool_calls``; a ``tool`` turn
carries the result of a call, with ``tool_name`` naming the function that produced it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_ollama(self) -> dict[str, Any]:
        return {"function": {"name": self.name, "arguments": self.arguments}}

    @classmethod
    def from_ollama(cls, data: dict[str, Any]) -> ToolCall:
        """Read ``{"function": {"name", "arguments"}}`` (Ollama) or ``{"name", "arguments"}``."""
        fn = data.get("function", data)
        args = fn.get("arguments") or {}
        if isinstance(args, str):  # OpenAI-style payloads carry arguments as a JSON string
            try:
                args = json.loads(args)
            except ValueError:
                args = {"_raw": args}
        return cls(name=str(fn.get("name", "")), arguments=args)


@dataclass
class Message:
    role: str
    content: str = ""
    thinking: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_name: str | None = None

    def to_ollama(self) -> dict[str, Any]:
        """This message as an element of /api/chat's ``messages``."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.thinking:
            out["thinking"] = self.thinking
        if self.tool_calls:
            out["tool_calls"] = [call.to_ollama() for call in self.tool_calls]
        if self.tool_name:
            out["tool_name"] = self.tool_name
        return out

    @classmethod
    def from_ollama(cls, data: dict[str, Any]) -> Message:
        return cls(
            role=str(data.get("role", "")),
            content=data.get("content") or "",
            thinking=data.get("thinking") or None,
            tool_calls=[ToolCall.from_ollama(c) for c in data.get("tool_calls") or []],
            tool_name=data.get("tool_name") or data.get("name") or None,
        )


@dataclass
class Conversation:
    """One conversation: its messages in order, the tools offered, and where it came from."""

    id: str
    messages: list[Message] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    title: str | None = None
    model: str | None = None

    @property
    def system(self) -> str | None:
        """The system prompt: every system message joined, as Ollama joins them."""
        parts = [m.content for m in self.messages if m.role == "system" and m.content]
        return "\n\n".join(parts) if parts else None


@dataclass
class SkippedRecord:
    """A record a source could not turn into a conversation: counted and reported, never dropped silently."""

    source: str
    record: str
    reason: str
    detail: str = ""
