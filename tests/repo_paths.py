"""Paths of the checkout the tests use (import this, not conftest: each test folder has a conftest)."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples" / "conversations.jsonl"
