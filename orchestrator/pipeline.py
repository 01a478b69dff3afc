"""The stages of a run (data -> train -> merge), their manifest, and resume.

Each stage is a plain function of a RunContext returning what it read and wrote; ``run_pipeline``
skips a stage whose fingerprint (its config plus its inputs) matches a finished entry in the
manifest, so a rerun only redoes what changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from orchestrator import llamafactory as lf
from orchestrator.errors import OrchestratorError, StageError, UsageError
from orchestrator.fsutil import write_text
from orchestrator.hardware import Hardware
from orchestrator.manifest import Manifest, file_digest, file_stat, fingerprint
from orchestrator.recipe import STAGES, TINY_MODEL, Recipe, dump_recipe, load_recipe

log = logging.getLogger(__name__)


class Reporter(Protocol):
    def stage(self, name: str, status: str, message: str = "") -> None: ...
    def progress(self, progress: lf.Progress) -> None: ...
    def transfer(self, label: str, done: int, total: int) -> None: ...
    def info(self, message: str) -> None: ...


class LogReporter:
    """The library's default: everything to logging."""

    def stage(self, name: str, status: str, message: str = "") -> None:
        log.info("[%s] %s %s", name, status, message)

    def progress(self, progress: lf.Progress) -> None:
        log.info("step %s/%s loss %s", progress.step, progress.total, progress.loss)

    def transfer(self, label: str, done: int, total: int) -> None:
        log.debug("%s %d/%d bytes", label, done, total)

    def info(self, message: str) -> None:
        log.info(message)


@dataclass
class StageResult:
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    recipe: Recipe
    recipe_path: Path
    hardware: Hardware
    reporter: Reporter
    manifest: Manifest
    fingerprints: dict[str, str] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.recipe.run_dir.resolve()

    @property
    def dataset_dir(self) -> Path:
        return Path(self.recipe.data.dataset_dir).resolve()

    @property
    def adapter_dir(self) -> Path:
        return self.run_dir / "adapter"

    @property
    def merged_dir(self) -> Path:
        return self.run_dir / "merged"

    @property
    def ollama_name(self) -> str:
        return self.recipe.ollama.name or self.recipe.name

    @property
    def model_path(self) -> str:
        """The base model: a local folder (absolute) or a hub id; the tiny model lives beside the runs."""
        name = self.recipe.model.name_or_path
        if name == TINY_MODEL:
            return str((Path(self.recipe.runs_dir).parent / "models" / TINY_MODEL).resolve())
        return str(Path(name).resolve()) if Path(name).exists() else name

    def train_config(self) -> dict[str, Any]:
        return lf.train_config(
            self.recipe,
            self.hardware,
            model_path=self.model_path,
            dataset_dir=self.dataset_dir,
            output_dir=self.adapter_dir,
        )

    def export_config(self) -> dict[str, Any]:
        return lf.export_config(
            self.recipe, model_path=self.model_path, adapter_dir=self.adapter_dir, export_dir=self.merged_dir
        )


def stage_data(ctx: RunContext) -> StageResult:
    from orchestrator.dataset import export_dataset
    from orchestrator.sources import read_sources

    data = ctx.recipe.data
    report = export_dataset(
        read_sources(data.sources),
        ctx.recipe.dataset_name,
        ctx.dataset_dir,
        keep_thinking=ctx.recipe.model.keeps_thinking,
    )
    for line in report.lines():
        ctx.reporter.info(line)
    return StageResult(
        inputs={"sources": [s.model_dump() for s in data.sources]},
        outputs={"dataset": str(report.dataset_path), "dataset_info": str(report.info_path)},
        details=report.to_dict(),
    )


def stage_train(ctx: RunContext) -> StageResult:
    _ensure_model(ctx)
    _check_dataset_registered(ctx)
    config = ctx.train_config()
    config_path = _write_yaml(ctx.run_dir / "train.yaml", config)
    trainer_log = ctx.adapter_dir / "trainer_log.jsonl"
    log_path = ctx.run_dir / "logs" / "train.log"
    ctx.reporter.info(f"training on {ctx.hardware.describe()}; LLaMA-Factory's output goes to {log_path}")
    lf.run_cli(
        "train",
        config_path,
        log_path,
        env=lf.subprocess_env(ctx.model_path, ctx.hardware),
        trainer_log=trainer_log,
        on_progress=ctx.reporter.progress,
    )
    if not (ctx.adapter_dir / "adapter_model.safetensors").is_file():
        raise StageError(f"llamafactory-cli train finished but wrote no adapter in {ctx.adapter_dir}; see {log_path}")
    losses = [r["loss"] for r in lf.read_trainer_log(trainer_log) if r.get("loss") is not None]
    skipped = log_path.read_text(encoding="utf-8", errors="replace").count("Skipping this abnormal example")
    if skipped:
        ctx.reporter.info(f"warning: LLaMA-Factory skipped {skipped} examples; see {log_path}")
    return StageResult(
        inputs={"train_config": str(config_path), "model": ctx.model_path},
        outputs={"adapter": str(ctx.adapter_dir), "trainer_log": str(trainer_log), "log": str(log_path)},
        details={
            "steps": len(losses),
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "examples_skipped_by_llamafactory": skipped,
        },
    )


def stage_merge(ctx: RunContext) -> StageResult:
    if not (ctx.adapter_dir / "adapter_model.safetensors").is_file():
        raise StageError(f"no adapter in {ctx.adapter_dir} to merge; run the train stage first")
    _ensure_model(ctx)
    config_path = _write_yaml(ctx.run_dir / "export.yaml", ctx.export_config())
    log_path = ctx.run_dir / "logs" / "export.log"
    ctx.reporter.info(f"merging the adapter onto {ctx.model_path}")
    lf.run_cli("export", config_path, log_path, env=lf.subprocess_env(ctx.model_path, ctx.hardware))
    shards = sorted(p.name for p in ctx.merged_dir.glob("*.safetensors"))
    if not shards:
        raise StageError(f"llamafactory-cli export wrote no safetensors in {ctx.merged_dir}; see {log_path}")
    # LLaMA-Factory drops a plain-ChatML Modelfile here (no thinking, no tools); the register stage writes
    # one that matches training, so this one would only mislead.
    (ctx.merged_dir / "Modelfile").unlink(missing_ok=True)
    return StageResult(
        inputs={"export_config": str(config_path), "adapter": str(ctx.adapter_dir)},
        outputs={"merged": str(ctx.merged_dir), "log": str(log_path)},
        details={"shards": shards, "bytes": sum((ctx.merged_dir / s).stat().st_size for s in shards)},
    )


def _serve_stage(name: str) -> Callable[[RunContext], StageResult]:
    def run(ctx: RunContext) -> StageResult:
        from orchestrator import serve

        return getattr(serve, f"stage_{name}")(ctx)

    return run


STAGE_FUNCTIONS: dict[str, Callable[[RunContext], StageResult]] = {
    "data": stage_data,
    "train": stage_train,
    "merge": stage_merge,
    "gguf": _serve_stage("gguf"),
    "register": _serve_stage("register"),
}


def stage_fingerprint(ctx: RunContext, name: str) -> str:
    """A hash of what the stage reads: its config and its input files, as they are now."""
    recipe = ctx.recipe
    if name == "data":
        stats = [file_stat(Path(s.path)) for s in recipe.data.sources]
        return fingerprint(recipe.data.model_dump(), recipe.model.keeps_thinking, stats)
    if name == "train":
        dataset = ctx.dataset_dir / f"{recipe.dataset_name}.jsonl"
        return fingerprint(file_digest(dataset), ctx.train_config(), model_identity(ctx))
    if name == "merge":
        return fingerprint(file_stat(ctx.adapter_dir / "adapter_model.safetensors"), ctx.export_config())
    from orchestrator import serve

    if name == "gguf":
        source = ctx.adapter_dir if recipe.ollama.serve == "adapter" else ctx.merged_dir
        stats = [file_stat(p) for p in sorted(source.glob("*.safetensors"))]
        return fingerprint(
            stats,
            recipe.gguf.model_dump(),
            recipe.ollama.serve,
            recipe.model.resolved_template,
            recipe.model.enable_thinking,
            str(serve.gguf_path(ctx)),
            ctx.ollama_name,  # general.name in the file
        )
    return fingerprint(
        file_stat(serve.gguf_path(ctx)),
        recipe.ollama.model_dump(),
        ctx.ollama_name,
        recipe.model.resolved_template,
        recipe.model.enable_thinking,
    )


def model_identity(ctx: RunContext) -> Any:
    """What identifies the base model: the tiny model's spec (it is rebuilt identically), a local folder's
    config.json, or a hub id (then the id, already part of the train config, is all there is)."""
    if ctx.recipe.model.name_or_path == TINY_MODEL:
        from orchestrator.tiny import TinySpec

        return asdict(TinySpec())
    return file_digest(Path(ctx.model_path) / "config.json")


def _ensure_model(ctx: RunContext) -> None:
    if ctx.recipe.model.name_or_path == TINY_MODEL:
        from orchestrator.tiny import build_tiny_qwen3

        ctx.reporter.info(f"using the tiny random-weight Qwen3 in {ctx.model_path} (built if missing)")
        build_tiny_qwen3(ctx.model_path)


def _check_dataset_registered(ctx: RunContext) -> None:
    import json

    info = ctx.dataset_dir / "dataset_info.json"
    name = ctx.recipe.dataset_name
    if not info.is_file() or name not in json.loads(info.read_text(encoding="utf-8")):
        raise StageError(f"dataset '{name}' is not in {info}; add the data stage to the recipe's stages")


def _write_yaml(path: Path, config: dict[str, Any]) -> Path:
    return write_text(path, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


@dataclass
class RunResult:
    run_dir: Path
    stages: dict[str, str]
    manifest: Path


def prepare(
    recipe_ref: str | Path | None,
    reporter: Reporter | None = None,
    hardware: Hardware | None = None,
    *,
    until: str | None = None,
    assume_hardware: bool = False,
) -> RunContext:
    """Load the recipe (its stages cut after ``until`` when given) and resolve the hardware; with
    ``assume_hardware`` (a dry run) a GPU the recipe names but this machine lacks is assumed present."""
    from orchestrator import hardware as hw_module

    recipe, path = load_recipe(recipe_ref)
    if until:
        kept = [s for s in recipe.stages if STAGES.index(s) <= STAGES.index(until)]
        if not kept:
            raise UsageError(f"--until {until}: {path} has no stage up to {until} (its stages: {recipe.stages})")
        recipe.stages = kept
    hw = hardware or hw_module.resolve(recipe.hardware, assume=assume_hardware)
    manifest = Manifest(recipe.run_dir.resolve() / "manifest.json")
    return RunContext(recipe, path, hw, reporter or LogReporter(), manifest)


def dry_run(ctx: RunContext) -> dict[str, str]:
    """The LLaMA-Factory YAML the run would write, by file name; nothing is written or run."""
    out = {}
    if "train" in ctx.recipe.stages:
        out["train.yaml"] = yaml.safe_dump(ctx.train_config(), sort_keys=False, allow_unicode=True)
    if "merge" in ctx.recipe.stages:
        out["export.yaml"] = yaml.safe_dump(ctx.export_config(), sort_keys=False, allow_unicode=True)
    return out


def run_pipeline(ctx: RunContext, *, force: bool = False) -> RunResult:
    """Run the recipe's stages in order; a stage already done with the same inputs is skipped."""
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    write_text(ctx.run_dir / "recipe.yaml", dump_recipe(ctx.recipe))
    ctx.manifest.data.update(recipe=str(ctx.recipe_path), hardware=ctx.hardware.to_dict())
    statuses: dict[str, str] = {}
    for name in ctx.recipe.stages:
        fp = stage_fingerprint(ctx, name)
        if not force and ctx.manifest.is_current(name, fp):
            ctx.reporter.stage(name, "skipped", "already done with the same inputs")
            statuses[name] = "skipped"
            continue
        statuses[name] = _run_stage(ctx, name, fp)
    return RunResult(ctx.run_dir, statuses, ctx.manifest.path)


def _run_stage(ctx: RunContext, name: str, fp: str) -> str:
    ctx.reporter.stage(name, "started")
    began = ctx.manifest.start(name, fp, {"recipe": str(ctx.recipe_path)})
    try:
        result = STAGE_FUNCTIONS[name](ctx)
    except OrchestratorError as exc:
        ctx.manifest.fail(name, began, str(exc))
        ctx.reporter.stage(name, "failed")
        raise
    except KeyboardInterrupt:
        ctx.manifest.fail(name, began, "interrupted")
        raise
    ctx.manifest.data["stages"][name]["inputs"].update(result.inputs)
    ctx.manifest.finish(name, began, result.outputs, result.details)
    ctx.reporter.stage(name, "done", f"in {ctx.manifest.stage(name)['duration_s']:.1f} s")
    return "done"
