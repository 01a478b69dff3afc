"""A stand-in for ``google.colab.files``: what the browser would upload and download, from and to folders.

FAKE_COLAB_UPLOADS is a JSON list with one entry per ``upload()`` call, each a list of file paths that
call "uploads" (a call past the end uploads nothing, as when the person cancels the dialog).
``download(path)`` copies the file into FAKE_COLAB_DOWNLOADS.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

_calls = 0


def upload() -> dict[str, bytes]:
    """Like Colab's: {file name: contents} of what was chosen."""
    global _calls
    batches = json.loads(os.environ.get("FAKE_COLAB_UPLOADS", "[]"))
    batch = batches[_calls] if _calls < len(batches) else []
    _calls += 1
    return {Path(path).name: Path(path).read_bytes() for path in batch}


def download(filename: str) -> None:
    """Like Colab's: refuses a file that does not exist, else hands it to the browser (here: a folder)."""
    if not os.path.exists(filename):
        raise FileNotFoundError(f"Cannot find file: {filename}")
    target = Path(os.environ["FAKE_COLAB_DOWNLOADS"])
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(filename, target / Path(filename).name)
