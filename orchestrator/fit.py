"""Fit before training: the peak memory per GPU that a recipe's training needs, and the batch that fits.

Pure arithmetic over the base model's config.json (layers, hidden size, heads, MLP width, vocabulary, experts),
the method (LoRA on a 16-bit base, QLoRA on a 4-bit NF4 base), the LoRA rank and targets, ``cutoff_len``, the
micro-batch, gradient checkpointing and DeepSpeed ZeRO, as LLaMA-Factory 0.9.5 trains (transformers 5, PEFT,
bitsandbytes). The parts:

- weights: the frozen base. QLoRA quantizes only ``nn.Linear`` layers (about 4.13 bits a weight with double
  quantization); the embedding, the output layer and, in transformers 5, a MoE model's fused experts stay 16-bit.
- lora: the adapter in fp32 (LLaMA-Factory upcasts trainable parameters), its gradients and Adam's two moments.
- activations: what the backward pass keeps, counted per token and layer (fp32 RMSNorm inputs, q/k/v before and
  after their norms and rotary embedding, SDPA's inputs and output, the SwiGLU MLP's four intermediates). With
  gradient checkpointing only each layer's input is kept, plus one layer recomputed in full.
- logits: batch x cutoff_len x vocabulary. The loss upcasts them to fp32; at the backward's start the 16-bit
  logits, the fp32 log-softmax and two fp32 gradients are alive (14 bytes an entry: the part that dominates
  small Qwen3s, whose vocabulary has 151,936 entries).
- overhead: the CUDA context, cuBLAS workspaces and the caching allocator's fragmentation.

The worst case is estimated: every example ``cutoff_len`` tokens long (LLaMA-Factory pads a batch to its
longest). ZeRO is taken simply: ZeRO-2 shards the adapter's gradients and Adam states over all GPUs, ZeRO-3 also
the weights, and ZeRO-3 offload moves weights and Adam states to CPU memory (one layer is gathered at a time).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError

log = logging.getLogger(__name__)

GIB = 2**30
NF4_BYTES = 4.127 / 8  # 4-bit NF4 + 8-bit absmax per 64 weights + fp32 scale per 256 absmax (double quantization)
LORA_BYTES = 4 + 4 + 8  # fp32 weight, fp32 gradient, Adam's two fp32 moments
LOGIT_BYTES_32 = 12  # fp32 log-softmax + its gradient + the fp32 gradient of the logits
CUDA_CONTEXT_GIB = 0.75
FRAGMENTATION = 0.10  # of activations and logits: the caching allocator's blocks that are reserved but free

# Shapes of the Qwen3 family, used when a hub model's config.json cannot be read (the hub is unreachable and
# it is not in the cache). From rasbt/LLMs-from-scratch pkg/llms_from_scratch/qwen3.py (commit 28c65cd), whose
# configs load the published checkpoints; 0.6B, 1.7B and 4B tie the output layer to the embedding (their
# checkpoints have no lm_head.weight), the others do not. Every size has a 151,936-entry vocabulary.
_DENSE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "num_key_value_heads")
QWEN3_SHAPES: dict[str, dict[str, Any]] = {
    "0.6b": dict(zip(_DENSE, (1024, 28, 16, 3072, 8), strict=True), tie_word_embeddings=True),
    "1.7b": dict(zip(_DENSE, (2048, 28, 16, 6144, 8), strict=True), tie_word_embeddings=True),
    "4b": dict(zip(_DENSE, (2560, 36, 32, 9728, 8), strict=True), tie_word_embeddings=True),
    "8b": dict(zip(_DENSE, (4096, 36, 32, 12288, 8), strict=True), tie_word_embeddings=False),
    "14b": dict(zip(_DENSE, (5120, 40, 40, 17408, 8), strict=True), tie_word_embeddings=False),
    "32b": dict(zip(_DENSE, (5120, 64, 64, 25600, 8), strict=True), tie_word_embeddings=False),
    "30b-a3b": dict(
        zip(_DENSE, (2048, 48, 32, 6144, 4), strict=True),
        tie_word_embeddings=False,
        num_experts=128,
        num_experts_per_tok=8,
        moe_intermediate_size=768,
    ),
}
for _shape in QWEN3_SHAPES.values():
    _shape.update(head_dim=128, vocab_size=151_936)


@dataclass
class Shape:
    """The sizes of a decoder-only config.json (Qwen3, Qwen3-MoE, Qwen2, Llama)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ff: int
    vocab: int
    tied: bool
    experts: int = 0
    experts_used: int = 0
    ff_expert: int = 0

    @classmethod
    def of(cls, config: dict[str, Any], where: str) -> Shape:
        try:
            heads = int(config["num_attention_heads"])
            hidden = int(config["hidden_size"])
            return cls(
                hidden=hidden,
                layers=int(config["num_hidden_layers"]),
                heads=heads,
                kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                ff=int(config.get("intermediate_size") or 0),
                vocab=int(config["vocab_size"]),
                tied=bool(config.get("tie_word_embeddings", False)),
                experts=int(config.get("num_experts") or 0),
                experts_used=int(config.get("num_experts_per_tok") or 0),
                ff_expert=int(config.get("moe_intermediate_size") or 0),
            )
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            raise UsageError(
                f"{where}: cannot size the model from its config ({exc!r} missing or not a number); "
                "it needs hidden_size, num_hidden_layers, num_attention_heads and vocab_size"
            ) from None

    def linears(self) -> dict[str, tuple[int, int]]:
        """Each layer's ``nn.Linear`` modules (what QLoRA quantizes and lora_target: all adapts), in x out."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        found = {"q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv)}
        found["o_proj"] = (q, self.hidden)
        if not self.experts:  # transformers 5 fuses a MoE layer's experts into 3-D parameters, not nn.Linear
            found.update(
                gate_proj=(self.hidden, self.ff), up_proj=(self.hidden, self.ff), down_proj=(self.ff, self.hidden)
            )
        return found

    @property
    def linear_params(self) -> int:
        return self.layers * sum(i * o for i, o in self.linears().values())

    @property
    def other_params(self) -> int:
        """Embedding, output layer, norms, router and fused experts: kept 16-bit under QLoRA."""
        experts = self.experts * (3 * self.hidden * self.ff_expert + self.hidden)
        per_layer = 2 * self.hidden + 2 * self.head_dim + experts
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.layers * per_layer + self.hidden

    @property
    def params(self) -> int:
        return self.linear_params + self.other_params

    def saved_per_token_layer(self) -> int:
        """16-bit units the backward pass keeps per token and layer without checkpointing."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        norms = 2 * 3 * self.hidden  # two RMSNorms: an fp32 input (2 units) and the 16-bit output
        attention = 10 * q + 7 * kv  # projections, fp32 q/k norms, rotary, repeated k/v for SDPA, its output
        if self.experts:
            mlp = 2 * self.experts + self.experts_used * (self.hidden + 4 * self.ff_expert)
        else:
            mlp = 4 * self.ff  # gate, up, silu(gate), silu(gate) * up
        return norms + attention + mlp


@dataclass
class Estimate:
    """Peak memory per GPU, in GiB, by part; ``peak_gib`` is their sum."""

    parts: dict[str, float]
    params: int
    lora_params: int
    batch: int
    cutoff_len: int
    model_source: str
    notes: list[str] = field(default_factory=list)

    @property
    def peak_gib(self) -> float:
        return sum(self.parts.values())

    def describe(self) -> str:
        parts = ", ".join(f"{name} {gib:.1f}" for name, gib in self.parts.items())
        return f"~{self.peak_gib:.1f} GiB per GPU ({parts})"

    def to_dict(self) -> dict[str, Any]:
        return {"peak_gib": round(self.peak_gib, 3), **{k: round(v, 3) for k, v in self.parts.items()}}


@dataclass
class Setting:
    """What the estimate depends on besides the model: a recipe's train keys and method, and the precision."""

    method: str = "lora"
    lora_rank: int = 8
    lora_target: str = "all"
    cutoff_len: int = 2048
    batch: int = 1
    gradient_checkpointing: bool = True
    deepspeed: str | None = None
    world: int = 1  # GPUs in the training, over all nodes
    dtype_bytes: int = 2  # bf16/fp16 on a GPU; fp32 on the CPU

    @classmethod
    def of(cls, recipe: Any, precision: str = "bf16") -> Setting:
        t = recipe.train
        return cls(
            method=recipe.method,
            lora_rank=t.lora_rank,
            lora_target=t.lora_target,
            cutoff_len=t.cutoff_len,
            batch=t.per_device_train_batch_size,
            gradient_checkpointing=t.gradient_checkpointing,
            deepspeed=t.deepspeed,
            world=t.gpus * t.nodes,
            dtype_bytes=4 if precision == "fp32" else 2,
        )

    def but(self, **changes: Any) -> Setting:
        return Setting(**{**asdict(self), **changes})


def estimate(shape: Shape, s: Setting, model_source: str = "") -> Estimate:
    """The peak memory of one training step on one GPU."""
    a, tokens, notes = s.dtype_bytes, s.batch * s.cutoff_len, []
    linears = shape.linears()
    targets = set(linears) if s.lora_target.strip() == "all" else {t.strip() for t in s.lora_target.split(",")}
    if unknown := sorted(targets - set(linears)):
        notes.append(f"lora_target {', '.join(unknown)}: no such linear layer in this model; not counted")
    lora_params = shape.layers * s.lora_rank * sum(i + o for n, (i, o) in linears.items() if n in targets)

    if s.method == "qlora":
        largest = max(i * o for i, o in linears.values())  # bitsandbytes dequantizes one layer at a time
        weights = shape.linear_params * NF4_BYTES + (shape.other_params + largest) * a
    else:
        weights = shape.params * a
    lora = lora_params * LORA_BYTES
    if s.deepspeed == "z3_offload":
        weights = 2 * weights / shape.layers  # a layer gathered, the next one prefetched
        lora = lora_params * 4 / s.world
        notes.append("ZeRO-3 offload: weights and Adam states in CPU memory, one layer gathered at a time")
    elif s.deepspeed == "z3":
        weights, lora = weights / s.world, lora / s.world
    elif s.deepspeed == "z2":
        lora = lora_params * (4 + (LORA_BYTES - 4) / s.world)

    per_layer = shape.saved_per_token_layer() * a
    if s.gradient_checkpointing:  # each layer's input, and one layer recomputed (its tensors and their gradients)
        activations = tokens * (shape.layers * shape.hidden * a + 2 * per_layer)
    else:
        activations = tokens * shape.layers * per_layer
    logits = tokens * shape.vocab * (a + LOGIT_BYTES_32)
    overhead = CUDA_CONTEXT_GIB * GIB + FRAGMENTATION * (activations + logits)
    parts = {"weights": weights, "lora": lora, "activations": activations, "logits": logits, "overhead": overhead}
    return Estimate(
        {k: v / GIB for k, v in parts.items()}, shape.params, lora_params, s.batch, s.cutoff_len, model_source, notes
    )


# -- the model's config ------------------------------------------------------------------------------------


def model_config(name_or_path: str) -> tuple[dict[str, Any], str]:
    """The base model's config and where it came from: the tiny model's spec, a local folder's config.json, a
    hub model's config.json (that one file, from the cache or the hub), else the built-in Qwen3 shapes."""
    from orchestrator.recipe import TINY_MODEL

    if name_or_path == TINY_MODEL:
        from orchestrator.tiny import QWEN3_VOCAB_SIZE, TinySpec

        return {**asdict(TinySpec()), "vocab_size": QWEN3_VOCAB_SIZE}, "the tiny model's spec"
    folder = Path(name_or_path).expanduser()
    if folder.exists():
        return read_config(folder / "config.json"), str(folder / "config.json")
    cached = hub_config(name_or_path)
    if cached:
        return read_config(cached), f"{name_or_path}'s config.json"
    size = re.search(r"qwen3-(0\.6b|1\.7b|4b|8b|14b|32b|30b-a3b)(?![\d.])", name_or_path.lower())
    if size:
        return dict(QWEN3_SHAPES[size.group(1)]), f"the built-in Qwen3-{size.group(1).upper()} shape"
    raise UsageError(
        f"model {name_or_path}: its config.json could not be read (hub unreachable and not in the cache) and it is "
        "not a Qwen3 size the estimate knows; download it first or point model.name_or_path at a local folder"
    )


def hub_config(repo_id: str) -> Path | None:
    """A hub model's config.json: from the Hugging Face cache, else that one file from the hub; None when the
    hub cannot be reached (one request with a short timeout: huggingface_hub's own download retries for ~20 s)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
        if isinstance(cached, str):
            return Path(cached)
        get_hf_file_metadata(hf_hub_url(repo_id, "config.json"), timeout=5)
        return Path(hf_hub_download(repo_id, "config.json"))
    except Exception as exc:  # offline mode, no network, a gated or missing repo: the built-in shapes may do
        log.debug("config.json of %s not read: %r", repo_id, exc)
        return None


def read_config(path: Path) -> dict[str, Any]:
    from orchestrator.fsutil import read_json

    config = read_json(path)
    if not isinstance(config, dict):
        raise UsageError(f"{path}: missing or not a JSON object; the estimate needs the model's config.json")
    return config.get("text_config") or config


# -- fitting -----------------------------------------------------------------------------------------------


@dataclass
class Fit:
    """An estimate against the GPU memory, and, with auto_fit, the micro-batch split chosen."""

    estimate: Estimate
    memory_gib: float | None  # None: unknown (the CPU, or a GPU assumed for a dry run)
    batch: int
    accumulation: int
    suggestion: str = ""  # the change that would fit, when nothing does

    @property
    def fits(self) -> bool:
        return self.memory_gib is None or self.estimate.peak_gib <= self.memory_gib


def plan(
    shape: Shape, setting: Setting, accumulation: int, memory_gib: float | None, *, auto: bool, source: str = ""
) -> Fit:
    """The estimate for the recipe's micro-batch or, with ``auto``, for the largest micro-batch that divides the
    effective batch and fits. When it does not fit, ``suggestion`` names a change that would."""
    asked = estimate(shape, setting, source)
    effective = setting.batch * accumulation
    if memory_gib is None:
        return Fit(asked, None, setting.batch, accumulation)
    if auto:
        for batch in sorted((b for b in range(1, effective + 1) if effective % b == 0), reverse=True):
            trial = estimate(shape, setting.but(batch=batch), source)
            if trial.peak_gib <= memory_gib:
                return Fit(trial, memory_gib, batch, effective // batch)
    elif asked.peak_gib <= memory_gib:
        return Fit(asked, memory_gib, setting.batch, accumulation)
    smallest = estimate(shape, setting.but(batch=1), source)
    if auto:
        return Fit(smallest, memory_gib, 1, effective, suggest(shape, setting.but(batch=1), memory_gib))
    if smallest.peak_gib <= memory_gib:  # a smaller micro-batch would fit
        return Fit(asked, memory_gib, setting.batch, accumulation, "train.auto_fit: true")
    return Fit(asked, memory_gib, setting.batch, accumulation, suggest(shape, setting, memory_gib))


def suggest(shape: Shape, s: Setting, memory_gib: float) -> str:
    """Recipe changes that would make ``s`` fit, each tried alone."""
    tries: list[tuple[str, Setting]] = []
    if s.method == "lora":
        tries.append(("method: qlora", s.but(method="qlora")))
    if not s.gradient_checkpointing:
        tries.append(("train.gradient_checkpointing: true", s.but(gradient_checkpointing=True)))
    if s.world > 1 and s.deepspeed not in ("z3", "z3_offload"):
        tries.append(("train.deepspeed: z3", s.but(deepspeed="z3")))
    cutoff = s.cutoff_len // 2
    while cutoff >= 256 and estimate(shape, s.but(cutoff_len=cutoff)).peak_gib > memory_gib:
        cutoff //= 2
    if cutoff >= 256:
        tries.append((f"train.cutoff_len: {cutoff}", s.but(cutoff_len=cutoff)))
    if s.deepspeed != "z3_offload":  # slow, but the weights and Adam states go to CPU memory
        tries.append(("train.deepspeed: z3_offload", s.but(deepspeed="z3_offload")))
    fitting = [label for label, trial in tries if estimate(shape, trial).peak_gib <= memory_gib]
    return ", or ".join(fitting) or "a smaller model or a GPU with more memory"


def for_recipe(recipe: Any, hardware: Any) -> Fit:
    """The fit of a recipe's training on the given hardware (the smallest of the GPUs it uses)."""
    config, source = model_config(recipe.model.name_or_path)
    shape = Shape.of(config, source)
    setting = Setting.of(recipe, hardware.precision)
    memory_gib = None
    if hardware.backend != "cpu":
        used = hardware.gpu_memory_gib[: recipe.train.gpus]
        memory_gib = min(used) if used and min(used) > 0 else None  # 0.0: a GPU assumed for a dry run
    return plan(
        shape, setting, recipe.train.gradient_accumulation_steps, memory_gib, auto=recipe.train.auto_fit, source=source
    )


def message(fit: Fit, gpu: str) -> str:
    """One line for a training that does not fit: what it needs, what the GPU has, the change that would fit."""
    e = fit.estimate
    return (
        f"training needs ~{e.peak_gib:.1f} GiB per GPU (per_device_train_batch_size {e.batch}, cutoff_len "
        f"{e.cutoff_len}), {gpu} has {fit.memory_gib:.1f} GiB: use {fit.suggestion}"
    )


def check_run(recipe: Any, hardware: Any, info: Callable[[str], None], where: Any = "") -> Fit | None:
    """What a run on a GPU does first: estimate, apply ``train.auto_fit`` (the recipe's micro-batch and
    accumulation change, their product kept), and stop before any download when nothing fits. A training
    that does not fit without auto_fit is a warning: the estimate errs on the safe side, and the user decides."""
    if hardware.backend == "cpu" or "train" not in recipe.stages:
        return None
    try:
        fit = for_recipe(recipe, hardware)
    except UsageError as exc:  # a model the estimate cannot size does not stop the run
        info(f"memory estimate skipped: {exc}")
        return None
    t, gpu = recipe.train, hardware.gpus[0] if hardware.gpus else "the GPU"
    if not fit.fits:
        if t.auto_fit:
            raise UsageError(f"{where}: {message(fit, gpu)}")
        info(f"warning: likely out of memory: {message(fit, gpu)}")
        return fit
    if t.auto_fit and (fit.batch, fit.accumulation) != (t.per_device_train_batch_size, t.gradient_accumulation_steps):
        info(
            f"auto_fit: per_device_train_batch_size {fit.batch} x gradient_accumulation_steps {fit.accumulation} "
            f"(was {t.per_device_train_batch_size} x {t.gradient_accumulation_steps})"
        )
        t.per_device_train_batch_size, t.gradient_accumulation_steps = fit.batch, fit.accumulation
    room = f"of {fit.memory_gib:.1f} GiB on {gpu}" if fit.memory_gib is not None else "(GPU memory not known here)"
    info(f"memory: {fit.estimate.describe()} {room}")
    return fit
