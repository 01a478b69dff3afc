"""Readers for where conversations live. Each yields Conversation objects (and SkippedRecord for
records it cannot read), streaming, so a large store is never loaded whole."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the recipe schema (pydantic) is not needed to read a source
    from orchestrator.conversations import Conversation, SkippedRecord
    from orchestrator.recipe import FileSource, MemorySource


def read_source(spec: FileSource | MemorySource) -> Iterator[Conversation | SkippedRecord]:
    if spec.type == "file":
        from orchestrator.sources.files import read_file

        return read_file(spec.path)
    from orchestrator.sources.memory import read_memory

    return read_memory(spec.path, spec.sessions)


def read_sources(specs: Iterable[FileSource | MemorySource]) -> Iterator[Conversation | SkippedRecord]:
    for spec in specs:
        yield from read_source(spec)
