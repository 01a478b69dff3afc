"""Open a SQLite file for reading only: never lock out its writer, never write, migrate or create it.

``file:...?mode=ro`` takes no lock a writer waits for (in WAL mode readers and the writer never block each
other). A WAL reader needs the ``-shm`` index beside the file: SQLite creates it (with an empty ``-wal``)
when the folder allows, which writes nothing to the database. Where the folder cannot be written, that
open fails; the file is then read as ``immutable``, which is exact only while no ``-wal`` holds pages not
yet merged into it (a writer that cannot write there cannot be adding any): with such a ``-wal`` the read
is refused rather than silently missing the latest turns.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from orchestrator.errors import UsageError

log = logging.getLogger(__name__)


def connect_readonly(path: Path, what: str, busy_timeout: float = 10.0) -> sqlite3.Connection:
    """A read-only connection to the existing SQLite file ``path``; ``what`` names the file in errors
    ("an orchestrator memory store"). Every failure is a one-line UsageError naming the file."""
    if not os.access(path, os.R_OK):
        raise UsageError(f"cannot read {path}: permission denied; run as a user who can read it")
    uri = path.resolve().as_uri()
    try:
        return _open(f"{uri}?mode=ro", busy_timeout)
    except sqlite3.OperationalError as exc:
        if not _cannot_open(exc):
            raise _error(path, what, exc) from None
        wal = path.with_name(f"{path.name}-wal")
        if wal.is_file() and wal.stat().st_size > 0:
            raise UsageError(
                f"{path}: cannot be opened read-only here ({exc}), and {wal.name} holds changes not yet merged "
                "into it; read it once from a place where its folder can be written"
            ) from None
        log.debug("%s: folder not writable, reading it as an immutable file", path)
        try:
            return _open(f"{uri}?mode=ro&immutable=1", busy_timeout)
        except sqlite3.DatabaseError as again:
            raise _error(path, what, again) from None
    except sqlite3.DatabaseError as exc:
        raise _error(path, what, exc) from None


def columns(db: sqlite3.Connection, table: str) -> set[str]:
    """The column names of ``table`` (none when it does not exist), whatever the connection's text_factory."""
    names = (row[1] for row in db.execute(f"PRAGMA table_info({table})"))
    return {name.decode("utf-8", "replace") if isinstance(name, bytes) else name for name in names}


def _open(uri: str, busy_timeout: float) -> sqlite3.Connection:
    db = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens -wal/-shm, checks the header
    except BaseException:
        db.close()
        raise
    return db


def _cannot_open(exc: sqlite3.Error) -> bool:
    text = str(exc)
    return "unable to open" in text or "readonly" in text


def _error(path: Path, what: str, exc: sqlite3.Error) -> UsageError:
    if "not a database" in str(exc):
        return UsageError(f"{path}: not {what} (not a SQLite database, or an encrypted one)")
    return UsageError(f"{path}: cannot be read as {what} ({exc})")
