"""PEFT LoRA adapter folder -> GGUF LoRA adapter (``general.type = adapter``), served on top of an
Ollama base model (``FROM base`` + ``ADAPTER adapter.gguf``) without merging.

Each adapted weight W becomes ``<gguf name of W>.lora_a`` (r x in) and ``.lora_b`` (out x r); llama.cpp
scales B·A by ``adapter.lora.alpha / r``. PEFT scalings llama.cpp does not know (rsLoRA, per-module
alpha) are folded into that alpha or into lora_b, so the product applied is the one trained.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.fsutil import atomic_path
from orchestrator.gguf.jsonio import count, flag, mapping, number, read_json_object
from orchestrator.gguf.types import ADAPTER_TYPES, ConvertResult, file_type_name, normalize_type

log = logging.getLogger(__name__)

LORA = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[A-Za-z0-9_-]+)?\.weight$")
EXPERT_MODULE = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate|up|down)_proj$")
ADAPTER_FILE = "adapter_model.safetensors"
PEFT_DEFAULT_ALPHA = 8.0  # LoraConfig.lora_alpha when adapter_config.json has none


def convert_adapter(
    adapter_dir: str | Path,
    out_path: str | Path,
    *,
    base_model_dir: str | Path | None = None,
    out_type: str = "f16",
    on_progress: Callable[[int, int], None] | None = None,
) -> ConvertResult:
    """Convert a PEFT LoRA adapter folder into a GGUF LoRA adapter for llama.cpp / Ollama.

    Args:
        adapter_dir: folder with adapter_config.json and adapter_model.safetensors.
        out_path: the adapter .gguf to write (temporary name, renamed at the end).
        base_model_dir: the base model's folder (its config.json names the architecture); default: the
            adapter's base_model_name_or_path when that is a local folder or in the Hugging Face cache.
        out_type: f32, f16 (default), bf16 or q8_0 for the lora tensors.
        on_progress: called with (bytes written, bytes total).
    """
    import gguf

    from orchestrator.gguf.arch import load_arch
    from orchestrator.gguf.convert import add_general, short_file_type
    from orchestrator.gguf.source import read_header
    from orchestrator.gguf.stream import add_tensor_infos, check_disk, check_output, write_gguf

    started = time.monotonic()
    adapter_dir, out_path = Path(adapter_dir), Path(out_path)
    out_type = normalize_type(out_type, ADAPTER_TYPES)
    lora_config = read_adapter_config(adapter_dir)
    base = base_dir(adapter_dir, lora_config, base_model_dir)
    inputs = [adapter_dir / ADAPTER_FILE, adapter_dir / "adapter_config.json", base / "config.json"]
    check_output(out_path, inputs)
    arch = load_arch(base)
    sources = read_header(adapter_dir / ADAPTER_FILE)
    plans, alpha, notes = plan_adapter(arch, sources, lora_config, out_type, str(adapter_dir / ADAPTER_FILE))
    check_disk(out_path, sum(p.nbytes for p in plans))

    writer = gguf.GGUFWriter(None, arch.name)
    add_tensor_infos(writer, plans)
    add_general(writer, gguf.GGUFType.ADAPTER, adapter_dir.resolve().name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    file_type = gguf.LlamaFileType[file_type_name(out_type)]
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    with atomic_path(out_path, "partial") as tmp:
        size = write_gguf(tmp, writer, plans, on_progress)
    return ConvertResult(
        path=out_path,
        kind="adapter",
        architecture=arch.name,
        requested_type=out_type,
        file_type=short_file_type(file_type),
        tensor_types=dict(Counter(p.qtype for p in plans)),
        bytes_written=size,
        duration_s=time.monotonic() - started,
        parameter_count=sum(p.n_elements for p in plans),
        notes=notes + [p.note for p in plans if p.note],
    )


def read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    """adapter_config.json, refusing model folders, non-LoRA PEFT types, DoRA and bad r / lora_alpha.

    The returned config has ``r`` and ``lora_alpha`` checked (alpha defaults to PEFT's 8) and
    ``alpha_pattern`` as a map of numbers."""
    path = adapter_dir / "adapter_config.json"
    if adapter_dir.is_file():
        raise UsageError(f"{adapter_dir}: is a file, not a folder; pass the adapter's folder (adapter_config.json)")
    if not path.is_file():
        if (adapter_dir / "config.json").is_file():
            raise UsageError(
                f"{adapter_dir}: this is a model folder, not a LoRA adapter; convert it without --adapter "
                "(serve: merged)"
            )
        raise UsageError(f"{adapter_dir}: no adapter_config.json, so not a PEFT adapter folder")
    if not (adapter_dir / ADAPTER_FILE).is_file():
        raise UsageError(f"{adapter_dir}: {ADAPTER_FILE} is missing; save the adapter with safe_serialization")
    fix = "fix adapter_config.json (PEFT's save_pretrained writes it) or save the adapter again"
    config = read_json_object(path, fix)
    config["r"] = count(config, "r", path, fix)
    config["lora_alpha"] = number(config, "lora_alpha", path, fix, PEFT_DEFAULT_ALPHA)
    pattern = mapping(config, "alpha_pattern", path, fix)
    config["alpha_pattern"] = {key: number(pattern, key, path, f"alpha_pattern: {fix}") for key in pattern}
    config["use_rslora"] = flag(config, "use_rslora", path, fix)
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise UsageError(f"{path}: peft_type {config.get('peft_type')} is not LoRA; only LoRA adapters convert")
    if config.get("use_dora"):
        raise UsageError(f"{path}: DoRA adapters have no GGUF form; serve this run merged (serve: merged)")
    return config


def base_dir(adapter_dir: Path, lora_config: dict[str, Any], given: str | Path | None) -> Path:
    """The base model's local folder: the argument, else base_model_name_or_path (folder or HF cache)."""
    if given is not None:
        return Path(given)
    name = lora_config.get("base_model_name_or_path") or ""
    candidates = [Path(name)] if name else []
    if name and "/" in name and not Path(name).exists():
        candidates += hub_snapshots(name)
    for folder in candidates:
        if (folder / "config.json").is_file():
            return folder
    raise UsageError(
        f"{adapter_dir}: base model {name or '(unnamed)'} is not a local folder; pass the base model's folder "
        "(--base / base_model_dir) so its config.json names the architecture"
    )


def hub_snapshots(repo_id: str) -> list[Path]:
    """Snapshot folders of ``repo_id`` in the local Hugging Face cache, newest first."""
    roots = [os.environ.get("HF_HUB_CACHE"), os.environ.get("HF_HOME") and str(Path(os.environ["HF_HOME"]) / "hub")]
    roots.append(str(Path.home() / ".cache" / "huggingface" / "hub"))
    found: list[Path] = []
    for root in filter(None, roots):
        snapshots = Path(root) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
        if snapshots.is_dir():
            found += sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    return found


def plan_adapter(
    arch: Any, sources: dict[str, Any], lora_config: dict[str, Any], out_type: str, where: str
) -> tuple[list[Any], float, list[str]]:
    """lora_a/lora_b tensors named after the base model's GGUF tensors; returns (plans, alpha, notes)."""
    import gguf

    from orchestrator.gguf.plan import map_name
    from orchestrator.gguf.shapes import layout

    lay = layout(arch.name, arch.dims())
    pairs = lora_pairs(sources, where)
    rank, alpha = lora_config["r"], lora_config["lora_alpha"]
    gguf_alpha = alpha * math.sqrt(rank) if lora_config.get("use_rslora") else alpha
    name_map = gguf.get_tensor_name_map(arch.gguf_arch, arch.n_layer)
    plans, experts = [], {}
    for module, ab in pairs.items():
        if m := EXPERT_MODULE.match(module):
            experts.setdefault((int(m[1]), m[3]), {})[int(m[2])] = (module, ab)
            continue
        if arch.tied and module == "lm_head":
            raise UsageError(f"{where}: LoRA on lm_head of a model with tied embeddings cannot be served as an adapter")
        gname = map_name(name_map, f"{module}.weight", where)
        check_lora_shapes(lay, arch, gname, module, ab, where)
        factor = scale_factor(module, ab, lora_config, gguf_alpha)
        plans += lora_tensors(arch, gname, module, [ab], factor, out_type)
    for (bid, proj), by_expert in sorted(experts.items()):
        gname = map_name(name_map, f"model.layers.{bid}.mlp.experts.{proj}_proj.weight", where)
        if sorted(by_expert) != list(range(arch.n_expert)):
            raise UsageError(
                f"{where}: layer {bid} {proj}_proj has LoRA on {len(by_expert)} of {arch.n_expert} experts"
            )
        abs_ = [by_expert[e][1] for e in range(arch.n_expert)]
        for expert_module, expert_ab in by_expert.values():
            check_lora_shapes(lay, arch, gname, expert_module, expert_ab, where)
        factor = scale_factor(by_expert[0][0], abs_[0], lora_config, gguf_alpha)
        plans += lora_tensors(arch, gname, by_expert[0][0], abs_, factor, out_type)
    if not plans:
        raise UsageError(f"{where}: no LoRA tensors found")
    notes = [f"rsLoRA scaling folded into adapter.lora.alpha = {gguf_alpha:g}"] if gguf_alpha != alpha else []
    return sorted(plans, key=adapter_order), gguf_alpha, notes


def check_lora_shapes(lay: Any, arch: Any, gname: str, module: str, ab: dict[str, Any], where: str) -> None:
    """lora_A (r x in) and lora_B (out x r) must fit the base weight, as the base's config.json shapes it."""
    from orchestrator.gguf.shapes import expected_shape, shape_text

    want = expected_shape(lay, gname, arch.n_layer)
    if want is None or len(want) < 2:
        raise UsageError(f"{where}: {module} adapts {gname}, which llama.cpp's {arch.name} has no matrix for")
    out_dim, in_dim = want[-2:]  # an expert's slice of a stacked expert tensor
    a, b = ab["A"].shape, ab["B"].shape
    if len(a) != 2 or len(b) != 2 or a[1] != in_dim.size or b[0] != out_dim.size or b[1] != a[0]:
        raise UsageError(
            f"{where}: {module}: lora_A {shape_text(a)} and lora_B {shape_text(b)} do not fit the base weight "
            f"[{out_dim.size}, {in_dim.size}] ({out_dim.label}, {in_dim.label} in the base config.json); "
            "pass the base model this adapter was trained on (--base)"
        )


def lora_pairs(sources: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    pairs: dict[str, dict[str, Any]] = {}
    for name, src in sources.items():
        m = LORA.match(name)
        if m is None:
            if "lora_embedding" in name or "embed_tokens" in name or "lm_head" in name or "modules_to_save" in name:
                raise UsageError(
                    f"{where}: {name} holds full or embedding weights (modules_to_save, resized vocabulary), "
                    "which a GGUF LoRA cannot carry; serve this run merged (serve: merged)"
                )
            raise UsageError(f"{where}: unexpected tensor {name}; is this a PEFT LoRA adapter?")
        pairs.setdefault(m["module"], {})[m["ab"]] = src
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise UsageError(f"{where}: {module} has lora_{''.join(ab)} but not its pair; save the adapter again")
    return pairs


def scale_factor(module: str, ab: dict[str, Any], lora_config: dict[str, Any], gguf_alpha: float) -> float:
    """What lora_b must be multiplied by so llama.cpp's alpha/r equals PEFT's scaling for this module."""
    rank = ab["A"].shape[0]
    alpha = lora_config["lora_alpha"]
    for key, value in lora_config["alpha_pattern"].items():
        if re.fullmatch(rf"(.*\.)?{key}", module):
            alpha = float(value)
            break
    peft_scale = alpha / math.sqrt(rank) if lora_config.get("use_rslora") else alpha / rank
    return peft_scale * rank / gguf_alpha


def lora_tensors(arch: Any, gname: str, module: str, abs_: list[dict[str, Any]], factor: float, out_type: str) -> list:
    """The lora_a and lora_b plans of one weight (several experts stack into one 3-D pair)."""
    from orchestrator.gguf.plan import Part, PlannedTensor, head_parts, whole

    stacked = len(abs_) > 1
    a_parts = [whole(ab["A"]) for ab in abs_]
    b_parts: list[Part] = []
    for ab in abs_:
        if arch.permute_qk and re.search(r"self_attn\.[qk]_proj$", module):
            b_parts += head_parts(ab["B"], arch.n_head if module.endswith("q_proj") else arch.n_head_kv)
        else:
            b_parts.append(whole(ab["B"]))
    if abs(factor - 1.0) > 1e-9:
        for part in b_parts:
            part.scale = factor
    a_shape, b_shape = abs_[0]["A"].shape, abs_[0]["B"].shape
    if stacked:
        a_shape, b_shape = (len(abs_), *a_shape), (len(abs_), *b_shape)
    plans = [
        PlannedTensor(gname + ".lora_a", a_shape, "", a_parts),
        PlannedTensor(gname + ".lora_b", b_shape, "", b_parts),
    ]
    for plan in plans:
        plan.qtype, plan.note = adapter_type(plan, out_type)
    return plans


def adapter_type(plan: Any, out_type: str) -> tuple[str, str | None]:
    import gguf

    qtype = out_type.upper()
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]][0]
    if plan.row_len % block:
        return "F16", f"{plan.name}: row length {plan.row_len} is not a multiple of {block}; written as F16"
    return qtype, None


def adapter_order(plan: Any) -> tuple[int, int, str]:
    from orchestrator.gguf.plan import tensor_order

    return tensor_order(plan)
