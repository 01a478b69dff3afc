"""Helpers for the stage tests (a module of its own: `conftest` names are ambiguous across test folders)."""

from pathlib import Path


def recipe_text(model: Path, name: str = "t", stages: str = "[data, train]", extra: str = "") -> str:
    return (
        f"name: {name}\nmodel: {{name_or_path: {model}, template: qwen3}}\nhardware: cpu\nstages: {stages}\n"
        "data:\n  sources: [{type: file, path: data/samples/conversations.jsonl}]\n"
        "train: {max_steps: 2, logging_steps: 1}\n" + extra
    )
