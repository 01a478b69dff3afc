"""The run context: a resolved recipe, its run folder and hardware, the manifest, and where progress goes.

Every stage reads what it needs from a ``RunContext`` and nothing else; ``open_run`` makes one from a
recipe (a shipped name or a path) and does every check that needs no work: the recipe's schema, the
hardware it asks for, and what that hardware can do (QLoRA needs a GPU).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator.errors import UsageError
from orchestrator.hardware import Hardware
from orchestrator.manifest import Manifest
from orchestrator.recipe import STAGES, TINY_MODEL, Recipe, load_recipe

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """One training step as LLaMA-Factory's trainer_log.jsonl reports it."""

    step: int
    total: int
    loss: float | None
    elapsed: str
    remaining: str
    epoch: float | None = None


class Reporter(Protocol):
    """Where a run's progress goes: the CLI's console renderer, or logging."""

    def stage(self, name: str, status: str, message: str = "") -> None: ...
    def progress(self, progress: Progress) -> None: ...
    def transfer(self, label: str, done: int, total: int) -> None: ...
    def info(self, message: str) -> None: ...


class LogReporter:
    """The library's default: everything to logging."""

    def stage(self, name: str, status: str, message: str = "") -> None:
        log.info("[%s] %s %s", name, status, message)

    def progress(self, progress: Progress) -> None:
        log.info("step %s/%s loss %s", progress.step, progress.total, progress.loss)

    def transfer(self, label: str, done: int, total: int) -> None:
        log.debug("%s %d/%d bytes", label, done, total)

    def info(self, message: str) -> None:
        log.info(message)


@dataclass
class StageResult:
    """What a stage read and wrote, recorded in the manifest."""

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
    model_snapshot: Path | None = None  # a hub base model's folder in the Hugging Face cache, once downloaded

    @property
    def run_dir(self) -> Path:
        return self.recipe.run_dir.resolve()

    @property
    def dataset_dir(self) -> Path:
        return Path(self.recipe.data.dataset_dir).resolve()

    @property
    def dataset_file(self) -> Path:
        return self.dataset_dir / f"{self.recipe.dataset_name}.jsonl"

    @property
    def adapter_dir(self) -> Path:
        return self.run_dir / "adapter"

    @property
    def merged_dir(self) -> Path:
        return self.run_dir / "merged"

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def cache_dir(self) -> Path:
        """Caches built from the training data (the datasets library's Arrow files): private, so kept here."""
        return self.run_dir / "cache"

    @property
    def gguf_path(self) -> Path:
        """gguf/<name>-<type>.gguf, or gguf/adapter-<type>.gguf for serve: adapter."""
        prefix = "adapter" if self.recipe.ollama.serve == "adapter" else self.recipe.name
        return self.run_dir / "gguf" / f"{prefix}-{self.recipe.gguf.type}.gguf"

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

    def model_identity(self) -> Any:
        """What identifies the base model: the tiny model's spec (it is rebuilt identically), a local
        folder's config.json, or a hub id (then the id, part of the train config, is all there is)."""
        from orchestrator.manifest import file_digest

        if self.recipe.model.name_or_path == TINY_MODEL:
            from orchestrator.tiny import TinySpec

            return asdict(TinySpec())
        return file_digest(Path(self.model_path) / "config.json")

    def ensure_model(self) -> None:
        """Build the tiny model when the recipe uses it (a no-op when it is already built); download a hub
        base model into the Hugging Face cache, with its progress, when any of its files is missing."""
        if self.recipe.model.name_or_path == TINY_MODEL:
            from orchestrator.tiny import build_tiny_qwen3

            self.reporter.info(f"using the tiny random-weight Qwen3 in {self.model_path} (built if missing)")
            build_tiny_qwen3(self.model_path)
            return
        from orchestrator import hub

        if self.model_snapshot is None and hub.is_hub_id(self.model_path):
            self.model_snapshot = hub.ensure(
                self.model_path, on_transfer=self.reporter.transfer, on_info=self.reporter.info
            )

    def lf_env(self, *, train: bool = False) -> dict[str, str]:
        """LLaMA-Factory's environment for this run (offline once the base model is here); for ``train``,
        with the launch of train.gpus/nodes/deepspeed/ray_workers, else on one GPU (distributed.py)."""
        from orchestrator import distributed
        from orchestrator import llamafactory as lf

        local = self.model_snapshot is not None
        env = lf.subprocess_env(self.model_path, self.hardware, self.cache_dir, offline=local)
        return {**env, **distributed.launch_env(self.recipe, self.hardware, env, train=train)}


def open_run(
    recipe_ref: str | Path | None,
    reporter: Reporter | None = None,
    hardware: Hardware | None = None,
    *,
    until: str | None = None,
    start: str | None = None,
    only: str | None = None,
    assume_hardware: bool = False,
) -> RunContext:
    """Load the recipe and resolve the hardware. Its stages are cut to those from ``start`` up to
    ``until`` (or to ``only``); with ``assume_hardware`` (a dry run) a GPU the recipe names but this
    machine lacks is assumed present."""
    from orchestrator import hardware as hw_module

    recipe, path = load_recipe(recipe_ref)
    recipe.stages = select_stages(recipe.stages, path, until=until, start=start, only=only)
    hw = hardware or hw_module.resolve(recipe.hardware, assume=assume_hardware)
    check_fit(recipe, hw, path)
    reporter = reporter or LogReporter()
    from orchestrator.fit import check_run

    check_run(recipe, hw, reporter.info, path)  # the memory estimate and auto_fit, before any download
    manifest = Manifest(recipe.run_dir.resolve() / "manifest.json")
    return RunContext(recipe, path, hw, reporter, manifest)


def select_stages(
    stages: list[str], path: Path, *, until: str | None = None, start: str | None = None, only: str | None = None
) -> list[str]:
    """The recipe's stages from ``start`` up to ``until``, or just ``only``; UsageError when none is left."""
    first, last = (only, only) if only else (start, until)
    kept = [
        s
        for s in stages
        if (not first or STAGES.index(s) >= STAGES.index(first)) and (not last or STAGES.index(s) <= STAGES.index(last))
    ]
    if not kept or (only and only not in stages):
        asked = (
            f"--only {only}" if only else " ".join(f"--{k} {v}" for k, v in (("from", start), ("until", until)) if v)
        )
        raise UsageError(f"{asked}: {path} has no such stage to run (its stages: {', '.join(stages)})")
    return kept


def check_fit(recipe: Recipe, hw: Hardware, path: Path) -> None:
    """What the recipe asks of the hardware, checked before anything runs."""
    if recipe.method == "qlora" and hw.backend == "cpu" and {"train"} & set(recipe.stages):
        raise UsageError(
            f"{path}: method: qlora needs a GPU (bitsandbytes 4-bit) and this run is on the CPU; "
            "use method: lora, or hardware: cuda on a GPU machine"
        )
