"""The recipe's ``data.sources`` entries: one schema per kind of source, and what every source can be
narrowed to."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A part of the recipe: unknown keys refused, defaults checked."""

    # allow_inf_nan: `learning_rate: .inf` would train to an all-NaN adapter and report success.
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


class SourceFilters(Section):
    """What every source can be narrowed to."""

    models: list[str] | None = Field(
        None, description="Only chats answered by these models (globs on the model name, e.g. 'qwen3:*')"
    )
    since: date | None = Field(None, description="Only chats started on or after this day (YYYY-MM-DD)")
    until: date | None = Field(None, description="Only chats started on or before this day (YYYY-MM-DD)")
    min_turns: int = Field(1, ge=1, description="Only chats with at least this many assistant replies")


class FileSource(SourceFilters):
    type: Literal["file"]
    path: str = Field(description="A .json or .jsonl file of conversations (Ollama/OpenAI messages or ShareGPT)")


class MemorySource(SourceFilters):
    type: Literal["memory"]
    path: str = Field("data/ollama_memory.db", description="The memory store written by `orchestrator chat`")
    sessions: list[str] | None = Field(None, description="Only these session ids (all when omitted)")


class OllamaAppSource(SourceFilters):
    type: Literal["ollama_app"]
    path: str | None = Field(None, description="The Ollama desktop app's db.sqlite (default: its place on this OS)")


class OpenWebUISource(SourceFilters):
    type: Literal["open_webui"]
    path: str = Field(description="An Open WebUI 'Export Chats' JSON file, or its webui.db")


class OllamaSavedSource(SourceFilters):
    type: Literal["ollama_saved"]
    host: str | None = Field(None, description="The Ollama server (default: OLLAMA_HOST, then 127.0.0.1:11434)")
    names: list[str] | None = Field(
        None, description="Models saved with /save in `ollama run` (default: every model that carries messages)"
    )


class ChatGPTSource(SourceFilters):
    type: Literal["chatgpt"]
    path: str = Field(description="conversations.json from a ChatGPT data export")


SOURCE_TYPES = {
    "file": FileSource,
    "memory": MemorySource,
    "ollama_app": OllamaAppSource,
    "open_webui": OpenWebUISource,
    "ollama_saved": OllamaSavedSource,
    "chatgpt": ChatGPTSource,
}
Source = Annotated[
    FileSource | MemorySource | OllamaAppSource | OpenWebUISource | OllamaSavedSource | ChatGPTSource,
    Field(discriminator="type"),
]
