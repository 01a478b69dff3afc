"""Blobs as Ollama stores them: ``sha256:<hex>`` digests of files, and a file body that streams from disk.

A GGUF can be many GB, so nothing here holds a whole file in memory: the digest is computed and the
upload sent one ``CHUNK_SIZE`` piece at a time.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import OllamaError

DIGEST_RE = re.compile(r"^sha256[:-][0-9a-fA-F]{64}$")
CHUNK_SIZE = 1 << 20  # bytes read from disk at a time, for hashing and uploading
ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes in all)


@dataclass
class BlobUpload:
    """One file pushed as a blob: its digest, its size, and whether bytes were sent (False: Ollama had it)."""

    path: Path
    digest: str
    size: int
    uploaded: bool


def file_digest(path: str | os.PathLike, on_progress: ProgressCallback | None = None) -> str:
    """``sha256:<hex>`` of a file, read in chunks (never the whole file in memory)."""
    path = Path(path)
    total = path.stat().st_size
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
            done += len(chunk)
            if on_progress:
                on_progress(done, total)
    if on_progress and total == 0:
        on_progress(0, 0)
    return f"sha256:{digest.hexdigest()}"


def check_digest(digest: str) -> None:
    if not DIGEST_RE.match(digest):
        raise OllamaError(f"'{digest}' is not a blob digest (sha256:<64 hex digits>)")


def same_digest(a: str, b: str) -> bool:
    """Ollama takes ``sha256:`` and ``sha256-``, in either case."""
    return a.replace("-", ":", 1).lower() == b.replace("-", ":", 1).lower()


class HashingReader:
    """A file opened for upload: hashes what is sent and reports progress; ``len()`` gives Content-Length."""

    def __init__(self, path: Path, on_progress: ProgressCallback | None):
        self.handle = open(path, "rb")  # closed by close(), once the request is sent
        self.size = path.stat().st_size
        self.sent = 0
        self.sha256 = hashlib.sha256()
        self.on_progress = on_progress
        self._reported = -1

    def __len__(self) -> int:
        return self.size

    def read(self, size: int = -1) -> bytes:
        """At most ``size`` bytes (never more than CHUNK_SIZE: the sender asks again until EOF)."""
        data = self.handle.read(CHUNK_SIZE if size is None or size < 0 else min(size, CHUNK_SIZE))
        self.sha256.update(data)
        self.sent += len(data)
        if self.on_progress and (self.sent - self._reported >= CHUNK_SIZE or self.sent == self.size):
            if self.sent != self._reported:
                self._reported = self.sent
                self.on_progress(self.sent, self.size)
        return data

    def changed(self, digest: str) -> bool:
        """Whether the whole file was sent and its bytes no longer have ``digest`` (it changed meanwhile)."""
        return self.sent == self.size and not same_digest(f"sha256:{self.sha256.hexdigest()}", digest)

    def close(self) -> None:
        self.handle.close()
