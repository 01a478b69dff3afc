"""Readers for where conversations live. Each yields Conversation objects (and SkippedRecord for
records it cannot read), streaming, so a large store is never loaded whole."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from orchestrator.errors import UsageError


class MissingSource(UsageError):
    """A source file that does not exist (callers add the ways they offer to name another one)."""


if TYPE_CHECKING:  # the recipe schema (pydantic) is not needed to read a source
    from orchestrator.conversations import Conversation, SkippedRecord
    from orchestrator.recipe import FileSource, MemorySource


def read_source(spec: FileSource | MemorySource) -> Iterator[Conversation | SkippedRecord]:
    if spec.type == "file":
        from orchestrator.sources.files import read_file

        return read_file(spec.path)
    from orchestrator.sources.memory import read_memory

    return read_memory(spec.path, spec.sessions)


def read_sources(
    specs: Iterable[FileSource | MemorySource], *, recipe_keys: bool = True
) -> Iterator[Conversation | SkippedRecord]:
    """Every source in turn. A source that cannot be read at all is a UsageError naming the file; with
    ``recipe_keys`` (the recipe's ``data.sources``) it also names the recipe key at fault, as in
    ``data.sources[1].path: data/x.db: no such memory store; ...``. Callers with their own options
    (``data export --db/--file``) pass ``recipe_keys=False`` and add their own hint."""
    for index, spec in enumerate(specs):
        try:
            yield from read_source(spec)
        except UsageError as exc:
            if not recipe_keys:
                raise
            key = getattr(exc, "source_key", "path")
            raise UsageError(f"data.sources[{index}].{key}: {exc}") from exc
