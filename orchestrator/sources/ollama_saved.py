"""Sessions saved with ``/save NAME`` inside ``ollama run``: each is a model whose ``POST /api/show``
answer carries the conversation in ``messages``.

Given ``names``, those models are read (one that does not exist is a UsageError); otherwise every local
model (``GET /api/tags``) whose show answer has messages is one conversation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from orchestrator.conversations import Conversation, MalformedError, Message, SkippedRecord, json_type
from orchestrator.errors import UsageError
from orchestrator.sources.filters import parse_time


def read_ollama_saved(
    host: str | None = None, names: list[str] | None = None
) -> Iterator[Conversation | SkippedRecord]:
    """Yield each saved session of the Ollama server at ``host`` (default: OLLAMA_HOST, then 127.0.0.1:11434)."""
    from orchestrator.ollama.client import OllamaClient, OllamaResponseError

    with OllamaClient(host) as client:
        source = f"ollama {client.base_url}"
        wanted = names or [m.get("name") or m.get("model") for m in client.tags()]
        for name in wanted:
            if not isinstance(name, str) or not name:
                continue
            try:
                shown = client.show(name)
            except OllamaResponseError as exc:
                if exc.status == 404 and names:
                    raise UsageError(
                        f"{source}: no model {name!r}; `ollama list` shows the saved sessions' names"
                    ) from None
                if exc.status == 404:  # removed since the list was read
                    continue
                raise
            item = _session(shown, name, source, explicit=bool(names))
            if item is not None:
                yield item


def _session(shown: dict[str, Any], name: str, source: str, *, explicit: bool) -> Conversation | SkippedRecord | None:
    where = f"model {name}"
    raw = shown.get("messages")
    if not raw:
        return SkippedRecord(source, where, "no saved messages (not a /save session)") if explicit else None
    if not isinstance(raw, list):
        return SkippedRecord(source, where, f"malformed messages: {json_type(raw)}, not a list")
    messages = []
    for index, data in enumerate(raw, start=1):
        try:
            messages.append(Message.from_ollama(data))
        except MalformedError as exc:
            return SkippedRecord(source, f"{where}, message {index}", f"malformed message: {exc}")
    system = shown.get("system")
    if isinstance(system, str) and system.strip() and not any(m.role == "system" for m in messages):
        messages.insert(0, Message("system", system))
    details = shown.get("details") if isinstance(shown.get("details"), dict) else {}
    parent = details.get("parent_model")
    return Conversation(
        id=name,
        messages=messages,
        source=source,
        title=name,
        model=parent if isinstance(parent, str) and parent else name,
        where=f"{source} {where}",
        created_at=parse_time(shown.get("modified_at")),
    )
