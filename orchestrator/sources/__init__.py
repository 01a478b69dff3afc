"""Readers for where conversations live. Each yields Conversation objects (and SkippedRecord for
records it cannot read), streaming, so a large store is never loaded whole."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import UsageError


class MissingSource(UsageError):
    """A source file that does not exist (callers add the ways they offer to name another one)."""


if TYPE_CHECKING:  # the recipe schema (pydantic) is not needed to read a source
    from orchestrator.conversations import Conversation, SkippedRecord
    from orchestrator.recipe import Source


def read_source(spec: Source) -> Iterator[Conversation | SkippedRecord]:
    """One source's conversations, its filters (models, since, until, min_turns) applied."""
    from orchestrator.sources.filters import apply_filters

    return apply_filters(_read(spec), spec)


def _read(spec: Source) -> Iterator[Conversation | SkippedRecord]:
    if spec.type == "file":
        from orchestrator.sources.files import read_file

        return read_file(spec.path)
    if spec.type == "ollama_app":
        from orchestrator.sources.ollama_app import read_ollama_app

        return read_ollama_app(spec.path)
    if spec.type == "open_webui":
        from orchestrator.sources.open_webui import read_open_webui

        return read_open_webui(spec.path)
    if spec.type == "ollama_saved":
        from orchestrator.sources.ollama_saved import read_ollama_saved

        return read_ollama_saved(spec.host, spec.names)
    if spec.type == "chatgpt":
        from orchestrator.sources.chatgpt import read_chatgpt

        return read_chatgpt(spec.path)
    from orchestrator.sources.memory import read_memory

    return read_memory(spec.path, spec.sessions)


def read_sources(specs: Iterable[Source], *, recipe_keys: bool = True) -> Sources:
    """Every source in turn. A source that cannot be read at all is a UsageError naming the file; with
    ``recipe_keys`` (the recipe's ``data.sources``) it also names the recipe key at fault, as in
    ``data.sources[1].path: data/x.db: no such memory store; ...``. Callers with their own options
    (``data export --db/--file``) pass ``recipe_keys=False`` and add their own hint."""
    return Sources(list(specs), recipe_keys)


class Sources:
    """The conversations of several sources in turn, as an iterable; ``parts`` gives the same records
    with the large JSONL files cut into parts that worker processes can read on their own."""

    def __init__(self, specs: list[Source], recipe_keys: bool) -> None:
        self.specs, self.recipe_keys = specs, recipe_keys

    def __iter__(self) -> Iterator[Conversation | SkippedRecord]:
        for index, spec in enumerate(self.specs):
            yield from self._named(index, lambda spec=spec: read_source(spec))

    def file_bytes(self) -> int:
        """The size of the JSONL files among the sources (what ``parts`` can cut)."""
        return sum(_size(spec.path) for spec in self.specs if spec.type == "file" and str(spec.path).endswith(".jsonl"))

    def parts(self, part_bytes: int) -> list[tuple[bool, Iterator[Any]]]:
        """In source order, (True, its ``SourcePart``s) for each JSONL file, for worker processes, and
        (False, its records) for any other source, to read here. Both are lazy."""
        from orchestrator.sources.files import jsonl_parts
        from orchestrator.sources.filters import Filters

        out: list[tuple[bool, Iterator[Any]]] = []
        for index, spec in enumerate(self.specs):
            cut = jsonl_parts(spec.path, part_bytes) if spec.type == "file" else None
            if cut is None:  # read here, errors named as when iterating
                out.append((False, self._named(index, lambda spec=spec: read_source(spec))))
            else:
                out.append((True, (SourcePart(part, Filters.of(spec)) for part in cut)))
        return out

    def _named(self, index: int, read: Any) -> Iterator[Conversation | SkippedRecord]:
        try:
            yield from read()
        except UsageError as exc:
            if not self.recipe_keys:
                raise
            key = getattr(exc, "source_key", "path")
            raise UsageError(f"data.sources[{index}].{key}: {exc}") from exc


@dataclass(frozen=True)
class SourcePart:
    """A part of a JSONL file source, its filters applied: what a worker process reads."""

    part: Any  # a files.JsonlPart
    spec: Any  # the source's filters.Filters

    def read(self) -> Iterator[Conversation | SkippedRecord]:
        from orchestrator.sources.filters import apply_filters

        return apply_filters(self.part.read(), self.spec)

    def filtered(self) -> bool:
        """Whether the source sets filters (models, since, until, min_turns)."""
        from orchestrator.sources.filters import narrows

        return narrows(self.spec)


def _size(path: Any) -> int:
    try:
        return Path(path).stat().st_size
    except (OSError, TypeError, ValueError):
        return 0


def source_files(spec: Source) -> list[Path]:
    """The files a source reads, for a stage fingerprint (the app's ``-wal`` too: recent chats sit there).
    A saved-session source reads a server, not files: none."""
    if spec.type == "ollama_saved":
        return []
    if spec.type == "ollama_app":
        from orchestrator.sources.ollama_app import default_path

        path = Path(spec.path).expanduser() if spec.path else default_path()
        return [path, path.with_name(f"{path.name}-wal")]
    return [Path(spec.path)]
