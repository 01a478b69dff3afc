"""The train stage: ``llamafactory-cli train`` on the exported dataset -> a LoRA adapter."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator import distributed
from orchestrator import llamafactory as lf
from orchestrator.context import Progress, RunContext, StageResult
from orchestrator.errors import StageError
from orchestrator.fsutil import write_text
from orchestrator.manifest import file_digest
from orchestrator.manifest import fingerprint as _fingerprint

NAME = "train"
CPU_WEIGHTS = "the CPU trains fastest in float32: the base model's weights are loaded in float32"
ADAPTER_FILE = "adapter_model.safetensors"


@dataclass
class TrainResult:
    adapter_dir: Path
    config_path: Path
    log_path: Path
    trainer_log: Path
    losses: list[float] = field(default_factory=list)
    examples_skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": len(self.losses),
            "first_loss": self.losses[0] if self.losses else None,
            "last_loss": self.losses[-1] if self.losses else None,
            "examples_skipped_by_llamafactory": self.examples_skipped,
        }


def train(
    config: dict[str, Any],
    run_dir: Path,
    *,
    env: dict[str, str] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    float32_weights: bool = False,
    on_phase: Callable[[str], None] | None = None,
    deepspeed: dict[str, Any] | None = None,
    writes_adapter: bool = True,
) -> TrainResult:
    """Write ``run_dir/train.yaml`` from ``config`` (a LLaMA-Factory train config: ``output_dir`` is where
    the adapter goes), run ``llamafactory-cli train`` with its output in ``run_dir/logs/train.log``, and
    check what it wrote: an adapter, and finite losses and weights. ``float32_weights`` (for CPU runs)
    loads the base model's weights in float32 whatever the checkpoint's dtype. ``deepspeed`` is written
    where ``config["deepspeed"]`` points; ``writes_adapter`` False: a node other than node 0 of a
    multi-node training, which saves nothing."""
    run_dir = Path(run_dir)
    if deepspeed is not None:
        write_text(config["deepspeed"], json.dumps(deepspeed, indent=2) + "\n")
    config_path = write_yaml(run_dir / "train.yaml", config)
    adapter_dir = Path(config["output_dir"])
    log_path = run_dir / "logs" / "train.log"
    trainer_log = adapter_dir / "trainer_log.jsonl"
    lf.run_cli(
        "train",
        config_path,
        log_path,
        env=env or {},
        trainer_log=trainer_log,
        on_progress=on_progress,
        float32_weights=float32_weights,
        on_phase=on_phase,
    )
    if not writes_adapter:
        return TrainResult(adapter_dir, config_path, log_path, trainer_log)
    if not (adapter_dir / ADAPTER_FILE).is_file():
        raise StageError(f"llamafactory-cli train finished but wrote no adapter in {adapter_dir}; see {log_path}")
    losses = [r["loss"] for r in lf.read_trainer_log(trainer_log) if isinstance(r.get("loss"), (int, float))]
    result = TrainResult(adapter_dir, config_path, log_path, trainer_log, losses)
    check_finite(result)
    text = log_path.read_text(encoding="utf-8", errors="replace")
    result.examples_skipped = text.count("Skipping this abnormal example")
    return result


def check_finite(result: TrainResult) -> None:
    """A NaN or infinite loss, or adapter weights that are not finite, fail the stage: such an adapter
    would serve garbage. LLaMA-Factory reports success in both cases."""
    bad_steps = [i + 1 for i, loss in enumerate(result.losses) if not math.isfinite(loss)]
    final = _final_loss(result.adapter_dir)
    if bad_steps or (final is not None and not math.isfinite(final)):
        where = f"at logged step {bad_steps[0]}" if bad_steps else "at the end"
        raise StageError(
            f"training diverged: the loss is not a finite number {where}; lower train.learning_rate "
            f"(or check the data); see {result.log_path}"
        )
    bad = nonfinite_tensors(result.adapter_dir / ADAPTER_FILE)
    if bad:
        raise StageError(
            f"training diverged: {len(bad)} adapter tensors hold NaN or infinite values (first: {bad[0]}); "
            f"lower train.learning_rate; see {result.log_path}"
        )


def _final_loss(adapter_dir: Path) -> float | None:
    try:
        value = json.loads((adapter_dir / "train_results.json").read_text(encoding="utf-8")).get("train_loss")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def nonfinite_tensors(path: Path) -> list[str]:
    """Names of the tensors in a safetensors file holding a NaN or an infinity (read through mmap)."""
    import numpy as np

    from orchestrator.gguf.source import MappedFiles, read_header

    # Float formats as (bits per value, exponent mask): all exponent bits set means NaN or infinity.
    masks = {"BF16": (np.uint16, 0x7F80), "F16": (np.uint16, 0x7C00), "F32": (np.uint32, 0x7F800000)}
    files = MappedFiles()
    bad = []
    try:
        for name, tensor in read_header(path).items():
            if tensor.dtype not in masks:
                continue
            kind, mask = masks[tensor.dtype]
            raw = files.rows(tensor, 0, tensor.rows).view(kind)
            if np.any((raw & mask) == mask):
                bad.append(name)
            del raw
    finally:
        files.close()
    return bad


def write_yaml(path: Path, config: dict[str, Any]) -> Path:
    return write_text(path, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


def datasets(run: RunContext) -> list[str]:
    """The dataset_info.json entries the train config names."""
    cfg = config(run)
    return [cfg["dataset"]] + ([cfg["eval_dataset"]] if "eval_dataset" in cfg else [])


def fingerprint(run: RunContext) -> str:
    files = [file_digest(run.dataset_dir / f"{name}.jsonl") for name in datasets(run)]
    return _fingerprint(*files, config(run), run.model_identity())


def config(run: RunContext) -> dict[str, Any]:
    return lf.train_config(
        run.recipe, run.hardware, model_path=run.model_path, dataset_dir=run.dataset_dir, output_dir=run.adapter_dir
    )


def run(run: RunContext) -> StageResult:
    run.ensure_model()
    _check_dataset_registered(run)
    log_path = run.logs_dir / "train.log"
    t = run.recipe.train
    run.reporter.info(f"training on {run.hardware.describe()}; LLaMA-Factory's output goes to {log_path}")
    run.reporter.info(f"launch: {distributed.describe(run.recipe, run.hardware)}")
    for line in distributed.node_commands(run.recipe, run.recipe_path):
        run.reporter.info(f"start the same recipe on {line}")
    float32 = run.hardware.backend == "cpu"
    if float32:
        run.reporter.info(CPU_WEIGHTS)
    if distributed.uses_torchrun(t) and any(c.isspace() for c in str(run.run_dir)):
        # LLaMA-Factory's launcher joins its arguments into one string and splits it on whitespace
        raise StageError(f"{run.run_dir}: torchrun cannot take a path with spaces; set runs_dir to one without")
    try:
        result = train(
            config(run),
            run.run_dir,
            env=run.lf_env(train=True),
            on_progress=run.reporter.progress,
            float32_weights=float32,
            on_phase=run.reporter.info,
            deepspeed=distributed.deepspeed_config(t.deepspeed) if t.deepspeed else None,
            writes_adapter=t.node_rank == 0,
        )
    finally:
        _drop_cache(run)
    if t.node_rank:
        run.reporter.info(f"node {t.node_rank}'s share of the training is done; node 0 saves the adapter")
    if result.examples_skipped:
        run.reporter.info(f"warning: LLaMA-Factory skipped {result.examples_skipped} examples; see {log_path}")
    return StageResult(
        inputs={"train_config": str(result.config_path), "model": run.model_path},
        outputs={"adapter": str(result.adapter_dir), "trainer_log": str(result.trainer_log), "log": str(log_path)},
        details=result.to_dict(),
    )


def _drop_cache(run: RunContext) -> None:
    """The tokenized copy of the conversations is only needed while training."""
    import shutil

    shutil.rmtree(run.cache_dir / "datasets", ignore_errors=True)


def _check_dataset_registered(run: RunContext) -> None:
    info = run.dataset_dir / "dataset_info.json"
    try:
        known = json.loads(info.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = None
    for name in datasets(run):
        if not isinstance(known, dict) or name not in known:
            raise StageError(f"dataset '{name}' is not in {info}; add the data stage to the recipe's stages")
