"""Near-duplicate conversations, found with MinHash over word shingles (datasketch).

A conversation whose estimated Jaccard similarity to one already kept reaches the threshold is a near
duplicate: the first seen is kept. MinHash uses a fixed seed, so the same input keeps the same ones.
"""

from __future__ import annotations

import re
from typing import Any

from orchestrator.errors import OrchestratorError

NUM_PERM = 128
SEED = 1
SHINGLE_WORDS = 3
LSH_SLACK = 0.15
_WORDS = re.compile(r"\w+")


class NearDuplicates:
    """The conversations kept so far, indexed for near-duplicate queries (a MinHashLSH index)."""

    def __init__(self, threshold: float) -> None:
        try:
            from datasketch import MinHash, MinHashLSH
        except ImportError as exc:
            raise OrchestratorError(
                "near-duplicate removal needs the package datasketch: pip install datasketch "
                "(or set data.near_duplicates: null to export without it)"
            ) from exc
        self.threshold = threshold
        self._minhash = MinHash
        # LSH only proposes candidates and each one's estimated similarity decides, so it is asked for
        # looser ones than the threshold: near the threshold LSH misses pairs. (It cannot be asked for
        # 1.0: that needs at least two bands.)
        self._index = MinHashLSH(threshold=max(min(threshold, 0.95) - LSH_SLACK, 0.05), num_perm=NUM_PERM)
        self._kept: dict[str, object] = {}

    def seen(self, text: str) -> bool:
        """True when ``text`` nearly duplicates a kept conversation; otherwise keep it and return False."""
        signature = self._signature(text)
        for key in self._index.query(signature):
            if signature.jaccard(self._kept[key]) >= self.threshold:
                return True
        key = str(len(self._kept))
        self._index.insert(key, signature)
        self._kept[key] = signature
        return False

    def _signature(self, text: str):  # -> datasketch.MinHash
        signature = self._minhash(num_perm=NUM_PERM, seed=SEED)
        signature.update_batch([s.encode("utf-8") for s in shingles(text)])
        return signature


def shingles(text: str, size: int = SHINGLE_WORDS) -> set[str]:
    """The conversation's word ``size``-grams, lower-cased (all its words when it has fewer)."""
    words = _WORDS.findall(text.lower())
    if len(words) <= size:
        return {" ".join(words)}
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


def record_text(record: dict[str, Any]) -> str:
    """All the text of a ShareGPT record (system prompt, tools, every turn), for the comparison."""
    return "\n".join([record["system"], record["tools"], *(turn["value"] for turn in record["conversations"])])
