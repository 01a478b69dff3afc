"""The filters every source takes (``SourceFilters`` in the recipe), applied in one place, and the one way
sources turn their stored times into datetimes.

A chat filtered out is a counted ``SkippedRecord`` whose reason starts with ``filtered:``.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from orchestrator.conversations import Conversation, SkippedRecord

# A message longer than this is not a chat turn (a pasted file, a log): the chat is skipped, not trained on.
MAX_MESSAGE_CHARS = 1_000_000
_CONTENT, _THINKING = operator.attrgetter("content"), operator.attrgetter("thinking")
_FRACTION = re.compile(r"(\.\d{6})\d+")  # Go writes nanoseconds; Python reads at most microseconds


def parse_time(value: Any) -> datetime | None:
    """A stored time as an aware datetime: epoch seconds (or milliseconds / nanoseconds, told apart by
    size), or ISO-like text as SQLite and Go write it (without a zone: UTC). Anything else: None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
        while abs(seconds) > 1e11:  # milliseconds, microseconds or nanoseconds since 1970
            seconds /= 1000
        try:
            return datetime.fromtimestamp(seconds, timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return parse_time(float(text))
    text = _FRACTION.sub(r"\1", text.replace(" ", "T", 1)).replace("Z", "+00:00")
    text = re.sub(r"T(.*?) ?([+-]\d\d:?\d\d)( [A-Z]+)?$", r"T\1\2", text)  # Go's "... -0700 MST"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def assistant_turns(conv: Conversation) -> int:
    return sum(1 for m in conv.messages if m.role == "assistant")


def filter_reason(conv: Conversation, spec: Any) -> str | None:
    """Why ``conv`` is filtered out by ``spec`` (a ``SourceFilters``), or None to keep it.

    Dates are compared in UTC. ``min_turns`` 1 keeps a chat without replies, so that the dataset's own
    "no assistant reply" skip still names it.
    """
    if _too_long(conv):
        return f"a message over {MAX_MESSAGE_CHARS:,} characters"
    return _narrowed(conv, spec)


def _too_long(conv: Conversation) -> bool:
    messages = conv.messages
    if max(map(len, map(_CONTENT, messages)), default=0) > MAX_MESSAGE_CHARS:
        return True
    return any(map(_THINKING, messages)) and any(len(m.thinking or "") > MAX_MESSAGE_CHARS for m in messages)


def narrows(spec: Any) -> bool:
    """Whether ``spec`` sets any filter (else only the message-length rule applies)."""
    return bool(
        getattr(spec, "models", None)
        or getattr(spec, "since", None)
        or getattr(spec, "until", None)
        or (getattr(spec, "min_turns", 1) or 1) > 1
    )


def _narrowed(conv: Conversation, spec: Any) -> str | None:
    models = getattr(spec, "models", None)
    if models:
        if not conv.model:
            return "filtered: answering model unknown"
        if not any(fnmatch.fnmatchcase(conv.model, glob) for glob in models):
            return "filtered: model not in models"
    since: date | None = getattr(spec, "since", None)
    until: date | None = getattr(spec, "until", None)
    if since or until:
        if conv.created_at is None:
            return "filtered: start date unknown"
        day = conv.created_at.astimezone(timezone.utc).date()
        if since and day < since:
            return "filtered: started before since"
        if until and day > until:
            return "filtered: started after until"
    min_turns = getattr(spec, "min_turns", 1) or 1
    if min_turns > 1 and assistant_turns(conv) < min_turns:
        return f"filtered: fewer than {min_turns} assistant replies"
    return None


@dataclass(frozen=True)
class Filters:
    """A source's filters as plain values: what a worker process needs of its recipe entry."""

    models: tuple[str, ...] = ()
    since: date | None = None
    until: date | None = None
    min_turns: int = 1

    @classmethod
    def of(cls, spec: Any) -> Filters:
        return cls(
            tuple(getattr(spec, "models", None) or ()),
            getattr(spec, "since", None),
            getattr(spec, "until", None),
            getattr(spec, "min_turns", 1) or 1,
        )


def apply_filters(items: Iterable[Conversation | SkippedRecord], spec: Any) -> Iterator[Conversation | SkippedRecord]:
    """``items`` with each conversation ``spec`` filters out turned into a SkippedRecord."""
    narrowing = narrows(spec)
    for item in items:
        if isinstance(item, Conversation):
            reason = filter_reason(item, spec) if narrowing else _too_long(item) and filter_reason(item, spec)
            if reason:
                record = item.where.removeprefix(item.source).strip() or item.id
                yield SkippedRecord(item.source, record, reason)
                continue
        yield item
