"""manifest.json: what each stage of a run did (status, inputs, outputs, duration), so a rerun can
skip what is already done and everything can be traced back to the recipe."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from orchestrator import __version__
from orchestrator.fsutil import write_json


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (configs, upstream fingerprints, file stats)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def file_stat(path: Path) -> dict[str, Any]:
    """Size and modification time: enough to notice a changed input without hashing gigabytes."""
    if not path.exists():
        return {"path": str(path), "exists": False}
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def file_digest(path: Path) -> str | None:
    """sha256 of a file's content, read in chunks (for small inputs such as a dataset)."""
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Manifest:
    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = {"orchestrator_version": __version__, "stages": {}}
        if path.is_file():
            try:
                self.data = json.loads(path.read_text(encoding="utf-8"))
                self.data.setdefault("stages", {})
            except ValueError:
                pass  # a damaged manifest only costs a rerun of every stage

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].get(name, {})

    def is_current(self, name: str, fp: str) -> bool:
        entry = self.stage(name)
        outputs = entry.get("outputs", {})
        present = all(Path(p).exists() for p in outputs.values() if isinstance(p, str))
        return entry.get("status") == "done" and entry.get("fingerprint") == fp and present

    def start(self, name: str, fp: str, inputs: dict[str, Any]) -> float:
        self.data["stages"][name] = {"status": "running", "fingerprint": fp, "inputs": inputs, "started": _now()}
        self.save()
        return time.monotonic()

    def finish(self, name: str, began: float, outputs: dict[str, Any], details: dict[str, Any]) -> None:
        entry = self.data["stages"][name]
        entry.update(
            status="done",
            finished=_now(),
            duration_s=round(time.monotonic() - began, 2),
            outputs=outputs,
            details=details,
        )
        self.save()

    def fail(self, name: str, began: float, error: str) -> None:
        entry = self.data["stages"].setdefault(name, {})
        entry.update(status="failed", finished=_now(), duration_s=round(time.monotonic() - began, 2), error=error)
        self.save()

    def save(self) -> None:
        self.data["updated"] = _now()
        write_json(self.path, self.data)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
