"""Atomic file writes: a file is written beside its target under a temporary name and renamed into
place, so an interrupted run leaves the old file or the new one, never half of one.

Temporary names are ``.<target>.<pid>.<tag>``: a later write of the same target removes the leftovers
of writers that are no longer alive (a ``kill -9`` cannot clean up after itself). The written file
keeps the mode of the file it replaces, else gets the mode the umask gives a new file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from orchestrator.errors import OrchestratorError


class WriteError(OrchestratorError):
    """A file could not be written (read-only folder, full disk, file size limit...)."""


def temp_path(target: Path, tag: str = "tmp") -> Path:
    """This process's temporary name for ``target``."""
    return target.with_name(f".{target.name}.{os.getpid()}.{tag}")


def stale_temps(target: Path) -> list[Path]:
    """Temporary files of ``target`` left by writers that are no longer running."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(\d+)\.[\w.-]+$")
    found = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = pattern.match(entry.name)
        if match and not _alive(int(match.group(1))) and entry.is_file():
            found.append(entry)
    return found


def remove_stale_temps(target: Path) -> int:
    """Remove what dead writers of ``target`` left behind; returns the bytes freed."""
    freed = 0
    for path in stale_temps(target):
        with contextlib.suppress(OSError):
            size = path.stat().st_size
            path.unlink()
            freed += size
    return freed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # our own earlier temp of the same target is in use by an enclosing write
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def describe_os_error(path: Path, exc: OSError) -> str:
    """One line naming the file, the cause and what to do about it."""
    reason = exc.strerror or str(exc)
    code = exc.errno or 0
    if code == errno.EEXIST and any(parent.is_file() for parent in path.parents):
        code, reason = errno.ENOTDIR, "Not a directory"  # mkdir of a folder where a file is
    fixes = {
        errno.EROFS: "choose a writable folder",
        errno.EACCES: "choose a folder you can write to",
        errno.EPERM: "choose a folder you can write to",
        errno.ENOSPC: "free some disk space",
        errno.EDQUOT: "free some disk space",
        errno.EFBIG: "raise the file size limit (ulimit -f) or write smaller files",
        errno.ENAMETOOLONG: "use a shorter name",
        errno.ENOTDIR: "a parent of it is a file, not a folder; choose another path",
        errno.EISDIR: "it is a folder; give a file path",
    }
    fix = fixes.get(code, "check the path and its folder")
    return f"cannot write {path}: {reason}; {fix}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, tag: str = "tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` for the caller to fill; on success it replaces ``path`` (keeping
    the replaced file's mode), on any error it is removed. OS errors become a one-line WriteError."""
    target = Path(path)
    tmp = temp_path(target, tag)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)
        try:
            mode = target.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = _new_file_mode()
        yield tmp
        if tmp.exists():
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        _discard(tmp)
        raise WriteError(describe_os_error(target, exc)) from exc
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path``, on error it is removed."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path) as handle:
        handle.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's value, or None when it is missing, unreadable or not JSON (what a run folder holds
    is read back this way: a file a killed run left half-written counts as absent)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class LockedError(OrchestratorError):
    """Another live process holds the lock."""


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, wait: bool = True, what: str | None = None) -> Iterator[Path]:
    """An exclusive ``flock`` on ``path`` (created if missing) for the duration of the block.

    The lock dies with its process (``kill -9`` included), and child processes do not inherit it. With
    ``wait=False`` a held lock raises LockedError naming ``what`` and the holder's pid.
    """
    lock = Path(path)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise WriteError(describe_os_error(lock, exc)) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "another process"
            raise LockedError(
                f"{what or lock} is in use by pid {holder}; wait for it to finish, or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield lock
    finally:
        os.close(fd)
