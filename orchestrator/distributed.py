"""One training across GPUs and nodes, through LLaMA-Factory's own launcher.

``llamafactory-cli train`` starts ``torchrun`` itself when ``FORCE_TORCHRUN=1``, reading ``NNODES``,
``NODE_RANK``, ``NPROC_PER_NODE``, ``MASTER_ADDR`` and ``MASTER_PORT`` (llamafactory/launcher.py), and
trains through Ray with ``USE_RAY=1`` and ``ray_num_workers`` in the YAML (train/tuner.py). This module
turns the recipe's ``train.gpus``, ``nodes``, ``node_rank``, ``master_addr``/``master_port``,
``deepspeed`` and ``ray_workers`` into that environment and those keys, checks them against the
hardware, and holds the DeepSpeed templates written into the run folder as ``deepspeed.json``.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.hardware import Hardware
from orchestrator.recipe import Recipe, TrainSpec

DEEPSPEED_FILE = "deepspeed.json"

# DeepSpeed ZeRO templates. "auto" values are filled in by transformers' DeepSpeed integration from the
# train YAML (batch sizes, accumulation, clipping, bf16/fp16), so the YAML stays the one source of them.
_DEEPSPEED_BASE: dict[str, Any] = {
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "zero_allow_untested_optimizer": True,  # LLaMA-Factory's optimizers are torch's AdamW
    "bf16": {"enabled": "auto"},
    "fp16": {"enabled": "auto", "loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000},
}
_ZERO: dict[str, dict[str, Any]] = {
    # ZeRO-2: optimizer states and gradients split across the GPUs; every GPU keeps the whole model.
    "z2": {"stage": 2, "overlap_comm": False, "contiguous_gradients": True, "reduce_scatter": True},
    # ZeRO-3: the weights are split too; the adapter is gathered into one file when it is saved.
    "z3": {
        "stage": 3,
        "overlap_comm": False,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
        "stage3_prefetch_bucket_size": "auto",
        "stage3_param_persistence_threshold": "auto",
        "stage3_gather_16bit_weights_on_model_save": True,
    },
}
# ZeRO-3 with the optimizer states and the weights kept in (pinned) CPU memory: the largest model per GPU.
_ZERO["z3_offload"] = {
    **_ZERO["z3"],
    "offload_optimizer": {"device": "cpu", "pin_memory": True},
    "offload_param": {"device": "cpu", "pin_memory": True},
}


def deepspeed_config(stage: str) -> dict[str, Any]:
    """The DeepSpeed JSON for ``train.deepspeed`` (z2, z3 or z3_offload)."""
    return {**_DEEPSPEED_BASE, "zero_optimization": dict(_ZERO[stage])}


def uses_torchrun(t: TrainSpec) -> bool:
    """torchrun starts the training: several GPUs or nodes, or DeepSpeed (which LLaMA-Factory only runs
    distributed, one process being a world of one)."""
    return t.ray_workers is None and (t.gpus > 1 or t.nodes > 1 or t.deepspeed is not None)


def check(recipe: Recipe, hw: Hardware) -> None:
    """What ``train.gpus``/``deepspeed``/``ray_workers`` ask of this machine; UsageError before anything runs.
    A dry run's assumed GPU (hardware.resolve with ``assume``) is not counted."""
    t = recipe.train
    if hw.backend == "cpu":
        if t.deepspeed:
            raise UsageError(f"train.deepspeed: {t.deepspeed} needs GPUs and this run is on the CPU; drop it")
        if t.ray_workers:
            raise UsageError(
                "train.ray_workers: LLaMA-Factory's Ray path gives each worker a GPU and this run is on the CPU; "
                "drop it (train.gpus: N runs N CPU processes)"
            )
        return
    assumed = any("(assumed" in name for name in hw.gpus)
    if not assumed and t.gpus > len(hw.gpus):
        raise UsageError(
            f"train.gpus: {t.gpus} but this machine has {len(hw.gpus)} GPU(s) ({hw.describe()}); "
            f"set train.gpus: {len(hw.gpus)} or fewer"
        )


def launch_env(recipe: Recipe, hw: Hardware, environ: dict[str, str] | None = None, *, train: bool = True) -> dict:
    """The variables to add to LLaMA-Factory's environment: for ``train``, those of its launcher (torchrun
    or Ray) and the GPUs the training sees; for any other launch (eval), one GPU, so that LLaMA-Factory
    does not start torchrun over every GPU by itself (it does when it sees more than one)."""
    environ = os.environ if environ is None else environ
    t = recipe.train
    if not train:
        return _devices(hw, 1, environ)
    if t.ray_workers:
        return {"USE_RAY": "1"}  # Ray places its workers on the cluster's GPUs itself
    if not uses_torchrun(t):
        return _devices(hw, 1, environ)
    env = {"FORCE_TORCHRUN": "1", "NNODES": str(t.nodes), "NODE_RANK": str(t.node_rank), "NPROC_PER_NODE": str(t.gpus)}
    if t.master_addr:
        env["MASTER_ADDR"] = t.master_addr
    if t.nodes > 1 or "master_port" in t.model_fields_set:
        env["MASTER_PORT"] = str(t.master_port)  # else LLaMA-Factory takes a free port (two runs on one machine)
    # The launcher runs a bare `torchrun`: this environment's, also when it is not activated.
    bin_dir = str(Path(sys.executable).parent)
    path = environ.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join(p for p in (bin_dir, path) if p)
    return {**env, **_devices(hw, t.gpus, environ)}


def _devices(hw: Hardware, count: int, environ: dict[str, str]) -> dict[str, str]:
    """``CUDA_VISIBLE_DEVICES`` (ROCm's torch reads it too; ``HIP_VISIBLE_DEVICES`` where the caller chose
    GPUs with it) narrowed to the first ``count`` of the visible GPUs, when more are visible."""
    if hw.backend == "cpu" or count >= len(hw.gpus):
        return {}
    var = (
        "HIP_VISIBLE_DEVICES" if hw.backend == "rocm" and environ.get("HIP_VISIBLE_DEVICES") else "CUDA_VISIBLE_DEVICES"
    )
    visible = [d.strip() for d in environ.get(var, "").split(",") if d.strip()]
    ids = visible or [str(i) for i in range(len(hw.gpus))]
    return {var: ",".join(ids[:count])}


def train_keys(recipe: Recipe, deepspeed_path: Path) -> dict[str, Any]:
    """The train YAML keys of the launch: the DeepSpeed JSON's path, Ray's worker count."""
    t = recipe.train
    keys: dict[str, Any] = {}
    if t.deepspeed:
        keys["deepspeed"] = str(deepspeed_path)
    if t.ray_workers:
        keys["ray_num_workers"] = t.ray_workers
    return keys


def node_commands(recipe: Recipe, recipe_path: Path) -> list[str]:
    """For ``train.nodes`` > 1: the command that starts this recipe's share of the training on each other
    node (the same recipe file, the same data; only node 0 goes on past training)."""
    t = recipe.train
    if t.nodes < 2 or t.ray_workers:
        return []
    return [
        f"node {rank}: "
        + shlex.join(["orchestrator", "run", str(recipe_path), "--node-rank", str(rank), "--until", "train"])
        for rank in range(t.nodes)
        if rank != t.node_rank
    ]


def describe(recipe: Recipe, hw: Hardware) -> str:
    """One line: how the training is spread."""
    t = recipe.train
    unit = "GPU" if hw.backend != "cpu" else "CPU process"
    if t.ray_workers:
        return f"Ray: {t.ray_workers} workers (USE_RAY=1), placed by Ray on its cluster's GPUs"
    if not uses_torchrun(t):
        return "one process" + (" on one GPU" if hw.backend != "cpu" else "")
    spread = f"{t.nodes} nodes x {t.gpus} {unit}s (this is node {t.node_rank})" if t.nodes > 1 else f"{t.gpus} {unit}s"
    zero = f", DeepSpeed {t.deepspeed}" if t.deepspeed else ""
    return f"torchrun (FORCE_TORCHRUN=1): {t.gpus * t.nodes} processes on {spread}{zero}"
