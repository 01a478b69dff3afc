"""Readers for where conversations live. Each yields Conversation objects (and SkippedRecord for
records it cannot read), streaming, so a large store is never loaded whole."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

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


def read_sources(specs: Iterable[Source], *, recipe_keys: bool = True) -> Iterator[Conversation | SkippedRecord]:
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
