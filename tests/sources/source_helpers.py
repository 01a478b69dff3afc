"""What the source tests share besides fixtures."""

import os
from pathlib import Path


def file_states(*paths: Path) -> dict[str, tuple[bool, int, bytes]]:
    """Existence, mtime and bytes of each path (and of its -wal/-shm), to prove a read changed nothing."""
    states = {}
    for path in paths:
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            states[str(p)] = (True, os.stat(p).st_mtime_ns, p.read_bytes()) if p.exists() else (False, 0, b"")
    return states
