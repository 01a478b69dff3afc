"""K-quants (Q4_K_M, Q6_K...): llama.cpp's llama-quantize when it is installed, else Ollama's quantizer.

The gguf package cannot produce K-quants. When ``llama-quantize`` is on PATH or under ``LLAMA_CPP_DIR``
the converter writes a 16-bit GGUF and quantizes it here; otherwise, for the K-quants Ollama's create
offers (Q4_K_S, Q4_K_M), it writes the 16-bit GGUF and leaves the quantization to Ollama.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from orchestrator.errors import StageError, UsageError
from orchestrator.fsutil import atomic_path
from orchestrator.gguf.types import OLLAMA_KQUANTS
from orchestrator.procs import run_logged

log = logging.getLogger(__name__)

TOOL = "llama-quantize"
# Where a llama.cpp checkout or release keeps the binary, relative to LLAMA_CPP_DIR.
TOOL_PLACES = ("build/bin", "bin", ".", "build/bin/Release")


def find_llama_quantize() -> Path | None:
    """``llama-quantize`` from PATH, else from ``$LLAMA_CPP_DIR`` (a checkout's build/bin or a release)."""
    found = shutil.which(TOOL)
    if found:
        return Path(found)
    root = os.environ.get("LLAMA_CPP_DIR")
    if root:
        for place in TOOL_PLACES:
            for name in (TOOL, f"{TOOL}.exe"):
                candidate = Path(root) / place / name
                if candidate.is_file() and os.access(candidate, os.X_OK):
                    return candidate
    return None


def require_route(out_type: str) -> Path | None:
    """The llama-quantize binary, or None when Ollama will quantize; refuses when neither can."""
    tool = find_llama_quantize()
    if tool is None and out_type not in OLLAMA_KQUANTS:
        raise UsageError(
            f"GGUF type {out_type} needs llama.cpp's llama-quantize, found neither on PATH nor under "
            "LLAMA_CPP_DIR; install llama.cpp (or set LLAMA_CPP_DIR to its folder), or choose q4_k_m or "
            "q4_k_s, which Ollama quantizes itself"
        )
    return tool


def run_llama_quantize(tool: Path, src: Path, tmp: Path, dst: Path, out_type: str) -> Path:
    """Quantize ``src`` into ``tmp`` (the caller's temporary name for ``dst``); returns the log's path.

    The tool's output goes to ``<dst>.llama-quantize.log``, which is kept when the tool fails."""
    log_path = dst.with_name(dst.name + ".llama-quantize.log")
    cmd = [str(tool), str(src), str(tmp), out_type.upper(), str(os.cpu_count() or 1)]
    with atomic_path(log_path) as log_tmp:
        code = run_logged(cmd, log_tmp, poll_seconds=0.2)
    if code == 127:
        raise StageError(f"cannot run {tool}; is it an executable llama-quantize? see {log_path}")
    if code != 0 or not tmp.is_file():
        raise StageError(f"llama-quantize failed (exit {code}) making {dst.name}; see {log_path}")
    return log_path
