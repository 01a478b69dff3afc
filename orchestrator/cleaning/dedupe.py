"""Near-duplicate conversations: MinHash over word shingles, with LSH banding to find candidates.

A conversation whose estimated Jaccard similarity to one already kept reaches the threshold is a near
duplicate: the first seen is kept. Its shingles are its lower-cased word 3-grams (all its words when it
has fewer), a word being a run of ASCII letters, digits and underscores or of non-ASCII characters.

datasketch's ``MinHash.update_batch`` hashes every shingle in a Python call and applies each of the 128
permutations to it, and its ``MinHashLSH`` byte-swaps and stores every band in Python: together about
0.6 ms per conversation, several times the rest of an export. So the work is done here a chunk of
conversations per numpy pass: signatures are one-permutation MinHash (each shingle hashed once into one
of ``NUM_PERM`` bins; an empty bin takes the next full one's value, changed per bin moved, as densified
one-permutation hashing does), banded with the bands and rows datasketch's ``MinHashLSH`` chooses for
the threshold, and a candidate is decided by the bottom-k estimate of the Jaccard similarity (exact for
conversations of fewer than ``SKETCH`` shingles). Every hash is fixed arithmetic, so the same input
keeps the same conversations on every machine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from orchestrator.errors import OrchestratorError

NUM_PERM = 128
SKETCH = 128  # shingle hashes kept per conversation for the similarity estimate
SHINGLE_WORDS = 3
LSH_SLACK = 0.15
PASS_BYTES = 4 << 20  # text hashed per numpy pass, so a huge conversation does not make a huge array

_M64 = (1 << 64) - 1
_P = 0x100000001B3  # the polynomial hash's base (odd, so invertible modulo 2**64)
_P_INV = pow(_P, -1, 1 << 64)
_SHINGLE_MUL = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9)
_ROTATE = np.uint64(0x9E3779B97F4A7C15)  # added per bin a filled value travels
_BIN_BITS = NUM_PERM.bit_length() - 1
_EMPTY = np.uint64(_M64)

_WORD_BYTE = np.zeros(256, dtype=bool)
_WORD_BYTE[np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789_", dtype=np.uint8)] = True
_WORD_BYTE[0x80:] = True  # any byte of a non-ASCII character (the text is lower-cased first)


class NearDuplicates:
    """The conversations kept so far, indexed for near-duplicate queries by LSH banding."""

    def __init__(self, threshold: float) -> None:
        try:
            from datasketch import MinHashLSH
        except ImportError as exc:
            raise OrchestratorError(
                "near-duplicate removal needs the package datasketch: pip install datasketch "
                "(or set data.near_duplicates: null to export without it)"
            ) from exc
        self.threshold = threshold
        # LSH only proposes candidates and each one's estimated similarity decides, so it is asked for
        # looser ones than the threshold: near the threshold LSH misses pairs. (It cannot be asked for
        # 1.0: that needs at least two bands.) datasketch picks the bands and rows that weigh false
        # positives against false negatives best for that threshold.
        lsh = MinHashLSH(threshold=max(min(threshold, 0.95) - LSH_SLACK, 0.05), num_perm=NUM_PERM)
        self.bands, self.rows = lsh.b, lsh.r
        self._tables: list[dict[int, list[int]]] = [{} for _ in range(self.bands)]
        self._kept: list[np.ndarray] = []  # the bottom-k sketch of each kept conversation

    def seen_signed(self, signed: Signed, chosen: Sequence[int]) -> list[bool]:
        """For each of the ``chosen`` texts of ``signed`` (made by ``sign`` for this threshold's bands and
        rows, possibly in another process), in order, whether it nearly duplicates a kept one (or an
        earlier chosen one); the others are kept.

        Most texts share no band with any other: those are found for the whole chunk with set operations
        and kept at once. Only a text with a shared band is compared, one at a time and in order.
        """
        keys, sketches, bounds = signed
        spans = [(bounds[i], bounds[i + 1]) for i in chosen]
        columns = keys[list(chosen)].T.tolist() if len(spans) else [[] for _ in range(self.bands)]
        shared = np.zeros(len(spans), dtype=bool)
        for table, column in zip(self._tables, columns, strict=True):
            known = table.keys() & column
            if len(set(column)) < len(column):  # some keys are shared within the chunk
                counts = Counter(column)
                known |= {key for key, n in counts.items() if n > 1}
            if known:
                shared |= np.fromiter((key in known for key in column), dtype=bool, count=len(column))
        out = shared.tolist()
        alone = np.flatnonzero(~shared).tolist()
        base = len(self._kept)
        # copies: a view would hold the whole chunk's array
        self._kept += [sketches[spans[i][0] : spans[i][1]].copy() for i in alone]
        numbers = list(range(base, base + len(alone)))  # one int object per kept conversation, in every table
        for table, column in zip(self._tables, columns, strict=True):
            table.update(zip([column[i] for i in alone], numbers, strict=True))
        for index in np.flatnonzero(shared).tolist():
            start, end = spans[index]
            out[index] = self._seen(sketches[start:end], [c[index] for c in columns])
        return out

    def _seen(self, sketch: np.ndarray, bands: list[int]) -> bool:
        """Whether ``sketch`` nearly duplicates a kept conversation sharing one of its bands; else keep it."""
        found = [hit for hit in map(dict.get, self._tables, bands) if hit is not None]
        if found and any(jaccard(sketch, self._kept[c]) >= self.threshold for c in sorted(_flatten(found))):
            return True
        kept = len(self._kept)
        self._kept.append(sketch.copy())  # not a view: that would hold the whole chunk's array
        for table, key in zip(self._tables, bands, strict=True):
            held = table.get(key)  # one index, or a list of them when band keys collide
            if held is None:
                table[key] = kept
            elif type(held) is int:
                table[key] = [held, kept]
            else:
                held.append(kept)
        return False


def _flatten(found: list) -> set[int]:
    out: set[int] = set()
    for hit in found:
        if type(hit) is int:
            out.add(hit)
        else:
            out.update(hit)
    return out


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """The Jaccard similarity estimated from two bottom-k sketches (sorted unique shingle hashes): exact
    when both sets have fewer than SKETCH shingles."""
    union = np.union1d(a, b)[:SKETCH]
    if not len(union):
        return 1.0
    shared = np.intersect1d(a, b, assume_unique=True)
    return np.count_nonzero(shared <= union[-1]) / len(union)


class Signed(NamedTuple):
    """What ``NearDuplicates`` needs of a chunk of texts: each one's band keys (a row per text), and the
    bottom-k sketches laid end to end (text i's is ``sketches[bounds[i]:bounds[i + 1]]``)."""

    keys: np.ndarray
    sketches: np.ndarray
    bounds: list[int]


def sign(texts: list[str], bands: int, rows: int) -> Signed:
    """The band keys and sketches of ``texts``: the numpy half of the work, done wherever the texts are."""
    signature, sketches, bounds = signatures(texts)
    return Signed(_band_keys(signature, bands, rows), sketches, bounds)


def _band_keys(signature: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per band of each signature (rows values hashed together)."""
    keys = np.zeros((len(signature), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for row in range(rows):
            keys = _mix(keys * np.uint64(_SHINGLE_MUL[2]) + signature[:, row : bands * rows : rows])
    return keys


def signatures(texts: list[str]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Each text's NUM_PERM-value signature (uint64 rows) and bottom-k sketch (text i's is
    ``sketches[bounds[i]:bounds[i + 1]]``), a few MiB of text per numpy pass."""
    rows, sketches, bounds, group, size = [], [], [0], [], 0
    for text in [*texts, None]:
        encoded = None if text is None else text.lower().encode("utf-8", "surrogatepass")
        if group and (encoded is None or size + len(encoded) > PASS_BYTES):
            signature, sketch, counts = _signatures(group)
            rows.append(signature)
            sketches.append(sketch)
            bounds += (bounds[-1] + np.cumsum(counts)).tolist()
            group, size = [], 0
        if encoded is not None:
            group.append(encoded)
            size += len(encoded) + 1
    if not rows:
        return np.zeros((0, NUM_PERM), dtype=np.uint64), np.zeros(0, dtype=np.uint32), bounds
    return np.concatenate(rows), np.concatenate(sketches), bounds


def _signatures(encoded: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = np.frombuffer(b"\n".join(encoded), dtype=np.uint8)
    text_ends = np.cumsum([len(e) + 1 for e in encoded]) - 1
    words, owner = _word_hashes(data, text_ends)
    shingles, shingle_owner = _shingles(words, owner, len(encoded))
    signature = np.full((len(encoded), NUM_PERM), _EMPTY, dtype=np.uint64)
    bins = (shingles & np.uint64(NUM_PERM - 1)).astype(np.intp)
    np.minimum.at(signature, (shingle_owner, bins), shingles >> np.uint64(_BIN_BITS))
    return (_densify(signature), *_bottom_k(shingles, shingle_owner, len(encoded)))


def _bottom_k(shingles: np.ndarray, owner: np.ndarray, texts: int) -> tuple[np.ndarray, np.ndarray]:
    """Each text's SKETCH smallest distinct shingle hashes (their top 32 bits, which are enough for an
    estimate and halve what every kept conversation holds), sorted and laid end to end, and how many
    each text has."""
    keys = np.sort((owner.astype(np.uint64) << np.uint64(32)) | (shingles >> np.uint64(32)))
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]  # distinct
    owner, values = (keys >> np.uint64(32)).astype(np.intp), keys.astype(np.uint32)
    counts = np.bincount(owner, minlength=texts)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    keep = np.arange(len(values)) - starts[owner] < SKETCH
    return values[keep], np.minimum(counts, SKETCH)


def _word_hashes(data: np.ndarray, text_ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 64-bit hash of each word (its bytes as a polynomial in _P, modulo 2**64) and the text it is in."""
    inside = _WORD_BYTE[data]
    edges = np.diff(np.concatenate(([False], inside, [False])).astype(np.int8))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    with np.errstate(over="ignore"):
        powers, inverse = _powers(_P, len(data)), _powers(_P_INV, len(data))
        prefix = np.zeros(len(data) + 1, dtype=np.uint64)
        np.cumsum(data.astype(np.uint64) * powers, dtype=np.uint64, out=prefix[1:])
        words = (prefix[ends] - prefix[starts]) * inverse[starts]
    return _mix(words), np.searchsorted(text_ends, starts)


_POWERS: dict[int, np.ndarray] = {}  # base -> its powers, kept up to CACHED_POWERS of them
CACHED_POWERS = 1 << 20


def _powers(base: int, count: int) -> np.ndarray:
    """base ** i modulo 2**64 for i in range(count); tables of up to CACHED_POWERS are made once."""
    table = _POWERS.get(base)
    if table is None or len(table) < count:
        factors = np.full(max(count, min(CACHED_POWERS, 2 * count)), base, dtype=np.uint64)
        factors[:1] = 1
        with np.errstate(over="ignore"):
            table = np.cumprod(factors, dtype=np.uint64)
        if len(table) <= CACHED_POWERS:
            _POWERS[base] = table
    return table[:count]


def _shingles(words: np.ndarray, owner: np.ndarray, texts: int) -> tuple[np.ndarray, np.ndarray]:
    """Each text's word 3-grams, hashed; a text of fewer words has one shingle of all of them."""
    counts = np.bincount(owner, minlength=texts)
    with np.errstate(over="ignore"):
        if len(words) >= SHINGLE_WORDS:
            whole = owner[: -SHINGLE_WORDS + 1] == owner[SHINGLE_WORDS - 1 :]
            grams = words[: len(words) - 2] * np.uint64(_SHINGLE_MUL[0])
            grams = grams + words[1 : len(words) - 1] * np.uint64(_SHINGLE_MUL[1]) + words[2:]
            shingles, shingle_owner = _mix(grams[whole]), owner[: len(words) - 2][whole]
        else:
            shingles, shingle_owner = np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.intp)
        short = np.flatnonzero(counts < SHINGLE_WORDS)
        if len(short):
            first = np.concatenate(([0], np.cumsum(counts)))
            extra = []
            for text in short:
                value = len(_SHINGLE_MUL) + int(counts[text])
                for word in words[first[text] : first[text + 1]].tolist():
                    value = (value * _SHINGLE_MUL[1] + word) & _M64
                extra.append(value)
            shingles = np.concatenate((shingles, _mix(np.array(extra, dtype=np.uint64))))
            shingle_owner = np.concatenate((shingle_owner, short))
    return shingles, shingle_owner


def _densify(signature: np.ndarray) -> np.ndarray:
    """Fill each empty bin from the next full one to its right (cyclically), changed per bin moved."""
    with np.errstate(over="ignore"):
        for _ in range(NUM_PERM - 1):
            empty = signature == _EMPTY
            if not empty.any():
                break
            borrowed = np.roll(signature, -1, axis=1)
            fill = empty & (borrowed != _EMPTY)
            signature[fill] = borrowed[fill] + _ROTATE
    return signature


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit reaches every output bit."""
    with np.errstate(over="ignore"):
        values = values ^ (values >> np.uint64(30))
        values = values * np.uint64(0xBF58476D1CE4E5B9)
        values = values ^ (values >> np.uint64(27))
        values = values * np.uint64(0x94D049BB133111EB)
        return values ^ (values >> np.uint64(31))


def record_text(record: dict[str, Any]) -> str:
    """All the text of a ShareGPT record (system prompt, tools, every turn), for the comparison."""
    return "\n".join([record["system"], record["tools"], *(turn["value"] for turn in record["conversations"])])
