"""Hugging Face safetensors model folder -> GGUF that llama.cpp and Ollama load.

``convert_model`` is the library entry point (the ``orchestrator gguf convert`` command and the
pipeline's gguf stage both call it). Stages: check the folder and the output path (never one of the
inputs), read and check the config, index the tensors, plan every output tensor (each shape checked
against the config), read the tokenizer, check disk space, then write through ``fsutil.atomic_path``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.fsutil import atomic_path, temp_path
from orchestrator.gguf.arch import check_model_folder
from orchestrator.gguf.source import INDEX_NAME
from orchestrator.gguf.stream import check_disk, check_output, write_gguf
from orchestrator.gguf.types import (
    KQUANT_TYPES,
    QUANTIZE_TO_KEY,
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
            written as F16/BF16 with ``result.kquant_route == "ollama"`` for Ollama to quantize, under a
            name that says so when ``out_path`` names the K-quant (``X-q4_k_m.gguf`` -> ``X-bf16.gguf``):
            ``result.path`` is the file written.
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
    check_model_folder(model_dir)
    check_output(out_path, model_inputs(model_dir))
    options = {"chat_template": chat_template, "name": name}
    if out_type in KQUANT_TYPES:
        return convert_kquant(model_dir, out_path, out_type, started, options, on_progress)
    return write_prepared(prepare_model(model_dir, out_type, **options), out_path, started, on_progress)


def write_prepared(prepared: Prepared, out_path: Path, started: float, on_progress: ProgressFn | None) -> ConvertResult:
    """Check the disk, then write the GGUF under a temporary name renamed into place at the end."""
    check_disk(out_path, prepared.need)
    with atomic_path(out_path, "partial") as tmp:
        size = write_gguf(tmp, prepared.writer, prepared.plans, on_progress)
    return prepared.result(out_path, size, started)


def model_inputs(model_dir: Path) -> list[Path]:
    """The files of a model folder a conversion reads, which its output must not replace."""
    names = ("config.json", INDEX_NAME, "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
    return sorted(model_dir.glob("*.safetensors")) + [model_dir / n for n in (*names, "chat_template.json")]


@dataclass
class Prepared:
    """A model read, checked and planned: what is left is writing ``writer``'s header and the tensors."""

    writer: Any
    plans: list[Any]
    arch_name: str
    out_type: str
    file_type: Any
    n_params: int
    notes: list[str]
    chat_template_source: str | None
    need: int  # bytes the file will take, for the disk check

    def result(self, out_path: Path, size: int, started: float) -> ConvertResult:
        for note in self.notes:
            log.info("%s: %s", out_path.name, note)
        return ConvertResult(
            path=out_path,
            kind="model",
            architecture=self.arch_name,
            requested_type=self.out_type,
            file_type=short_file_type(self.file_type),
            tensor_types=dict(Counter(p.qtype for p in self.plans)),
            bytes_written=size,
            duration_s=time.monotonic() - started,
            parameter_count=self.n_params,
            notes=self.notes,
            chat_template_source=self.chat_template_source,
        )


def prepare_model(model_dir: Path, out_type: str, *, chat_template: str | None, name: str | None) -> Prepared:
    """Read and check the folder (config, tensors, tokenizer), plan every tensor, fill the writer's header."""
    import gguf

    from orchestrator.gguf.arch import add_arch_metadata, load_arch
    from orchestrator.gguf.plan import plan_model
    from orchestrator.gguf.source import index_model
    from orchestrator.gguf.stream import add_tensor_infos
    from orchestrator.gguf.vocab import add_vocab, load_vocab

    arch = load_arch(model_dir)
    plans = plan_model(arch, index_model(model_dir), out_type, str(model_dir))
    vocab = load_vocab(model_dir, arch.n_vocab, chat_template)
    writer = gguf.GGUFWriter(None, arch.name)
    add_tensor_infos(writer, plans)
    n_params = add_general(writer, gguf.GGUFType.MODEL, name or model_dir.resolve().name)
    file_type = gguf.LlamaFileType[file_type_name(out_type)]
    notes = add_arch_metadata(writer, arch, int(file_type))
    add_vocab(writer, vocab)
    notes += [p.note for p in plans if p.note]
    if vocab.chat_template is None:
        notes.append("no chat template in the model folder or the arguments; Ollama will need a TEMPLATE")
    need = sum(p.nbytes for p in plans) + len(vocab.tokens) * 64
    return Prepared(writer, plans, arch.name, out_type, file_type, n_params, notes, vocab.chat_template_source, need)


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


def sixteen_bit_path(out_path: Path, out_type: str, mid_type: str) -> Path:
    """The name of a file left 16-bit for Ollama: ``X-q4_k_m.gguf`` -> ``X-bf16.gguf`` (the type at the end of
    the name, after ``-``, ``_`` or ``.``, in its case); a name that claims no type is kept."""
    name = out_path.name
    stem, ext = (name[:-5], name[-5:]) if name.lower().endswith(".gguf") else (name, "")
    match = re.search(rf"(?:^|(?<=[-_.])){re.escape(out_type)}$", stem, re.IGNORECASE)
    if match is None:
        return out_path
    new_type = mid_type.upper() if match.group().isupper() else mid_type
    return out_path.with_name(stem[: match.start()] + new_type + ext)


def convert_kquant(
    model_dir: Path,
    out_path: Path,
    out_type: str,
    started: float,
    options: dict[str, Any],
    on_progress: ProgressFn | None,
) -> ConvertResult:
    """A K-quant: 16-bit GGUF, then llama-quantize here, or Ollama's quantizer at registration."""
    from orchestrator.gguf.kquant import require_route

    tool = require_route(out_type)
    mid_type = sixteen_bit_type(model_dir)
    if tool is None:
        return convert_for_ollama(model_dir, out_path, out_type, mid_type, started, options, on_progress)
    prepared = prepare_model(model_dir, mid_type, **options)
    return quantize_locally(tool, prepared, out_path, out_type, started, on_progress)


def convert_for_ollama(
    model_dir: Path,
    out_path: Path,
    out_type: str,
    mid_type: str,
    started: float,
    options: dict[str, Any],
    on_progress: ProgressFn | None,
) -> ConvertResult:
    """No llama-quantize: the 16-bit GGUF, named for its type, with the K-quant Ollama is to make recorded
    in its header (``QUANTIZE_TO_KEY``), so registering the file alone asks for it."""
    path = sixteen_bit_path(out_path, out_type, mid_type)
    if path != out_path:
        check_output(path, model_inputs(model_dir))
        log.info("%s: llama-quantize not found; writing %s to %s instead", out_path, mid_type.upper(), path.name)
    target = ollama_quantize_name(out_type)
    prepared = prepare_model(model_dir, mid_type, **options)
    prepared.writer.add_string(QUANTIZE_TO_KEY, target)
    result = write_prepared(prepared, path, started, on_progress)
    result.requested_type, result.kquant_route, result.ollama_quantize = out_type, "ollama", target
    return result


def quantize_locally(
    tool: Path, prepared: Prepared, out_path: Path, out_type: str, started: float, on_progress: ProgressFn | None
) -> ConvertResult:
    """The 16-bit GGUF as a temporary beside ``out_path``, quantized into ``out_path`` by llama-quantize."""
    from orchestrator.gguf.kquant import run_llama_quantize

    mid_type = prepared.out_type
    check_disk(out_path, 2 * prepared.need)  # the 16-bit file and the quantized one, side by side
    # The 16-bit file is a temporary of out_path too, so a killed run's copy is removed by the next one.
    mid_path = temp_path(out_path, f"{mid_type}.gguf")
    with atomic_path(out_path, "quantize") as tmp:
        try:
            size = write_gguf(mid_path, prepared.writer, prepared.plans, on_progress)
            log_path = run_llama_quantize(tool, mid_path, tmp, out_path, out_type)
        finally:
            with contextlib.suppress(FileNotFoundError):
                mid_path.unlink()
    result = prepared.result(out_path, size, started)
    info = read_tensor_types(out_path)
    result.requested_type, result.kquant_route = out_type, "llama-quantize"
    result.file_type, result.tensor_types = info["file_type"], info["tensor_types"]
    result.bytes_written = out_path.stat().st_size
    result.notes.append(f"quantized from {mid_type.upper()} by {tool} (log: {log_path})")
    result.duration_s = time.monotonic() - started
    return result


def read_tensor_types(path: Path) -> dict[str, Any]:
    from orchestrator.gguf.inspect import inspect_gguf

    info = inspect_gguf(path)
    return {"file_type": info["file_type"], "tensor_types": info["tensor_types"]}
