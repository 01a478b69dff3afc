"""What registration needs to know about a GGUF before sending it: its architecture, file type and kind.

Only the header is read, with the project's own reader (``orchestrator.gguf.header``): the gguf
package's reader maps every tensor and vocabulary string, which takes many seconds on a full Qwen3
file. The tensor table is checked against the file's size, as Ollama's decoder does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import StageError, UsageError


@dataclass
class GGUFInfo:
    path: Path
    architecture: str
    file_type: str  # as Ollama names it: F16, Q8_0, Q4_K_M... ("unknown" when the key is missing)
    kind: str  # general.type: "model" or "adapter"
    quantize_to: str | None = None  # the type the converter left to Ollama (gguf.types.QUANTIZE_TO_KEY)


def check_gguf_path(path: Path) -> Path:
    """``path`` when it is a file; a folder or a missing path is a UsageError saying which."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.gguf"))
        hint = f" (it holds {', '.join(inside[:3])})" if inside else ""
        raise UsageError(f"{path} is a folder, not a GGUF file{hint}; pass the .gguf file itself")
    if not path.is_file():
        raise UsageError(f"GGUF not found: {path}; run the gguf stage first (or pass the right path)")
    return path


def read_gguf_info(path: Path, *, expect_adapter: bool | None = None) -> GGUFInfo:
    """Architecture, file type, kind and the type to quantize to from a GGUF's header; ``expect_adapter``
    checks the kind. A file that is no GGUF (or whose header cannot be read) is a UsageError worded as
    ``gguf inspect`` words it; a GGUF cut short is a StageError (the gguf stage must write it again)."""
    path = check_gguf_path(path)
    import gguf

    from orchestrator.gguf.header import read_gguf_header
    from orchestrator.gguf.types import QUANTIZE_TO_KEY

    header = read_gguf_header(path)
    end = max((t.offset + t.n_bytes for t in header.tensors), default=header.data_offset)
    if end > header.file_size:
        raise StageError(
            f"{path} is not a readable GGUF (its tensors run to byte {end}, past the end of the "
            f"{header.file_size}-byte file: it was cut short); rerun the gguf stage to write it again"
        )
    kv = header.kv
    try:
        file_type = gguf.LlamaFileType(int(kv[gguf.Keys.General.FILE_TYPE])).name
        type_name = file_type.removeprefix("MOSTLY_").removeprefix("ALL_")
    except (KeyError, TypeError, ValueError):
        type_name = "unknown"
    architecture = str(kv.get(gguf.Keys.General.ARCHITECTURE) or "")
    kind = str(kv.get(gguf.Keys.General.TYPE) or "model")
    quantize_to = kv.get(QUANTIZE_TO_KEY)
    info = GGUFInfo(path, architecture, type_name, kind, str(quantize_to) if quantize_to is not None else None)
    if expect_adapter is True and info.kind != "adapter":
        raise UsageError(f"{path} is not a LoRA adapter GGUF (general.type is '{info.kind}', not 'adapter')")
    if expect_adapter is False and info.kind == "adapter":
        raise UsageError(f"{path} is a LoRA adapter GGUF; register it with a base model (the adapter route)")
    return info
