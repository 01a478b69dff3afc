"""A consistent in-memory snapshot of a SQLite file that another program may be writing, read without
touching it: no lock, no ``-shm`` read mark, no ``-wal``/``-shm`` created.

The file and its write-ahead log are read as bytes; the log's committed frames (salts and checksums
checked, as SQLite's own recovery does) are applied to the pages, and the result is opened in memory.
The log is read before and after the file: when a checkpoint restarted it in between (its salts
changed), the read is taken again.
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

from orchestrator.errors import UsageError

SQLITE_MAGIC = b"SQLite format 3\x00"
WAL_MAGICS = (0x377F0682, 0x377F0683)  # the low bit: checksums over big-endian words
WAL_HEADER, FRAME_HEADER = 32, 24
ATTEMPTS = 5


def snapshot(path: Path, what: str) -> sqlite3.Connection:
    """An in-memory copy of the SQLite database ``path`` with its committed ``-wal`` changes applied.

    ``what`` names the kind of file in errors ("the Ollama app's database"); every failure is a one-line
    UsageError naming the file.
    """
    wal_path = path.with_name(f"{path.name}-wal")
    for _ in range(ATTEMPTS):
        try:
            before = _read(wal_path) if wal_path.is_file() else b""
            data = bytearray(path.read_bytes())
            after = _read(wal_path) if wal_path.is_file() else b""
        except PermissionError:
            raise UsageError(f"cannot read {path}: permission denied; run as a user who can read it") from None
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
        if before[:WAL_HEADER] == after[:WAL_HEADER]:
            break
    else:
        raise UsageError(f"{path}: changed while being read {ATTEMPTS} times; close the program writing it and retry")
    if not data.startswith(SQLITE_MAGIC):
        raise UsageError(f"{path}: not {what} (not a SQLite database, or an encrypted one)")
    page_size = _page_size(data[16:18])
    data = _apply_wal(data, after, page_size)
    data[18:20] = b"\x01\x01"  # the copy is in rollback-journal mode: no log of its own
    db = sqlite3.connect(":memory:", isolation_level=None)
    try:
        db.deserialize(bytes(data))
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        db.close()
        raise UsageError(f"{path}: cannot be read as {what} ({exc})") from None
    return db


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:  # checkpointed and removed meanwhile
        return b""


def _page_size(raw: bytes) -> int:
    value = int.from_bytes(raw, "big")
    return 65536 if value == 1 else value


def _apply_wal(data: bytearray, wal: bytes, page_size: int) -> bytearray:
    """``data`` with every frame of ``wal`` up to its last valid commit written in."""
    if len(wal) < WAL_HEADER:
        return data
    magic, _version, wal_page, _seq, salt1, salt2, ck1, ck2 = struct.unpack(">8I", wal[:WAL_HEADER])
    if magic not in WAL_MAGICS or wal_page not in (page_size, 1 if page_size == 65536 else page_size):
        return data  # not a log of this file: SQLite ignores it too
    order = ">" if magic & 1 else "<"
    s0, s1 = _checksum(wal[:24], 0, 0, order)
    if (s0, s1) != (ck1, ck2):
        return data
    frames: dict[int, int] = {}
    committed: dict[int, int] = {}
    size = None
    offset = WAL_HEADER
    while offset + FRAME_HEADER + page_size <= len(wal):
        pgno, commit, f_salt1, f_salt2, f_ck1, f_ck2 = struct.unpack(">6I", wal[offset : offset + FRAME_HEADER])
        if (f_salt1, f_salt2) != (salt1, salt2) or pgno == 0:
            break
        page = wal[offset + FRAME_HEADER : offset + FRAME_HEADER + page_size]
        s0, s1 = _checksum(wal[offset : offset + 8], s0, s1, order)
        s0, s1 = _checksum(page, s0, s1, order)
        if (s0, s1) != (f_ck1, f_ck2):
            break
        frames[pgno] = offset + FRAME_HEADER
        if commit:  # the last frame of a transaction: the database is ``commit`` pages long
            committed, size = dict(frames), commit
        offset += FRAME_HEADER + page_size
    if size is None:
        return data
    data = data[: size * page_size].ljust(size * page_size, b"\x00")
    for pgno, start in committed.items():
        if pgno <= size:
            data[(pgno - 1) * page_size : pgno * page_size] = wal[start : start + page_size]
    return data


def _checksum(chunk: bytes, s0: int, s1: int, order: str) -> tuple[int, int]:
    words = struct.unpack(f"{order}{len(chunk) // 4}I", chunk)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1
