"""The tensor plan: which GGUF tensor is made of which source rows, in what shape and type.

Names come from gguf's own tensor-name map. A GGUF tensor is a run of row ranges ("parts") taken from
one or more source tensors: MoE experts are stacked by listing one part per expert, Llama's q/k rows
are reordered by a per-head permutation, and fused expert tensors are split by row range.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from math import prod
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.gguf.arch import ModelArch, llama3_rope_factors
from orchestrator.gguf.shapes import Layout, block_set_problems, expected_shape, layout, mismatch
from orchestrator.gguf.source import SourceTensor
from orchestrator.gguf.types import BLOCK_TYPES

log = logging.getLogger(__name__)

EXPERT = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight$")
FUSED_EXPERTS = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(gate_up|down)_proj(?:\.weight)?$")
SKIPPED = (".rotary_emb.inv_freq", ".attention.masked_bias")
# Output types whose output matrix is kept at Q8_0, as llama-quantize keeps it at a higher precision.
SMALL_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1")


@dataclass
class Part:
    """``n_rows`` rows of ``source`` from ``row_start``; ``perm`` reorders them, ``scale`` multiplies them;
    ``data`` replaces the source with a generated array."""

    source: SourceTensor | None
    row_start: int
    n_rows: int
    perm: Any = None
    data: Any = None
    scale: float | None = None


@dataclass
class PlannedTensor:
    name: str
    shape: tuple[int, ...]  # numpy order, as written in the tensor info
    qtype: str  # gguf.GGMLQuantizationType member name
    parts: list[Part] = field(default_factory=list)
    note: str | None = None

    @property
    def row_len(self) -> int:
        return self.shape[-1] if len(self.shape) > 1 else 1

    @property
    def n_elements(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        import gguf

        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[self.qtype]]
        return self.n_elements // block * size

    @property
    def src_dtype(self) -> str:
        return next((p.source.dtype for p in self.parts if p.source is not None), "F32")


def whole(src: SourceTensor) -> Part:
    return Part(src, 0, src.rows)


def head_parts(src: SourceTensor, n_heads: int) -> list[Part]:
    """One part per head, rows reordered from Hugging Face's rotate-half to llama.cpp's interleaved pairs."""
    import numpy as np

    per_head = src.rows // n_heads
    perm = np.arange(per_head).reshape(2, per_head // 2).T.reshape(-1)
    return [Part(src, h * per_head, per_head, perm) for h in range(n_heads)]


def map_name(name_map: Any, name: str, where: str) -> str:
    mapped = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
    if mapped is None:
        raise UsageError(f"{where}: tensor {name} has no GGUF counterpart; is this a supported, unmodified model?")
    return mapped


def plan_model(arch: ModelArch, sources: dict[str, SourceTensor], out_type: str, where: str) -> list[PlannedTensor]:
    """The full tensor plan of a model, in llama.cpp's usual order, with each tensor's output type.

    Every tensor's shape is checked against config.json, and every block must hold the same tensors."""
    import gguf

    name_map = gguf.get_tensor_name_map(arch.gguf_arch, arch.n_layer)
    lay = layout(arch.name, arch.dims(), output_required=not arch.tied)
    plans: dict[str, PlannedTensor] = {}
    experts: dict[tuple[int, str], dict[int, SourceTensor]] = {}
    checked = set()
    for name, src in sources.items():
        if name.endswith(SKIPPED) or (arch.tied and name == "lm_head.weight"):
            continue
        if m := EXPERT.match(name):
            experts.setdefault((int(m[1]), m[3]), {})[int(m[2])] = src
            continue
        if m := FUSED_EXPERTS.match(name):
            plans.update(fused_experts(name_map, int(m[1]), m[2], src, where))
            continue
        gname = map_name(name_map, name, where)
        check_shape(lay, arch, gname, src.shape, src)  # before head_parts, which needs whole heads
        checked.add(gname)
        parts = [whole(src)]
        if arch.permute_qk and re.search(r"\.self_attn\.[qk]_proj\.(weight|bias)$", name):
            parts = head_parts(src, arch.n_head if "q_proj" in name else arch.n_head_kv)
        plans[gname] = PlannedTensor(gname, src.shape, "", parts)
    for (bid, proj), by_expert in experts.items():
        plans.update(stacked_experts(name_map, arch, bid, proj, by_expert, where))
    for plan in plans.values():
        if plan.name not in checked:  # the stacked and the split expert tensors
            check_shape(lay, arch, plan.name, plan.shape, plan.parts[0].source)
    if arch.rope.kind == "llama3":
        gname = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        factors = llama3_rope_factors(arch)
        plans[gname] = PlannedTensor(gname, factors.shape, "F32", [Part(None, 0, factors.size, data=factors)])
    check_complete(arch, lay, plans, where)
    ordered = sorted(plans.values(), key=tensor_order)
    for plan in ordered:
        if not plan.qtype:
            plan.qtype, plan.note = choose_type(plan, out_type, arch, plans)
    return ordered


def check_shape(lay: Layout, arch: ModelArch, gname: str, shape: tuple[int, ...], src: Any) -> None:
    """Refuse a tensor whose shape is not the one config.json implies (llama.cpp would refuse the GGUF)."""
    want = expected_shape(lay, gname, arch.n_layer)
    config = src.path.parent / "config.json"
    if want is None:
        raise UsageError(
            f"{src.path}: tensor {src.name} ({gname}) is not one llama.cpp's {arch.name} loader reads; "
            f"is this an unmodified {arch.hf_arch} with the {config} saved with it?"
        )
    why = mismatch(tuple(shape), want)
    if why is not None:
        raise UsageError(
            f"{src.path}: tensor {src.name} ({gname}) {why} in {config}; the config does not match the weights: "
            "use the config.json saved with them"
        )


def stacked_experts(
    name_map: Any, arch: ModelArch, bid: int, proj: str, by_expert: dict[int, SourceTensor], where: str
) -> dict[str, PlannedTensor]:
    missing = [e for e in range(arch.n_expert) if e not in by_expert]
    if missing or len(by_expert) != arch.n_expert:
        raise UsageError(f"{where}: layer {bid} {proj}_proj has {len(by_expert)} of {arch.n_expert} experts")
    gname = map_name(name_map, f"model.layers.{bid}.mlp.experts.{proj}_proj.weight", where)
    first = by_expert[0]
    for src in by_expert.values():
        if src.shape != first.shape:
            raise UsageError(
                f"{src.path}: tensor {src.name} has shape {list(src.shape)}, but expert 0 has {list(first.shape)}; "
                "every expert must have the same shape: re-export the model"
            )
    parts = [whole(by_expert[e]) for e in range(arch.n_expert)]
    return {gname: PlannedTensor(gname, (arch.n_expert, *first.shape), "", parts)}


def fused_experts(name_map: Any, bid: int, kind: str, src: SourceTensor, where: str) -> dict[str, PlannedTensor]:
    """transformers' fused layout: gate_up_proj (E, 2*ff, embd) splits in two; down_proj (E, embd, ff)."""
    if len(src.shape) != 3 or (kind == "gate_up" and src.shape[1] % 2):
        raise UsageError(
            f"{src.path}: tensor {src.name} has shape {list(src.shape)}; a fused expert tensor is "
            "[experts, 2 x moe_intermediate_size or hidden_size, ...]: re-export the model"
        )
    n_exp, rows, cols = src.shape
    if kind == "down":
        gname = map_name(name_map, f"model.layers.{bid}.mlp.experts.down_proj.weight", where)
        return {gname: PlannedTensor(gname, src.shape, "", [whole(src)])}
    half = rows // 2
    out = {}
    for i, proj in enumerate(("gate", "up")):
        gname = map_name(name_map, f"model.layers.{bid}.mlp.experts.{proj}_proj.weight", where)
        parts = [Part(src, e * rows + i * half, half) for e in range(n_exp)]
        out[gname] = PlannedTensor(gname, (n_exp, half, cols), "", parts)
    return out


def check_complete(arch: ModelArch, lay: Layout, plans: dict[str, PlannedTensor], where: str) -> None:
    """Every block must have the same, complete set of tensors; a missing shard shows up here."""
    for required in ("token_embd.weight", "output_norm.weight"):
        if required not in plans:
            raise UsageError(f"{where}: {required} has no source tensor; the weights are incomplete")
    if not arch.tied and "output.weight" not in plans:
        raise UsageError(f"{where}: lm_head.weight is missing and tie_word_embeddings is false; re-export the model")
    problems = block_set_problems(lay, list(plans), arch.n_layer)
    if problems:
        name, why = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(
            f"{where}: {why}: {name} has no source tensor{more}; the checkpoint is incomplete: copy every shard again"
        )


def tensor_order(plan: PlannedTensor) -> tuple[int, int, str]:
    """token_embd first, then blocks in numeric order, then output_norm and output."""
    parts = plan.name.split(".")
    if parts[0] == "blk":
        return (1, int(parts[1]), plan.name)
    return (0 if parts[0] in ("token_embd", "rope_freqs") else 2, 0, plan.name)


def choose_type(plan: PlannedTensor, out_type: str, arch: ModelArch, plans: dict[str, Any]) -> tuple[str, str | None]:
    """The output type of one tensor, following llama.cpp: norms, biases, routers and 1-D tensors stay F32."""
    import gguf

    name = plan.name
    router = name.endswith(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.FFN_GATE_INP].split(".")[-1] + ".weight")
    if len(plan.shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight") or router:
        return "F32", None
    qtype = out_type.upper()
    note = None
    is_output = name == "output.weight" or (name == "token_embd.weight" and "output.weight" not in plans)
    if out_type in SMALL_TYPES and is_output:
        qtype = "Q8_0"
        note = f"{name}: kept at Q8_0 (the output matrix loses most from {out_type})"
    if out_type in BLOCK_TYPES or qtype == "Q8_0":
        block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]][0]
        if plan.row_len % block:
            note = f"{name}: row length {plan.row_len} is not a multiple of {block}; written as F16"
            qtype = "F16"
    return qtype, note
