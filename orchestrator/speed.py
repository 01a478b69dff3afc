"""What makes a generated recipe fast: LLaMA-Factory's speed keys that the hardware and the installed
packages allow, each with the reason it was chosen or left out (shown by ``orchestrator run --dry-run``)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from orchestrator.hardware import Hardware
from orchestrator.recipe import Recipe


@dataclass(frozen=True)
class Choice:
    """A LLaMA-Factory key and why; ``value`` None: left out (LLaMA-Factory's default holds)."""

    key: str
    value: Any
    reason: str


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def model_choices(hw: Hardware) -> list[Choice]:
    """Keys of how the model runs (attention, fused kernels): the same for training and evaluation."""
    if hw.backend == "cpu":
        return []
    if not installed("flash_attn"):
        attention = Choice(
            "flash_attn", "sdpa", "PyTorch's fused attention: flash-attn is not installed (pip install flash-attn: fa2)"
        )
    elif not hw.bf16:
        attention = Choice(
            "flash_attn", "sdpa", "PyTorch's fused attention: FlashAttention-2 needs an Ampere or newer GPU (bf16)"
        )
    else:
        attention = Choice(
            "flash_attn", "fa2", "flash-attn is installed and the GPU is Ampere or newer: FlashAttention-2"
        )
    if installed("liger_kernel"):
        liger = Choice("enable_liger_kernel", True, "liger-kernel's fused RMSNorm, RoPE, SwiGLU and cross-entropy")
    else:
        liger = Choice(
            "enable_liger_kernel", None, "off: liger-kernel is not installed (pip install liger-kernel turns it on)"
        )
    return [attention, liger]


def train_choices(recipe: Recipe, hw: Hardware) -> list[Choice]:
    """Every speed choice of the train config, model keys first."""
    t = recipe.train
    choices = model_choices(hw)
    if t.packing:
        choices.append(
            Choice("neat_packing", True, "train.packing: conversations share cutoff_len sequences, masked apart")
        )
    if t.gradient_checkpointing:
        choices.append(
            Choice("disable_gradient_checkpointing", None, "checkpointing on: less memory, about a third slower")
        )
    else:
        choices.append(Choice("disable_gradient_checkpointing", True, "train.gradient_checkpointing: false"))
    if hw.backend != "cpu":
        choices.append(Choice("include_effective_tokens_per_second", True, "effective tokens/s in train_results.json"))
    return choices


def keys(choices: list[Choice]) -> dict[str, Any]:
    return {c.key: c.value for c in choices if c.value is not None}
