"""What a registration reports: progress events while it runs, and the ``RegisterResult`` at the end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RegisterProgress:
    """One progress event: ``phase`` is hash, upload, create or verify; bytes in ``completed``/``total``."""

    phase: str
    message: str
    completed: int | None = None
    total: int | None = None


Emit = Callable[[RegisterProgress], None]


@dataclass
class RegisterResult:
    """What ``register_model`` did: blobs (digest, size, uploaded or skipped), create statuses, and checks."""

    name: str
    host: str
    modelfile: Path
    command: str
    method: str
    blobs: list[Any] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    capabilities: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    answer: str = ""
    done_reason: str = ""

    @property
    def digests(self) -> dict[str, str]:
        return {str(b.path): b.digest for b in self.blobs}

    @property
    def skipped(self) -> list[str]:
        """Digests of blobs Ollama already had (not uploaded again)."""
        return [b.digest for b in self.blobs if not b.uploaded]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["modelfile"] = str(self.modelfile)
        data["blobs"] = [{**asdict(b), "path": str(b.path)} for b in self.blobs]
        return data
