"""Recipe -> LLaMA-Factory YAML, and running ``llamafactory-cli`` while following its trainer log.

LLaMA-Factory does the training; this module only writes its config, starts it with an argument
list, sends its raw output to a log file and reads ``trainer_log.jsonl`` for progress.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator import distributed, speed
from orchestrator.context import Progress
from orchestrator.errors import StageError, UsageError
from orchestrator.fsutil import read_json
from orchestrator.hardware import Hardware
from orchestrator.procs import run_logged
from orchestrator.recipe import Recipe

log = logging.getLogger(__name__)
# torchrun's workers prefix their lines with [rankN]:; its own ChildFailedError only says a worker failed
ERROR_LINE = re.compile(r"^\s*(\[rank\d+\]:\s*)?(([\w.]+(Error|Exception|Interrupt)|RuntimeError|OSError|Killed)\b.*)")
LAUNCHER_ERRORS = ("ChildFailedError", "CalledProcessError")


def train_config(recipe: Recipe, hw: Hardware, *, model_path: str, dataset_dir: Path, output_dir: Path) -> dict:
    """The ``llamafactory-cli train`` config for a recipe on the given hardware, with its speed keys and its
    launch keys (a DeepSpeed recipe's JSON is ``deepspeed.json`` beside ``output_dir``). UsageError when
    the recipe asks more than the hardware has."""
    t = recipe.train
    config: dict[str, Any] = {
        "model_name_or_path": model_path,
        "trust_remote_code": recipe.model.trust_remote_code,
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_rank": t.lora_rank,
        "lora_alpha": t.lora_alpha or 2 * t.lora_rank,
        "lora_dropout": t.lora_dropout,
        "lora_target": t.lora_target,
        "dataset": recipe.dataset_name,
        "dataset_dir": str(dataset_dir),
        "template": recipe.model.resolved_template,
        "cutoff_len": t.cutoff_len,
        "overwrite_cache": True,
        "output_dir": str(output_dir),
        "logging_steps": t.logging_steps,
        "save_steps": t.save_steps,
        "plot_loss": True,
        "overwrite_output_dir": True,
        "save_only_model": False,
        "report_to": "none",
        "per_device_train_batch_size": t.per_device_train_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "learning_rate": t.learning_rate,
        "lr_scheduler_type": t.lr_scheduler_type,
        "warmup_ratio": t.warmup_ratio,
        "seed": t.seed,
    }
    if recipe.model.resolved_template == "qwen3":
        config["enable_thinking"] = recipe.model.enable_thinking
    if t.stage == "dpo":
        config.update(stage="dpo", dataset=f"{recipe.dataset_name}_pref", pref_beta=t.pref_beta, pref_loss="sigmoid")
    if t.max_steps:
        config["max_steps"] = t.max_steps
    else:
        config["num_train_epochs"] = t.num_train_epochs
    if t.max_samples:
        config["max_samples"] = t.max_samples
    held_out = {"eval_dataset": f"{recipe.dataset_name}_eval"} if recipe.data.eval_split else {}
    if t.val_size:
        held_out = {"val_size": t.val_size}
    if held_out:
        config.update(
            held_out,
            per_device_eval_batch_size=t.per_device_train_batch_size,
            eval_strategy="steps",
            eval_steps=t.save_steps,
        )
    config.update(_hardware_keys(recipe, hw))
    distributed.check(recipe, hw)
    config.update(speed.keys(speed.train_choices(recipe, hw)))
    config.update(distributed.train_keys(recipe, output_dir.parent / distributed.DEEPSPEED_FILE))
    config.update(recipe.llamafactory)
    return config


def _hardware_keys(recipe: Recipe, hw: Hardware) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    if hw.precision != "fp32":
        keys[hw.precision] = True
    keys.update(speed.keys(speed.model_choices(hw)))  # attention and fused kernels, as in training
    if recipe.method == "qlora":
        if hw.backend == "cpu":
            raise UsageError("method: qlora needs a GPU (bitsandbytes 4-bit); use method: lora on the CPU")
        keys.update(quantization_bit=4, quantization_method="bnb", double_quantization=True)
    return keys


def export_config(recipe: Recipe, *, model_path: str, adapter_dir: Path, export_dir: Path) -> dict:
    """The ``llamafactory-cli export`` config: merge the adapter onto the unquantized base (also after QLoRA)."""
    config: dict[str, Any] = {
        "model_name_or_path": model_path,
        "adapter_name_or_path": str(adapter_dir),
        "template": recipe.model.resolved_template,
        "trust_remote_code": recipe.model.trust_remote_code,
        "finetuning_type": "lora",
        "export_dir": str(export_dir),
        "export_size": 5,
        "export_device": "cpu",
        "export_legacy_format": False,
    }
    config.update(recipe.llamafactory_export)
    return config


# Pass-through train keys that change how the model is loaded or what its loss covers: an evaluation must
# use them as training did. Optimiser, schedule and saving keys mean nothing to an eval-only run.
EVAL_PASSTHROUGH = (
    "flash_attn",
    "rope_scaling",
    "enable_liger_kernel",
    "upcast_layernorm",
    "use_unsloth",
    "train_on_prompt",
    "mask_history",
)


def eval_config(
    recipe: Recipe,
    hw: Hardware,
    *,
    model_path: str,
    dataset: str,
    dataset_dir: Path,
    output_dir: Path,
    adapter_dir: Path | None = None,
    max_new_tokens: int | None = None,
) -> dict[str, Any]:
    """An eval-only ``llamafactory-cli train`` config: the held-out loss of ``model_path`` (plus the LoRA in
    ``adapter_dir``, when given) on ``dataset``, or, with ``max_new_tokens``, its greedy answers to each
    conversation's last turn (``do_predict``). Template, thinking and ``cutoff_len`` are training's, and a
    QLoRA recipe's models load in 4 bits as in training."""
    t = recipe.train
    config: dict[str, Any] = {
        "model_name_or_path": model_path,
        **({"adapter_name_or_path": str(adapter_dir)} if adapter_dir else {}),
        "trust_remote_code": recipe.model.trust_remote_code,
        "stage": "sft",
        "do_train": False,
        "finetuning_type": "lora",
        "eval_dataset": dataset,
        "dataset_dir": str(dataset_dir),
        "template": recipe.model.resolved_template,
        "cutoff_len": t.cutoff_len,
        "overwrite_cache": True,
        "output_dir": str(output_dir),
        "per_device_eval_batch_size": t.per_device_train_batch_size,
        "report_to": "none",
        "seed": t.seed,
    }
    if recipe.model.resolved_template == "qwen3":
        config["enable_thinking"] = recipe.model.enable_thinking
    if max_new_tokens is None:
        config["do_eval"] = True
    else:
        # LLaMA-Factory samples by default (do_sample true, temperature 0.95): greedy makes answers repeatable.
        config.update(do_predict=True, predict_with_generate=True, do_sample=False, max_new_tokens=max_new_tokens)
    config.update(_hardware_keys(recipe, hw))
    config.update({k: v for k, v in recipe.llamafactory.items() if k in EVAL_PASSTHROUGH})
    return config


def cli_path() -> str:
    """The ``llamafactory-cli`` of this Python environment, else the one on PATH."""
    beside = Path(sys.executable).with_name("llamafactory-cli")
    found = str(beside) if beside.is_file() else shutil.which("llamafactory-cli")
    if not found:
        raise StageError("llamafactory-cli was not found; install the train extra: pip install -e '.[train]'")
    return found


def cli_argv(command: str, config_path: Path, *, float32_weights: bool = False) -> list[str]:
    """The command line for ``llamafactory-cli COMMAND CONFIG``; with ``float32_weights`` (CPU runs) it
    starts through ``orchestrator._lf_launch``, which loads a bf16 checkpoint's weights in float32."""
    cli = cli_path()
    if float32_weights and Path(cli) == Path(sys.executable).with_name("llamafactory-cli"):
        return [sys.executable, "-m", "orchestrator._lf_launch", command, str(config_path)]
    return [cli, command, str(config_path)]


def subprocess_env(model_path: str, hw: Hardware, cache_dir: Path, *, offline: bool = False) -> dict[str, str]:
    """LLaMA-Factory's environment. The datasets library caches the tokenized conversations (people's
    private chats) as Arrow files: ``cache_dir`` keeps them inside the run folder, not in ~/.cache.
    ``offline``: a hub model already in the Hugging Face cache, which LLaMA-Factory then loads from there."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    env["HF_DATASETS_CACHE"] = str(cache_dir / "datasets")
    if offline or Path(model_path).is_dir():
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")  # a local model needs no hub round trips
    if hw.backend == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # hardware: cpu on a GPU machine really means the CPU
    return env


def read_trainer_log(path: Path) -> list[dict[str, Any]]:
    """Every complete record of a trainer_log.jsonl (a half-written last line is left for the next read)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def run_cli(
    command: str,
    config_path: Path,
    log_path: Path,
    *,
    env: dict[str, str],
    trainer_log: Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    poll_seconds: float = 1.0,
    float32_weights: bool = False,
    on_phase: Callable[[str], None] | None = None,
) -> None:
    """Run ``llamafactory-cli <command> <config>``; raw output to ``log_path``; raise StageError on failure.

    A ``trainer_log`` left by an earlier run is removed first, so that only this run's steps are shown.
    ``on_phase`` hears what LLaMA-Factory is doing before the first step (loading the model, reading
    the data...) and, when nothing new happens for a while, that it is still at it.
    """
    if trainer_log is not None:
        trainer_log.unlink(missing_ok=True)
    seen = [0]
    phases = PhaseFollower(log_path, on_phase)

    def poll() -> None:
        steps = seen[0]
        seen[0] = _report(trainer_log, seen[0], on_progress)
        phases.poll(progressed=seen[0] > steps)

    argv = cli_argv(command, config_path, float32_weights=float32_weights)
    code = run_logged(argv, log_path, env=env, cwd=config_path.parent, poll=poll, poll_seconds=poll_seconds)
    if code != 0:
        raise StageError(
            f"llamafactory-cli {command} failed (exit {code}): "
            f"{' | '.join(error_lines(log_path))}\n  full log: {log_path}"
        )


# What LLaMA-Factory 0.9.5 logs as it starts, and what to tell the user (the first match of each).
PHASES = (
    ("Loading dataset", "reading the dataset"),
    ("Running tokenizer on dataset", "tokenizing the dataset"),
    ("loading weights file", "loading the model weights"),
    ("trainable params:", "model loaded; adding the LoRA adapter"),
    ("***** Running training *****", "training started"),
    ("***** Running Evaluation *****", "computing the held-out loss"),
    ("***** Running Prediction *****", "generating answers"),
    ("Merged ", "adapter merged; saving the merged model"),
)
QUIET_SECONDS = 30.0


class PhaseFollower:
    """Reads a growing LLaMA-Factory log for the phases above; says "still ..." after a quiet spell."""

    def __init__(self, log_path: Path, on_phase: Callable[[str], None] | None, quiet_s: float = QUIET_SECONDS):
        self.log_path, self.on_phase, self.quiet_s = log_path, on_phase, quiet_s
        self.offset = 0
        self.seen: set[str] = set()
        self.current = "starting LLaMA-Factory"
        self.began = self.last = time.monotonic()

    def poll(self, *, progressed: bool = False) -> None:
        if self.on_phase is None:
            return
        now = time.monotonic()
        if progressed:
            self.last = now
        for message in self._new_phases():
            self.current, self.last = message, now
            self.on_phase(message)
        if now - self.last >= self.quiet_s:
            self.last = now
            self.on_phase(f"still {self.current.split(';')[-1].strip()} ({now - self.began:.0f} s in)")

    def _new_phases(self) -> list[str]:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            return []
        cut = chunk.rfind(b"\n") + 1  # a half-written line is read next time
        self.offset += cut
        text = chunk[:cut].decode("utf-8", "replace")
        found = []
        for marker, message in PHASES:
            if marker not in self.seen and marker in text:
                self.seen.add(marker)
                found.append((text.index(marker), message))
        return [message for _, message in sorted(found)]


def _report(trainer_log: Path | None, seen: int, on_progress: Callable[[Progress], None] | None) -> int:
    if trainer_log is None or on_progress is None:
        return seen
    records = read_trainer_log(trainer_log)
    for rec in records[seen:]:
        # an eval-only launch ends with a record of its metrics at step 0: no step to show
        if isinstance(rec.get("current_steps"), int) and rec["current_steps"] > 0:
            on_progress(
                Progress(
                    rec["current_steps"],
                    rec.get("total_steps", 0),
                    rec.get("loss"),
                    rec.get("elapsed_time", ""),
                    rec.get("remaining_time", ""),
                    rec.get("epoch"),
                )
            )
    return len(records)


def error_lines(log_path: Path, limit: int = 3) -> list[str]:
    """The last meaningful error lines of a LLaMA-Factory log: exception lines first, else its tail."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ["(no log was written)"]
    lines = [ln.rstrip() for ln in lines if ln.strip() and "%|" not in ln]
    errors = list(dict.fromkeys(m[2].strip() for m in map(ERROR_LINE.match, lines) if m))  # once for all ranks
    errors = [e for e in errors if e.split(":")[0].rsplit(".")[-1] not in LAUNCHER_ERRORS] or errors
    picked = errors[-limit:] if errors else [ln.strip() for ln in lines[-limit:]]
    return picked or ["(the log is empty)"]


# LLaMA-Factory 0.9.5's ComputeSimilarity (train/sft/metric.py): what a predict_with_generate run scores.
SIMILARITY_METRICS = ("rouge-1", "rouge-2", "rouge-l", "bleu-4")


def read_eval_loss(output_dir: Path, log_path: Path) -> float:
    """``eval_loss`` of a ``do_eval`` run: ``save_metrics("eval")`` writes eval_results.json and merges it
    into all_results.json. It may be NaN or infinite; a run that wrote none is a StageError."""
    for name in ("eval_results.json", "all_results.json"):
        data = read_json(output_dir / name)
        value = data.get("eval_loss") if isinstance(data, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    raise StageError(f"llamafactory-cli wrote no eval_loss in {output_dir}; see {log_path}")


def read_predictions(output_dir: Path, count: int, log_path: Path) -> tuple[list[str], dict[str, float]]:
    """What a ``do_predict`` run generated: generated_predictions.jsonl's ``predict`` texts, in dataset order
    (``count`` of them, else a StageError), and predict_results.json's ``predict_<metric>`` scores by
    metric name (ROUGE and BLEU-4, in percent)."""
    path = output_dir / "generated_predictions.jsonl"
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise StageError(f"cannot read LLaMA-Factory's answers in {path} ({exc}); see {log_path}") from None
    if len(rows) != count or not all(isinstance(r, dict) and isinstance(r.get("predict"), str) for r in rows):
        raise StageError(f"{path} holds {len(rows)} answers for {count} prompts; see {log_path}")
    scores = read_json(output_dir / "predict_results.json")
    scores = scores if isinstance(scores, dict) else {}
    metrics = {m: float(scores[f"predict_{m}"]) for m in SIMILARITY_METRICS if f"predict_{m}" in scores}
    return [r["predict"] for r in rows], metrics
