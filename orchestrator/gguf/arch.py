"""Which Hugging Face architectures convert, and the llama.cpp hyperparameters each one writes.

Qwen3, Qwen2/2.5 and Llama share one decoder layout; Qwen3-MoE adds a router and stacked experts.
Llama differs in one detail: llama.cpp applies its rotary embedding to interleaved pairs, while
Hugging Face rotates halves, so Llama's q/k projection rows are reordered per head on the way in.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.gguf.jsonio import MISSING, count, flag, mapping, number, read_json_object

log = logging.getLogger(__name__)

# Hugging Face class -> gguf.MODEL_ARCH member.
SUPPORTED = {
    "Qwen3ForCausalLM": "QWEN3",
    "Qwen3MoeForCausalLM": "QWEN3MOE",
    "Qwen2ForCausalLM": "QWEN2",
    "LlamaForCausalLM": "LLAMA",
}
ROPE_TYPES = ("default", "linear", "yarn", "llama3")


@dataclass
class Rope:
    theta: float
    kind: str = "default"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelArch:
    """The parts of config.json the converter needs, already checked."""

    hf_arch: str
    arch_key: str
    config: dict[str, Any]
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    n_ctx: int
    rms_eps: float
    tied: bool
    rope: Rope
    head_dim: int | None = None
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_expert: int = 0

    @property
    def gguf_arch(self) -> Any:
        import gguf

        return gguf.MODEL_ARCH[self.arch_key]

    @property
    def name(self) -> str:
        """The GGUF architecture string (``qwen3``, ``qwen3moe``, ``qwen2``, ``llama``)."""
        import gguf

        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]

    @property
    def permute_qk(self) -> bool:
        return self.arch_key == "LLAMA"

    @property
    def rot_dim(self) -> int:
        return self.head_dim or self.n_embd // self.n_head

    def dims(self) -> Any:
        """The sizes of the tensor layout, labelled with the config.json keys they come from."""
        from orchestrator.gguf.shapes import Dim, Dims

        if self.head_dim:
            head_dim = Dim(self.head_dim, "head_dim")
        else:
            head_dim = Dim(self.n_embd // self.n_head, "hidden_size / num_attention_heads")
        moe = self.n_expert > 0
        return Dims(
            n_layer=Dim(self.n_layer, "num_hidden_layers"),
            embd=Dim(self.n_embd, "hidden_size"),
            vocab=Dim(self.n_vocab, "vocab_size"),
            head=Dim(self.n_head, "num_attention_heads"),
            head_kv=Dim(self.n_head_kv, "num_key_value_heads"),
            head_dim=head_dim,
            ff=Dim(self.n_ff, "intermediate_size"),
            rot=head_dim,
            expert=Dim(self.n_expert, "num_experts") if moe else None,
            ff_expert=Dim(self.n_ff_expert, "moe_intermediate_size") if moe else None,
        )


CONFIG_FIX = "fix config.json (use the one saved with these weights)"


def read_config(folder: Path) -> dict[str, Any]:
    return read_json_object(folder / "config.json", "re-export the model or copy its config.json again")


def check_model_folder(model_dir: Path) -> None:
    """Refuse what is not a Hugging Face model folder, naming what it is instead."""
    if model_dir.is_file():
        raise UsageError(f"{model_dir}: is a file, not a folder; pass the merged model's folder (with config.json)")
    if not model_dir.is_dir():
        raise UsageError(f"{model_dir}: no such folder; pass the merged model's folder")
    weights = [p for p in model_dir.glob("*.safetensors") if p.name != "adapter_model.safetensors"]
    if (model_dir / "adapter_config.json").is_file() and not weights:
        raise UsageError(
            f"{model_dir}: this is a LoRA adapter, not a model; convert it with "
            "`orchestrator gguf convert --adapter` (serve: adapter) or merge it first"
        )
    if not (model_dir / "config.json").is_file():
        raise UsageError(f"{model_dir}: no config.json, so not a Hugging Face model folder; pass the merged model")


def load_arch(model_dir: Path) -> ModelArch:
    """Read and check ``config.json``; refuses unknown architectures and unsupported rope scaling."""
    check_model_folder(model_dir)
    config = read_config(model_dir)
    where = model_dir / "config.json"
    hf_arch = supported_arch(config, where)
    if config.get("quantization_config"):
        raise UsageError(f"{where}: the checkpoint is quantized; merge the adapter into the unquantized base model")

    def need(key: str, default: Any = MISSING) -> int:
        return count(config, key, where, CONFIG_FIX, default)

    n_head = need("num_attention_heads")
    arch = ModelArch(
        hf_arch=hf_arch,
        arch_key=SUPPORTED[hf_arch],
        config=config,
        n_layer=need("num_hidden_layers"),
        n_embd=need("hidden_size"),
        n_head=n_head,
        n_head_kv=need("num_key_value_heads", n_head),
        n_ff=need("intermediate_size"),
        n_vocab=need("vocab_size"),
        n_ctx=need("max_position_embeddings"),
        rms_eps=number(config, "rms_norm_eps", where, CONFIG_FIX),
        tied=flag(config, "tie_word_embeddings", where, CONFIG_FIX),
        rope=read_rope(config, where, hf_arch),
        head_dim=need("head_dim", None),
    )
    check_heads(arch, where)
    if arch.arch_key == "QWEN3MOE":
        read_moe(arch, where)
    return arch


def supported_arch(config: dict[str, Any], where: Path) -> str:
    archs = config.get("architectures") or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise UsageError(f'{where}: architectures must be a list of class names, e.g. ["Qwen3ForCausalLM"]')
    hf_arch = next((a for a in archs if a in SUPPORTED), None)
    if hf_arch is None:
        raise UsageError(
            f"{where}: architecture {', '.join(archs) or 'unknown'} is not supported by the built-in converter "
            f"(supported: {', '.join(SUPPORTED)}); use llama.cpp's convert_hf_to_gguf.py for it"
        )
    return hf_arch


def check_heads(arch: ModelArch, where: Path) -> None:
    """Head counts llama.cpp can split the attention into."""
    if arch.head_dim is None and arch.n_embd % arch.n_head:
        raise UsageError(
            f"{where}: hidden_size {arch.n_embd} is not a multiple of num_attention_heads {arch.n_head} and "
            f"there is no head_dim; {CONFIG_FIX}"
        )
    if arch.n_head % arch.n_head_kv:
        raise UsageError(
            f"{where}: num_attention_heads {arch.n_head} is not a multiple of num_key_value_heads "
            f"{arch.n_head_kv}; {CONFIG_FIX}"
        )


def read_rope(config: dict[str, Any], where: Path, hf_arch: str) -> Rope:
    """Rope base and scaling from ``rope_parameters`` (transformers 5) or ``rope_scaling``/``rope_theta``."""
    key = "rope_parameters" if config.get("rope_parameters") is not None else "rope_scaling"
    params = dict(mapping(config, key, where, CONFIG_FIX))
    theta = number(params, "rope_theta", where, CONFIG_FIX, None)
    if theta is None:
        theta = number(config, "rope_theta", where, CONFIG_FIX, 10000.0)
    kind = params.get("rope_type") or params.get("type") or "default"
    allowed = ROPE_TYPES if hf_arch == "LlamaForCausalLM" else ROPE_TYPES[:3]
    if kind not in allowed:
        raise UsageError(
            f"{where}: rope scaling {kind!r} is not supported for {hf_arch} (supported: {', '.join(allowed)}); "
            "remove rope_scaling from config.json or use llama.cpp's convert_hf_to_gguf.py"
        )
    if kind in ("linear", "yarn", "llama3") and not params.get("factor"):
        raise UsageError(f"{where}: rope scaling {kind!r} has no factor; fix rope_scaling in config.json")
    if kind == "yarn" and not params.get("original_max_position_embeddings"):
        raise UsageError(f"{where}: yarn rope scaling needs original_max_position_embeddings; add it to config.json")
    for name in ("factor", "low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow", "attention_factor"):
        number(params, name, where, f"fix {key} in config.json", None)
    if kind in ("yarn", "llama3"):
        count(params, "original_max_position_embeddings", where, f"fix {key} in config.json", None)
    return Rope(theta=theta, kind=kind, params=params)


def read_moe(arch: ModelArch, where: Path) -> None:
    config = arch.config
    experts_key = "num_experts" if config.get("num_experts") is not None else "num_local_experts"
    fix = f"{CONFIG_FIX}; num_experts, num_experts_per_tok and moe_intermediate_size are all needed"
    arch.n_expert = count(config, experts_key, where, fix)
    arch.n_expert_used = count(config, "num_experts_per_tok", where, fix)
    arch.n_ff_expert = count(config, "moe_intermediate_size", where, fix)
    if arch.n_expert_used > arch.n_expert:
        raise UsageError(f"{where}: num_experts_per_tok {arch.n_expert_used} exceeds {experts_key}; {CONFIG_FIX}")
    if config.get("mlp_only_layers") or config.get("decoder_sparse_step", 1) != 1:
        raise UsageError(
            f"{where}: dense MLP layers inside a MoE model (mlp_only_layers/decoder_sparse_step) are not "
            "supported by llama.cpp's qwen3moe; use llama.cpp's converter if it gains support"
        )


def add_arch_metadata(writer: Any, arch: ModelArch, file_type: int) -> list[str]:
    """Write the hyperparameters llama.cpp's loader reads; returns notes for the user."""
    import gguf

    notes = []
    writer.add_block_count(arch.n_layer)
    writer.add_context_length(arch.n_ctx)
    writer.add_embedding_length(arch.n_embd)
    writer.add_feed_forward_length(arch.n_ff)
    writer.add_head_count(arch.n_head)
    writer.add_head_count_kv(arch.n_head_kv)
    writer.add_rope_freq_base(arch.rope.theta)
    writer.add_layer_norm_rms_eps(arch.rms_eps)
    if arch.head_dim is not None:
        writer.add_key_length(arch.head_dim)
        writer.add_value_length(arch.head_dim)
    add_rope_scaling(writer, arch.rope)
    if arch.arch_key == "LLAMA":
        writer.add_vocab_size(arch.n_vocab)
        writer.add_rope_dimension_count(arch.rot_dim)
    if arch.n_expert:
        writer.add_expert_count(arch.n_expert)
        writer.add_expert_used_count(arch.n_expert_used)
        writer.add_expert_feed_forward_length(arch.n_ff_expert)
        if not arch.config.get("norm_topk_prob", True):
            notes.append("norm_topk_prob is false, but llama.cpp's qwen3moe always normalises expert weights")
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    return notes


def add_rope_scaling(writer: Any, rope: Rope) -> None:
    import gguf

    params = rope.params
    if rope.kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(params["factor"])
    elif rope.kind == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(params["factor"])
        writer.add_rope_scaling_orig_ctx_len(params["original_max_position_embeddings"])
        optional = {
            "extrapolation_factor": writer.add_rope_scaling_yarn_ext_factor,
            "attention_factor": writer.add_rope_scaling_yarn_attn_factor,
            "beta_fast": writer.add_rope_scaling_yarn_beta_fast,
            "beta_slow": writer.add_rope_scaling_yarn_beta_slow,
        }
        for key, add in optional.items():
            if params.get(key) is not None:
                add(params[key])
    # llama3 scaling is carried by the rope_freqs tensor (see llama3_rope_factors), not by keys.


def llama3_rope_factors(arch: ModelArch) -> Any:
    """Per-frequency divisors llama.cpp reads from ``rope_freqs.weight`` for Llama 3 rope scaling."""
    import numpy as np

    params, dim = arch.rope.params, arch.rot_dim
    freqs = 1.0 / (arch.rope.theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = params.get("factor", 8.0)
    low, high = params.get("low_freq_factor", 1.0), params.get("high_freq_factor", 4.0)
    old_ctx = params.get("original_max_position_embeddings", 8192)
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            factors.append(1.0)
        elif wavelen > old_ctx / low:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)
