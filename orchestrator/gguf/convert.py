"""Hugging Face safetensors model folder -> GGUF that llama.cpp and Ollama load.

``convert_model`` is the library entry point (the ``orchestrator gguf convert`` command and the
pipeline's gguf stage both call it). Stages: check the folder and its config, index the tensors,
read the tokenizer, plan every output tensor, check disk space, then write under a temporary name.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.gguf.types import (
    KQUANT_TYPES,
    ConvertResult,
    file_type_name,
    normalize_type,
    ollama_quantize_name,
)

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


def convert_model(
    model_dir: str | Path,
    out_path: str | Path,
    out_type: str = "q8_0",
    *,
    chat_template: str | None = None,
    on_progress: ProgressFn | None = None,
    name: str | None = None,
) -> ConvertResult:
    """Convert a merged Qwen3 / Qwen3-MoE / Qwen2 / Llama safetensors folder into one GGUF file.

    Args:
        model_dir: folder with config.json, *.safetensors (one file or shards + index) and tokenizer files.
        out_path: the .gguf to write; written under a temporary name and renamed at the end.
        out_type: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1, or a K-quant (q4_k_m, q4_k_s, q5_k_m, q5_k_s,
            q6_k, q3_k_m, q2_k...). K-quants run llama-quantize when found; otherwise q4_k_m/q4_k_s are
            written as F16/BF16 with ``result.kquant_route == "ollama"`` for Ollama to quantize.
        chat_template: the Jinja template the model was trained with; None takes the folder's own.
        on_progress: called with (bytes written, bytes total) of tensor data.
        name: general.name in the file (default: the folder's name).

    Raises:
        UsageError: bad input (not a model, unknown architecture, missing tokenizer, bad type).
        OrchestratorError: not enough disk space; StageError: llama-quantize failed.
    """
    started = time.monotonic()
    model_dir, out_path = Path(model_dir), Path(out_path)
    out_type = normalize_type(out_type)
    options = {"chat_template": chat_template, "on_progress": on_progress, "name": name}
    if out_type in KQUANT_TYPES:
        return convert_kquant(model_dir, out_path, out_type, started, options)
    return write_model(model_dir, out_path, out_type, started, **options)


def write_model(
    model_dir: Path,
    out_path: Path,
    out_type: str,
    started: float,
    *,
    chat_template: str | None = None,
    on_progress: ProgressFn | None = None,
    name: str | None = None,
) -> ConvertResult:
    """The conversion proper, for the types written here (floats and 32-blocks)."""
    import gguf

    from orchestrator.gguf.arch import add_arch_metadata, load_arch
    from orchestrator.gguf.plan import plan_model
    from orchestrator.gguf.source import index_model
    from orchestrator.gguf.stream import add_tensor_infos, atomic_output, check_disk, write_gguf
    from orchestrator.gguf.vocab import add_vocab, load_vocab

    arch = load_arch(model_dir)
    sources = index_model(model_dir)
    vocab = load_vocab(model_dir, arch.n_vocab, chat_template)
    plans = plan_model(arch, sources, out_type, str(model_dir))
    check_disk(out_path, sum(p.nbytes for p in plans) + len(vocab.tokens) * 64)

    writer = gguf.GGUFWriter(None, arch.name)
    add_tensor_infos(writer, plans)
    n_params = add_general(writer, gguf.GGUFType.MODEL, name or model_dir.resolve().name)
    file_type = gguf.LlamaFileType[file_type_name(out_type)]
    notes = add_arch_metadata(writer, arch, int(file_type))
    add_vocab(writer, vocab)
    notes += [p.note for p in plans if p.note]
    if vocab.chat_template is None:
        notes.append("no chat template in the model folder or the arguments; Ollama will need a TEMPLATE")
    with atomic_output(out_path) as tmp:
        size = write_gguf(tmp, writer, plans, on_progress)
    for note in notes:
        log.info("%s: %s", out_path.name, note)
    return ConvertResult(
        path=out_path,
        kind="model",
        architecture=arch.name,
        requested_type=out_type,
        file_type=short_file_type(file_type),
        tensor_types=dict(Counter(p.qtype for p in plans)),
        bytes_written=size,
        duration_s=time.monotonic() - started,
        parameter_count=n_params,
        notes=notes,
        chat_template_source=vocab.chat_template_source,
    )


def add_general(writer: Any, kind: str, name: str) -> int:
    """general.type, name and size label (from the tensor table); returns the parameter count."""
    import gguf

    total, shared, expert, n_expert = writer.get_total_parameter_count()
    writer.add_type(kind)
    writer.add_name(name)
    if total > 0:
        writer.add_size_label(gguf.size_label(total, shared, expert, n_expert))
    return abs(total)


def short_file_type(file_type: Any) -> str:
    """``LlamaFileType.MOSTLY_Q8_0`` -> ``Q8_0`` (``ALL_F32`` -> ``F32``)."""
    return file_type.name.partition("_")[2]


def sixteen_bit_type(model_dir: Path) -> str:
    """bf16 for a bfloat16 checkpoint, else f16: the lossless (or usual) input for a quantizer."""
    from orchestrator.gguf.source import index_model

    for tensor in index_model(model_dir).values():
        if len(tensor.shape) >= 2:
            return "bf16" if tensor.dtype == "BF16" else "f16"
    return "f16"


def convert_kquant(
    model_dir: Path, out_path: Path, out_type: str, started: float, options: dict[str, Any]
) -> ConvertResult:
    """A K-quant: 16-bit GGUF, then llama-quantize here, or Ollama's quantizer at registration."""
    from orchestrator.gguf.arch import check_model_folder
    from orchestrator.gguf.kquant import require_route, run_llama_quantize
    from orchestrator.gguf.stream import partial_path

    check_model_folder(model_dir)
    tool = require_route(out_type)
    mid_type = sixteen_bit_type(model_dir)
    if tool is None:
        result = write_model(model_dir, out_path, mid_type, started, **options)
        result.requested_type, result.kquant_route = out_type, "ollama"
        result.ollama_quantize = ollama_quantize_name(out_type)
        return result
    mid_path = partial_path(out_path, f"{mid_type}.gguf")
    try:
        result = write_model(model_dir, mid_path, mid_type, started, **options)
        log_path = run_llama_quantize(tool, mid_path, out_path, out_type)
    finally:
        with contextlib.suppress(FileNotFoundError):
            mid_path.unlink()
    info = read_tensor_types(out_path)
    result.path, result.requested_type, result.kquant_route = out_path, out_type, "llama-quantize"
    result.file_type, result.tensor_types = info["file_type"], info["tensor_types"]
    result.bytes_written = out_path.stat().st_size
    result.notes.append(f"quantized from {mid_type.upper()} by {tool} (log: {log_path})")
    result.duration_s = time.monotonic() - started
    return result


def read_tensor_types(path: Path) -> dict[str, Any]:
    from orchestrator.gguf.inspect import inspect_gguf

    info = inspect_gguf(path)
    return {"file_type": info["file_type"], "tensor_types": info["tensor_types"]}
