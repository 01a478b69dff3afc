"""The data stage: the recipe's sources -> a LLaMA-Factory ShareGPT dataset and its dataset_info.json entry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.manifest import file_stat
from orchestrator.manifest import fingerprint as _fingerprint
from orchestrator.run import RunContext, StageResult

if TYPE_CHECKING:
    from orchestrator.dataset import ExportReport
    from orchestrator.recipe import FileSource, MemorySource

NAME = "data"


def export(
    sources: Sequence[FileSource | MemorySource],
    name: str,
    dataset_dir: str | Path = "data",
    *,
    keep_thinking: bool = True,
) -> ExportReport:
    """Read every source, repair or skip (and count) what LLaMA-Factory could not train on, and write
    ``<dataset_dir>/<name>.jsonl`` plus its entry in ``dataset_info.json``."""
    from orchestrator.dataset import export_dataset
    from orchestrator.sources import read_sources

    return export_dataset(read_sources(sources), name, dataset_dir, keep_thinking=keep_thinking)


def fingerprint(run: RunContext) -> str:
    recipe = run.recipe
    stats = [file_stat(Path(s.path)) for s in recipe.data.sources]
    return _fingerprint(recipe.data.model_dump(), recipe.model.keeps_thinking, stats)


def run(run: RunContext) -> StageResult:
    recipe = run.recipe
    report = export(
        recipe.data.sources, recipe.dataset_name, run.dataset_dir, keep_thinking=recipe.model.keeps_thinking
    )
    for line in report.lines():
        run.reporter.info(line)
    return StageResult(
        inputs={"sources": [s.model_dump() for s in recipe.data.sources]},
        outputs={"dataset": str(report.dataset_path), "dataset_info": str(report.info_path)},
        details=report.to_dict(),
    )
