"""Writing a GGUF file: gguf's writer lays out the header, metadata and tensor table; the tensor data
is then streamed in, chunk by chunk. Callers write into ``fsutil.atomic_path``'s temporary name, which
is renamed into place at the end (and removed on failure, or by the next run after a kill -9).

Work items (row chunks) are encoded on a small thread pool (numpy releases the GIL) and written in
order; tensors whose bytes need no change are copied file-to-file by the kernel. Memory in flight is
a few chunks, whatever the model size.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from orchestrator.errors import OrchestratorError, StageError, UsageError
from orchestrator.fsutil import stale_temps
from orchestrator.gguf.plan import Part, PlannedTensor
from orchestrator.gguf.source import MappedFiles, copy_range

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
COPY_PIECE = 64 << 20
DISK_MARGIN = 64 << 20
WRITEBACK_EVERY = 256 << 20


def check_output(out_path: Path, inputs: list[Path]) -> None:
    """Refuse, before any work, an output that is a folder, sits under a file, or is one of ``inputs``
    (after symlinks and hard links): the rename at the end would replace that input with the GGUF."""
    if out_path.is_dir():
        raise UsageError(f"{out_path}: is a folder; give the .gguf file to write")
    for parent in out_path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise UsageError(f"{out_path}: {parent} is a file, not a folder; choose another output path")
            break
    if out_path.exists():
        for source in inputs:
            with contextlib.suppress(OSError):
                if os.path.samefile(out_path, source):
                    raise UsageError(f"{out_path}: is the input {source}; write the GGUF to another file")


def check_disk(out_path: Path, need: int) -> None:
    """Refuse before writing when the output folder's disk cannot hold ``need`` bytes. Temporaries that
    killed runs left beside the output count as free: they are removed before the write starts."""
    folder = next((p for p in out_path.parents if p.is_dir()), Path.cwd())
    usage = shutil.disk_usage(folder)
    if usage.total == 0:
        return  # a pseudo file system (/proc, /sys) reports no size; the write itself will say what is wrong
    stale = 0
    for path in stale_temps(out_path):
        with contextlib.suppress(OSError):
            info = path.stat()
            stale += min(info.st_size, getattr(info, "st_blocks", info.st_size) * 512)
    free = usage.free + stale
    if free < need + DISK_MARGIN:
        raise OrchestratorError(
            f"{out_path}: not enough disk space: needs {need / 1e9:.2f} GB, {free / 1e9:.2f} GB free on "
            f"{folder}; free some space or write the GGUF elsewhere"
        )


def add_tensor_infos(writer: Any, plans: list[PlannedTensor]) -> None:
    import gguf
    import numpy as np

    for plan in plans:
        qtype = gguf.GGMLQuantizationType[plan.qtype]
        writer.add_tensor_info(plan.name, plan.shape, np.dtype(np.float32), plan.nbytes, raw_dtype=qtype)


def write_gguf(path: Path, writer: Any, plans: list[PlannedTensor], on_progress: ProgressFn | None = None) -> int:
    """Write header, metadata and tensor table with ``writer``, then stream the data; returns the file size."""
    import gguf

    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    head = writer.fout[0].tell()
    writer.close()
    align = writer.data_alignment
    expected = gguf.GGUFWriter.ggml_pad(head, align) + sum(gguf.GGUFWriter.ggml_pad(p.nbytes, align) for p in plans)
    with open(path, "r+b", buffering=0) as out:
        out.seek(head)
        write_all(out.fileno(), bytes(gguf.GGUFWriter.ggml_pad(head, align) - head))
        stream_tensors(out.fileno(), plans, align, on_progress)
        os.fsync(out.fileno())
        size = out.tell()
    if size != expected:
        raise StageError(f"{path}: wrote {size} bytes, expected {expected}; this is a bug in the converter")
    return size


def write_all(fd: int, data: Any) -> int:
    view = memoryview(data).cast("B")
    total = len(view)
    while view:
        view = view[os.write(fd, view) :]
    return total


def stream_tensors(fd: int, plans: list[PlannedTensor], align: int, on_progress: ProgressFn | None) -> None:
    """Encode and write every planned tensor in order, keeping only a few chunks in flight."""
    total = sum(p.nbytes for p in plans)
    done = 0
    workers = max(1, min(4, os.cpu_count() or 1))
    pending: deque[Any] = deque()
    files = MappedFiles()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="gguf")
    flushed = os.lseek(fd, 0, os.SEEK_CUR)

    def write_next() -> None:
        nonlocal done, flushed
        item = pending.popleft()
        done += item() if callable(item) else write_all(fd, item.result())
        flushed = start_writeback(fd, flushed)
        if on_progress is not None:
            on_progress(min(done, total), total)

    try:
        for plan in plans:
            for op in tensor_ops(plan, files, fd, pool):
                pending.append(op)
                while len(pending) > 2 * workers + 2:
                    write_next()
            if -plan.nbytes % align:
                pending.append(partial(write_padding, fd, -plan.nbytes % align))
        while pending:
            write_next()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        pending.clear()
        files.close()


def start_writeback(fd: int, flushed: int) -> int:
    """Hand written pages to the disk as we go (and out of the page cache), so the final fsync is short."""
    position = os.lseek(fd, 0, os.SEEK_CUR)
    if position - flushed >= WRITEBACK_EVERY and hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, flushed, position - flushed, os.POSIX_FADV_DONTNEED)
        return position
    return flushed


def tensor_ops(plan: PlannedTensor, files: MappedFiles, fd: int, pool: ThreadPoolExecutor) -> Iterator[Any]:
    """The writes that make up one tensor: kernel copies, or futures of encoded chunks."""
    from orchestrator.gguf.quant import chunk_rows

    for part in plan.parts:
        src = part.source
        if part.data is not None:
            yield partial(write_all, fd, part.data.astype("<f4").tobytes())
        elif src is not None and src.dtype == plan.qtype and part.perm is None and part.scale is None:
            start = src.offset + part.row_start * src.row_len * src.itemsize
            nbytes = part.n_rows * src.row_len * src.itemsize
            for off in range(0, nbytes, COPY_PIECE):
                yield partial(copy_piece, files.fileno(src.path), start + off, min(COPY_PIECE, nbytes - off), fd)
        else:
            files.fileno(src.path)  # open the map here, not concurrently in the workers
            step = part.n_rows if part.perm is not None else chunk_rows(src.row_len, plan.qtype)
            for first in range(0, part.n_rows, step):
                count = min(step, part.n_rows - first)
                yield pool.submit(encode_chunk, files, part, first, count, plan.qtype)


def copy_piece(src_fd: int, offset: int, nbytes: int, fd: int) -> int:
    copy_range(src_fd, offset, nbytes, fd)
    return nbytes


def write_padding(fd: int, nbytes: int) -> int:
    write_all(fd, bytes(nbytes))
    return 0  # padding is not tensor data: progress counts tensor bytes only


def encode_chunk(files: MappedFiles, part: Part, first: int, count: int, qtype: str) -> Any:
    from orchestrator.gguf.quant import apply_perm, encode, to_f32

    src = part.source
    assert src is not None
    rows, dtype = apply_perm(files.rows(src, part.row_start + first, count), part.perm), src.dtype
    if part.scale is not None:
        rows, dtype = to_f32(rows, dtype) * part.scale, "F32"
    data = encode(rows, dtype, qtype)
    del rows
    files.release(src, part.row_start + first, count)
    return data
