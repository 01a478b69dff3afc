"""The held-out evaluation split, decided by each conversation's id.

A conversation's side follows from a salted hash of its id alone, so adding chats never moves an old
one to the other side: a share ``s`` holds out the ids whose hash mod 10,000 is below ``s`` x 10,000
(about that share), a count ``n`` holds out the ``n`` ids with the smallest hash.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Sequence
from typing import Any

SEED = "orchestrator-eval-split-1"  # fixed: changing it would reshuffle every existing split
BUCKETS = 10_000
EVAL_SUFFIX = "_eval"


def split_hash(conversation_id: str) -> int:
    """A stable 64-bit hash of a conversation id (the same on every machine and Python)."""
    digest = hashlib.sha256(f"{SEED}\0{conversation_id}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big")


def held_out(conversation_id: str, share: float) -> bool:
    """Whether a share split holds this conversation out."""
    return split_hash(conversation_id) % BUCKETS < share * BUCKETS


class Splitter:
    """Routes each written line to the train or the eval handle. A count split keeps the ``n`` smallest
    hashes seen so far in a bounded heap; one pushed out of it goes to the train side."""

    def __init__(self, eval_split: float, train: Any, held: Any):
        self.share = eval_split if 0 < eval_split < 1 else None
        self.count = int(eval_split) if eval_split >= 1 else 0
        self.train, self.held = train, held
        self.heap: list[tuple[int, int, bytes]] = []  # (-hash, order, line): the largest hash on top
        self.order = 0
        self.eval_written = 0

    def write(self, conversation_id: str, line: bytes) -> None:
        """Write one line to its side (a count split's eval side when ``finish`` is called)."""
        if self.share is not None:
            held = held_out(conversation_id, self.share)
            (self.held if held else self.train).write(line)
            self.eval_written += held
            return
        if not self.count:
            self.train.write(line)
            return
        self.order += 1
        entry = (-split_hash(conversation_id), self.order, line)
        if len(self.heap) < self.count:
            heapq.heappush(self.heap, entry)
        else:
            self.train.write(heapq.heappushpop(self.heap, entry)[2])

    def write_lines(
        self, id_of: Callable[[int], str], blob: bytes, ends: Sequence[int], chosen: list[int] | None
    ) -> None:
        """``write`` for the lines joined in ``blob`` (line i ends at ``ends[i]`` and belongs to the
        conversation ``id_of(i)``), the ``chosen`` ones (None: all) in order; all of them at once when
        nothing is held out."""
        if chosen is None and self.share is None and not self.count:
            self.train.write(blob)
            return
        for index in range(len(ends)) if chosen is None else chosen:
            self.write(id_of(index), blob[ends[index - 1] if index else 0 : ends[index]])

    def finish(self) -> None:
        """Write the count split's held-out lines, in the order they were read."""
        for _, _, line in sorted(self.heap, key=lambda e: e[1]):
            self.held.write(line)
        self.eval_written += len(self.heap)
        self.heap.clear()
