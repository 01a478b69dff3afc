"""The whole chain as one call: ``orchestrator.run(recipe, until=..., force=...)``, what ``orchestrator run``
does, returning what the run produced instead of printing it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.context import Reporter, RunContext, open_run


@dataclass
class RunOutcome:
    """Where a run's outputs are, read back from its manifest once it has finished."""

    run_dir: Path
    manifest: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> the manifest's record
    context: RunContext | None = field(default=None, repr=False)

    def output(self, stage: str, key: str) -> Path | None:
        """A stage's recorded output (``output("gguf", "gguf")``), None when it did not write one."""
        value = self.stages.get(stage, {}).get("outputs", {}).get(key)
        return Path(value) if value else None

    @property
    def report(self) -> Path:
        return self.run_dir / "report.html"

    @classmethod
    def of(cls, ctx: RunContext, run_dir: Path, manifest: Path) -> RunOutcome:
        """What ``run_pipeline`` left for this run context: its manifest's stage records."""
        return cls(run_dir, manifest, dict(ctx.manifest.data.get("stages", {})), ctx)


def run(
    recipe: str | Path | None = None,
    *,
    until: str | None = None,
    start: str | None = None,
    only: str | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
) -> RunOutcome:
    """Run a recipe (a shipped name such as ``"quickstart"``, a path, or None for the quickstart): its
    stages up to ``until``, from ``start`` or just ``only`` (those two always rerun), each skipped when it
    is already done with the same inputs unless ``force``. Progress goes to ``reporter`` (default: the
    ``logging`` module). Raises ``OrchestratorError`` (one line) when a stage fails."""
    from orchestrator.pipeline import run_pipeline

    ctx = open_run(recipe, reporter, until=until, start=start, only=only)
    result = run_pipeline(ctx, force=bool(force or start or only))
    return RunOutcome.of(ctx, result.run_dir, result.manifest)
