"""Small text helpers shared by the messages of every part of the tool."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``counted(1, "conversation")`` -> ``"1 conversation"``; any other count takes the plural."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def human_size(n: float) -> str:
    """Bytes as people read them: ``512 B``, ``2.0 MiB``, ``1.3 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
