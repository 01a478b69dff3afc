"""The one conversation shape every source yields and every consumer reads.

Roles follow Ollama's chat API: ``system``, ``user``, ``assistant`` and ``tool``. An assistant turn may
carry ``thinking`` (its chain of thought, without ``<think>`` tags) and ``tool_calls``; a ``tool`` turn
carries the result of a call, with ``tool_name`` naming the function that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
# Deeper JSON than this in tool-call arguments or tool definitions is refused: real ones are a few levels
# deep, and every consumer (our canonical form, json.dumps, Go templates) walks them recursively.
MAX_NESTING = 64


class MalformedError(ValueError):
    """A record that does not have the conversation shape. The message names what is wrong (a field and
    its JSON type), never the text of a message, so it can be reported as a skip reason."""


def loads_json(data: str | bytes) -> Any:
    """Parse JSON strictly (orjson): a lone surrogate escape, invalid UTF-8, NaN or nesting past 1024
    levels is a ``ValueError`` rather than a value that fails later (or a RecursionError)."""
    import orjson

    return orjson.loads(data)


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages: ``a number``, ``a list``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def too_deep(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether lists and objects nest more than ``limit`` levels (checked without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, (list, tuple)):
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in item)
    return False


def _text(data: dict[str, Any], key: str, what: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedError(f"{what} is {json_type(value)}, not text")
    return value


def check_tools(tools: Any) -> list[dict[str, Any]]:
    """Tool definitions as Ollama takes them: a list of ``{"type", "function": {"name", ...}}`` objects
    (or bare ``{"name", ...}`` functions). Anything else raises ``MalformedError``."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise MalformedError(f"tools is {json_type(tools)}, not a list of tool objects")
    for tool in tools:
        if not isinstance(tool, dict):
            raise MalformedError(f"a tool is {json_type(tool)}, not an object")
        fn = tool.get("function", tool)
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise MalformedError("a tool has no function name")
        if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
            raise MalformedError(f"a tool's parameters are {json_type(fn['parameters'])}, not an object")
    if too_deep(tools):
        raise MalformedError(f"tools are nested deeper than {MAX_NESTING} levels")
    return tools


@dataclass(slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_ollama(self) -> dict[str, Any]:
        return {"function": {"name": self.name, "arguments": self.arguments}}

    @classmethod
    def from_ollama(cls, data: Any) -> ToolCall:
        """Read ``{"function": {"name", "arguments"}}`` (Ollama) or ``{"name", "arguments"}``.

        Arguments given as a JSON string (OpenAI style) are parsed, as Ollama does; arguments that are
        not an object, or nest deeper than ``MAX_NESTING``, raise ``MalformedError``.
        """
        if not isinstance(data, dict):
            raise MalformedError(f"a tool call is {json_type(data)}, not an object")
        fn = data.get("function", data)
        if not isinstance(fn, dict):
            raise MalformedError(f"a tool call's function is {json_type(fn)}, not an object")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise MalformedError("a tool call has no function name")
        args = fn.get("arguments")
        if args is None or args == "":
            args = {}
        elif isinstance(args, str):
            try:
                args = loads_json(args)
            except ValueError:
                raise MalformedError("tool-call arguments are a string that is not JSON") from None
            if not isinstance(args, dict):
                raise MalformedError(f"tool-call arguments are a JSON string of {json_type(args)}, not an object")
        if not isinstance(args, dict):
            raise MalformedError(f"tool-call arguments are {json_type(args)}, not an object")
        if too_deep(args):
            raise MalformedError(f"tool-call arguments are nested deeper than {MAX_NESTING} levels")
        return cls(name=name, arguments=args)


@dataclass(slots=True)
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
    def from_ollama(cls, data: Any) -> Message:
        """Read one element of /api/chat's ``messages``; a field of the wrong JSON type raises
        ``MalformedError`` (a missing or null one is empty)."""
        if not isinstance(data, dict):
            raise MalformedError(f"a message is {json_type(data)}, not an object")
        if len(data) == 2:  # the common {"role", "content"} message, without the checks below
            role, content = data.get("role"), data.get("content")
            if type(role) is str and type(content) is str:
                return cls(role, content)
        role = _text(data, "role", "role")
        calls = data.get("tool_calls") or []
        if not isinstance(calls, list):
            raise MalformedError(f"tool_calls is {json_type(calls)}, not a list")
        return cls(
            role=role or "",
            content=_text(data, "content", "content") or "",
            thinking=_text(data, "thinking", "thinking") or None,
            tool_calls=[ToolCall.from_ollama(c) for c in calls],
            tool_name=_text(data, "tool_name", "tool_name") or _text(data, "name", "name") or None,
        )


@dataclass
class PreferencePair:
    """Two answers to the same history, one preferred: a rated-up (or kept) answer and a rated-down (or
    discarded) sibling of it. ``prompt`` is the shared history, system messages included, ending on the
    user turn both answer."""

    prompt: list[Message]
    chosen: Message
    rejected: Message
    where: str = ""


@dataclass
class Conversation:
    """One conversation: its messages in order, the tools offered, and where it came from."""

    id: str
    messages: list[Message] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    title: str | None = None
    model: str | None = None
    # where it was read (file and line, store and session), for reports; not part of its identity
    where: str = field(default="", compare=False)
    # when the chat started (timezone-aware), where the source keeps it; for the since/until filters
    created_at: datetime | None = field(default=None, compare=False)
    # answers the source keeps beside the kept ones (Open WebUI regenerations), as preference pairs
    preferences: list[PreferencePair] = field(default_factory=list, compare=False)

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
