"""The data stage: the recipe's sources -> a LLaMA-Factory ShareGPT dataset and its dataset_info.json entry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.context import RunContext, StageResult
from orchestrator.manifest import file_stat
from orchestrator.manifest import fingerprint as _fingerprint

if TYPE_CHECKING:
    from orchestrator.dataset import ExportReport
    from orchestrator.recipe import FileSource, MemorySource, Recipe

NAME = "data"


def export(
    sources: Sequence[FileSource | MemorySource],
    name: str,
    dataset_dir: str | Path = "data",
    *,
    keep_thinking: bool = True,
    **cleaning: Any,
) -> ExportReport:
    """Read every source, repair or skip (and count) what LLaMA-Factory could not train on, and write
    ``<dataset_dir>/<name>.jsonl`` plus its entry in ``dataset_info.json``.

    ``cleaning``: ``export_dataset``'s ``redact``, ``near_duplicates``, ``cutoff_len``, ``template``,
    ``enable_thinking``, ``eval_split`` and ``preferences`` (the recipe's defaults when omitted).
    """
    from orchestrator.dataset import export_dataset
    from orchestrator.sources import read_sources

    return export_dataset(read_sources(sources), name, dataset_dir, keep_thinking=keep_thinking, **cleaning)


def cleaning_options(recipe: Recipe) -> dict[str, Any]:
    """What the recipe asks of the export besides its sources: redaction, near duplicates, and what the
    token counts are measured against (the training template and cutoff_len)."""
    return {
        "redact": recipe.data.redact,
        "near_duplicates": recipe.data.near_duplicates,
        "cutoff_len": recipe.train.cutoff_len,
        "template": recipe.model.resolved_template,
        "enable_thinking": recipe.model.enable_thinking,
        "eval_split": recipe.data.eval_split,
        "preferences": recipe.data.preferences,
    }


def fingerprint(run: RunContext) -> str:
    """The data config and the source files as they are now. A source that reads a server (saved
    ``ollama run`` sessions) has no files to go by: then the stage always reruns (the train stage still
    skips when the dataset it writes comes out the same)."""
    import time

    from orchestrator.sources import source_files

    recipe = run.recipe
    stats = [file_stat(path) for spec in recipe.data.sources for path in source_files(spec)]
    live = [time.time_ns()] if any(spec.type == "ollama_saved" for spec in recipe.data.sources) else []
    options = cleaning_options(recipe)
    return _fingerprint(recipe.data.model_dump(mode="json"), recipe.model.keeps_thinking, options, stats, live)


def run(run: RunContext) -> StageResult:
    recipe = run.recipe
    report = export(
        recipe.data.sources,
        recipe.dataset_name,
        run.dataset_dir,
        keep_thinking=recipe.model.keeps_thinking,
        **cleaning_options(recipe),
    )
    for line in report.lines():
        run.reporter.info(line)
    return StageResult(
        inputs={"sources": [s.model_dump() for s in recipe.data.sources]},
        outputs={
            "dataset": str(report.dataset_path),
            "dataset_info": str(report.info_path),
            "report": str(report.report_path),
            **({"eval_dataset": str(report.eval_path)} if report.eval_path else {}),
            **({"pref_dataset": str(report.pref_path)} if report.pref_path else {}),
        },
        details=report.to_dict(),
    )
