"""Safetensors folders, read tensor by tensor through a read-only memory map.

Each file's header (an 8-byte length, then a JSON table of dtype, shape and byte range per tensor) is
parsed here. Tensor bytes are mapped, never loaded whole, and the pages a conversion has used are
handed back to the kernel, so the resident set stays small however large the model is.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.gguf.jsonio import json_kind, mapping, read_json_object
from orchestrator.text import counted

# safetensors dtype -> (numpy dtype used to hold the raw values, bytes per element). BF16 stays raw uint16.
DTYPES = {"BF16": ("uint16", 2), "F16": ("float16", 2), "F32": ("float32", 4)}
INDEX_NAME = "model.safetensors.index.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MAX_HEADER = 100 * 1024 * 1024
PAGE = mmap.PAGESIZE


@dataclass(frozen=True)
class SourceTensor:
    """One tensor inside a safetensors file: where its bytes are and what they hold."""

    name: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def row_len(self) -> int:
        """Elements per row: the last dimension (1 for a 1-D tensor, whose rows are its elements)."""
        return self.shape[-1] if len(self.shape) > 1 else 1

    @property
    def rows(self) -> int:
        return prod(self.shape) // self.row_len if self.shape else 1

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype][1]


def read_header(path: Path) -> dict[str, SourceTensor]:
    """Parse one safetensors file's header; refuses a malformed or truncated file or an unsupported dtype.

    Each tensor's byte range must lie inside the data section and hold exactly shape x itemsize bytes."""
    header, base, size = header_table(path)
    header.pop("__metadata__", None)
    return {name: header_entry(path, name, info, base, size) for name, info in header.items()}


def header_table(path: Path) -> tuple[dict[str, Any], int, int]:
    """The header's JSON object, where the data section starts, and the file size."""
    fix = "re-export the model or copy the file again"
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            raw = handle.read(8)
            if len(raw) < 8:
                raise UsageError(f"{path}: not a safetensors file (too short); {fix}")
            (length,) = struct.unpack("<Q", raw)
            if length > min(MAX_HEADER, size - 8):
                raise UsageError(f"{path}: not a safetensors file (bad header length); {fix}")
            text = handle.read(length).decode("utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror}); {fix}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: the safetensors header is not UTF-8 text; {fix}") from None
    try:
        header = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: the safetensors header is not valid JSON ({exc.msg}); {fix}") from None
    if not isinstance(header, dict):
        raise UsageError(f"{path}: the safetensors header is {json_kind(header)}, not a JSON object; {fix}")
    return header, 8 + length, size


def header_entry(path: Path, name: str, info: Any, base: int, size: int) -> SourceTensor:
    """One tensor's entry: a dtype, a shape of whole numbers, and a byte range that fits both."""
    where = f"{path}: tensor {name}"
    fix = "re-export the model or copy the file again"
    if not isinstance(info, dict):
        raise UsageError(f"{where}: its header entry is {json_kind(info)}, not an object; {fix}")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str):
        raise UsageError(f"{where}: no dtype in the header; {fix}")
    if dtype not in DTYPES:
        raise UsageError(
            f"{where} is {dtype}; only F32/F16/BF16 weights convert: merge or dequantize to a float model first"
        )
    if not isinstance(shape, list) or not all(is_whole(n) for n in shape):
        raise UsageError(f"{where}: shape {json.dumps(shape)} is not a list of whole numbers; {fix}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_whole(n) for n in offsets)):
        raise UsageError(f"{where}: data_offsets {json.dumps(offsets)} is not two whole numbers; {fix}")
    start, end = offsets
    if end < start:
        raise UsageError(f"{where}: data_offsets {offsets} end before they start; {fix}")
    if base + end > size:
        past = counted(base + end - size, "byte")
        raise UsageError(f"{where}: ends {past} past the end of the file (truncated?); {fix}")
    nbytes = prod(shape) * DTYPES[dtype][1]
    if end - start != nbytes:
        raise UsageError(
            f"{where}: shape {shape} of {dtype} is {counted(nbytes, 'byte')}, but its data_offsets span "
            f"{counted(end - start, 'byte')}; {fix}"
        )
    return SourceTensor(name, path, dtype, tuple(shape), base + start, nbytes)


def is_whole(value: Any) -> bool:
    """A non-negative int (JSON's true/false are not sizes)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_index(model_dir: Path) -> dict[str, str] | None:
    """The shard index's weight_map (tensor name -> shard file name), or None without an index."""
    index = model_dir / INDEX_NAME
    if not index.is_file():
        return None
    fix = "copy model.safetensors.index.json from the model again (or remove it for a single-file model)"
    weight_map = mapping(read_json_object(index, fix), "weight_map", index, fix)
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard or Path(shard).name != shard:
            raise UsageError(f"{index}: tensor {name} names shard {json.dumps(shard)}, not a file name; {fix}")
    return weight_map


def model_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a model folder: the shards named by its index, or every *.safetensors."""
    weight_map = read_index(model_dir)
    if weight_map is not None:
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (model_dir / n).is_file()]
        if missing:
            raise UsageError(f"{model_dir / INDEX_NAME}: shard {missing[0]} is missing; download or copy every shard")
        return [model_dir / n for n in names]
    files = sorted(p for p in model_dir.glob("*.safetensors") if p.name != ADAPTER_WEIGHTS)
    if not files:
        hint = "re-save it with safe_serialization=True" if any(model_dir.glob("*.bin")) else "export the model"
        raise UsageError(f"{model_dir}: no *.safetensors weights found; {hint}")
    return files


def index_model(model_dir: Path) -> dict[str, SourceTensor]:
    """Every tensor of a model folder by name, checked against the shard index when there is one."""
    tensors: dict[str, SourceTensor] = {}
    for path in model_files(model_dir):
        tensors.update(read_header(path))
    weight_map = read_index(model_dir) or {}
    absent = sorted(set(weight_map) - set(tensors))
    if absent:
        raise UsageError(
            f"{model_dir / INDEX_NAME}: tensor {absent[0]} is not in {weight_map[absent[0]]}; copy that shard again"
        )
    return tensors


class MappedFiles:
    """Read-only memory maps of safetensors files, opened on first use and closed together."""

    def __init__(self) -> None:
        self._maps: dict[Path, tuple[Any, mmap.mmap]] = {}

    def _map(self, path: Path) -> mmap.mmap:
        if path not in self._maps:
            handle = open(path, "rb")
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            if hasattr(mmap, "MADV_SEQUENTIAL"):
                mapped.madvise(mmap.MADV_SEQUENTIAL)
            self._maps[path] = (handle, mapped)
        return self._maps[path][1]

    def fileno(self, path: Path) -> int:
        self._map(path)
        return self._maps[path][0].fileno()

    def rows(self, tensor: SourceTensor, start: int, count: int) -> Any:
        """Rows ``start .. start+count`` of ``tensor`` as a (count, row_len) numpy view of the map."""
        import numpy as np

        dtype = np.dtype(DTYPES[tensor.dtype][0])
        offset = tensor.offset + start * tensor.row_len * dtype.itemsize
        flat = np.frombuffer(self._map(tensor.path), dtype=dtype, count=count * tensor.row_len, offset=offset)
        return flat.reshape(count, tensor.row_len)

    def release(self, tensor: SourceTensor, start: int, count: int) -> None:
        """Drop the mapped pages of these rows from the resident set (the data stays in the page cache)."""
        if not hasattr(mmap, "MADV_DONTNEED"):
            return
        first = tensor.offset + start * tensor.row_len * tensor.itemsize
        last = first + count * tensor.row_len * tensor.itemsize
        first = -(-first // PAGE) * PAGE  # only whole pages inside the range
        last = last // PAGE * PAGE
        if last > first:
            self._map(tensor.path).madvise(mmap.MADV_DONTNEED, first, last - first)

    def close(self) -> None:
        for handle, mapped in self._maps.values():
            try:
                mapped.close()
            except BufferError:  # a numpy view is still alive; the map closes when it is collected
                pass
            handle.close()
        self._maps.clear()


def copy_range(src_fd: int, offset: int, nbytes: int, dst_fd: int) -> None:
    """Copy file bytes to the current position of ``dst_fd`` inside the kernel (no user-space buffer)."""
    done = 0
    try:
        while done < nbytes:
            n = os.copy_file_range(src_fd, dst_fd, nbytes - done, offset + done)
            if n == 0:
                break
            done += n
    except (AttributeError, OSError):
        pass
    while done < nbytes:  # fallback: plain reads in bounded pieces
        piece = os.pread(src_fd, min(64 << 20, nbytes - done), offset + done)
        if not piece:
            raise OSError(f"unexpected end of file reading {nbytes} bytes at {offset}")
        view = memoryview(piece)
        while view:
            view = view[os.write(dst_fd, view) :]
        done += len(piece)
