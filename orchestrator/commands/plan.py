"""`orchestrator plan [RECIPE]`: the peak memory per GPU a recipe's training needs, by part, against the GPU."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="estimate the training's peak memory per GPU and whether it fits (what `run` checks first)",
        description="Estimate the peak memory per GPU of a recipe's training from the model's config (weights, "
        "LoRA, activations, logits, overhead) and compare it with this machine's GPU memory; with "
        "train.auto_fit, the micro-batch and accumulation that keep the effective batch and fit. "
        "Downloads nothing but a hub model's config.json. Exit code 1 when it does not fit.",
    )
    p.add_argument("recipe", nargs="?", default=None, help="a shipped recipe's name or a path to a recipe YAML")
    p.add_argument(
        "--gpu-memory",
        type=float,
        metavar="GIB",
        help="compare with a GPU of this much memory instead of this machine's (e.g. 24 for a 24 GB card)",
    )
    p.add_argument("--json", action="store_true", help="print the estimate as JSON: peak_gib and one key per part")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from orchestrator import fit as fit_module
    from orchestrator import hardware
    from orchestrator.errors import UsageError
    from orchestrator.recipe import load_recipe

    if args.gpu_memory is not None and not 0 < args.gpu_memory < 10_000:
        raise UsageError(f"--gpu-memory {args.gpu_memory}: give the GPU's memory in GiB, e.g. --gpu-memory 24")
    recipe, path = load_recipe(args.recipe)
    hw = hardware.resolve(recipe.hardware, assume=True)
    if args.gpu_memory is not None:
        hw = hardware.Hardware("cuda", ["the GPU"] * recipe.train.gpus, [args.gpu_memory], True)
    elif hw.backend == "cpu" and recipe.method == "qlora":  # QLoRA trains on a GPU: estimate for one, size unknown
        hw = hardware.Hardware("cuda", ["a GPU (none here)"], [0.0], bf16=True)
    fit = fit_module.for_recipe(recipe, hw)
    if args.json:
        print(json.dumps(as_json(fit, hw), indent=2))
    else:
        for line in lines(fit, recipe, hw):
            print(line)
    return 0 if fit.fits else 1


def as_json(fit: Any, hw: Any) -> dict[str, Any]:
    e = fit.estimate
    return {
        **e.to_dict(),
        "fits": None if fit.memory_gib is None else fit.fits,
        "memory_gib": fit.memory_gib if hw.backend != "cpu" else ram_gib(),
        "per_device_train_batch_size": fit.batch,
        "gradient_accumulation_steps": fit.accumulation,
        "params": e.params,
        "lora_params": e.lora_params,
        "model_source": e.model_source,
        "suggestion": fit.suggestion or None,
        "notes": e.notes,
    }


def lines(fit: Any, recipe: Any, hw: Any) -> list[str]:
    e, t = fit.estimate, recipe.train
    checkpointing = "on" if t.gradient_checkpointing else "off"
    out = [
        f"{recipe.name}: {recipe.model.name_or_path} ({e.params / 1e9:.2f}B parameters, from {e.model_source}), "
        f"{recipe.method}, rank {t.lora_rank} on {t.lora_target}, cutoff_len {e.cutoff_len}, "
        f"gradient checkpointing {checkpointing}" + (f", deepspeed {t.deepspeed}" if t.deepspeed else ""),
        f"per_device_train_batch_size {fit.batch} x gradient_accumulation_steps {fit.accumulation}"
        + (" (chosen by auto_fit)" if t.auto_fit and fit.fits and fit.memory_gib is not None else ""),
    ]
    out += [f"  {name:<12}{gib:7.2f} GiB" for name, gib in e.parts.items()]
    out.append(f"  {'peak':<12}{e.peak_gib:7.2f} GiB per {'GPU' if hw.backend != 'cpu' else 'process (fp32, CPU)'}")
    out += [f"note: {n}" for n in e.notes]
    gpu = hw.gpus[0] if hw.gpus else "the GPU"
    if hw.backend == "cpu":
        out.append(f"on the CPU: this machine has {ram_gib():.1f} GiB of memory")
    elif fit.memory_gib is None:
        out.append(f"{gpu}: memory not known here; pass --gpu-memory GIB to compare")
    elif fit.fits:
        out.append(f"fits: {e.peak_gib:.1f} of {fit.memory_gib:.1f} GiB on {gpu}")
    else:
        from orchestrator.fit import message

        out.append(f"does not fit: {message(fit, gpu)}")
    return out


def ram_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
