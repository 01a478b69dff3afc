"""A run: the recipe's stages in order, each skipped when it is already done with the same inputs.

``run_pipeline`` locks the run folder (a second run of it refuses while the first is alive), then for
each stage compares its fingerprint (its config plus its input files, as they are now) with the
manifest's record; a stage that is current is skipped, any other runs and is recorded as done or
failed, whatever it raised. At the end of every run, finished, failed or interrupted, it writes the run
report (``orchestrator.run_report``); a report that cannot be written costs one warning, never the run's
own outcome or error.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.context import RunContext
from orchestrator.errors import OrchestratorError, StageError
from orchestrator.fsutil import file_lock, write_text
from orchestrator.stages import BY_NAME, PIPELINE, merge, train
from orchestrator.stages import eval as evaluation

log = logging.getLogger(__name__)
LOCK_FILE = ".lock"


@dataclass
class RunResult:
    run_dir: Path
    manifest: Path
    report: Path | None = None  # report.html, None when it could not be written


def dry_run(ctx: RunContext) -> dict[str, str]:
    """The LLaMA-Factory YAML the run would write, by file name (relative to the run folder); nothing is
    written or run."""
    out = {}
    if "train" in ctx.recipe.stages:
        out["train.yaml"] = yaml.safe_dump(train.config(ctx), sort_keys=False, allow_unicode=True)
    if "merge" in ctx.recipe.stages:
        out["export.yaml"] = yaml.safe_dump(merge.config(ctx), sort_keys=False, allow_unicode=True)
    if "eval" in ctx.recipe.stages and ctx.recipe.data.eval_split:
        for side, kinds in evaluation.configs(ctx).items():  # the eval stage's four launches
            for kind, config in kinds.items():
                out[f"eval/{side}-{kind}.yaml"] = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    return out


def run_pipeline(ctx: RunContext, *, force: bool = False) -> RunResult:
    """Run the recipe's stages in order; a stage already done with the same inputs is skipped."""
    with file_lock(ctx.run_dir / LOCK_FILE, wait=False, what=f"run folder {ctx.run_dir}"):
        ctx.manifest.data.update(
            recipe=str(ctx.recipe_path),
            resolved_recipe=ctx.recipe.model_dump(mode="json"),
            hardware=ctx.hardware.to_dict(),
            run={"started": _now(), "stages": list(ctx.recipe.stages), "status": "running"},
        )
        try:
            _run_stages(ctx, force)
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            write_run_report(ctx, status, exc)
            raise
        report = write_run_report(ctx, "done")
    return RunResult(ctx.run_dir, ctx.manifest.path, report)


def _run_stages(ctx: RunContext, force: bool) -> None:
    selected = [stage for stage in PIPELINE if stage.NAME in ctx.recipe.stages]
    # Packages are checked for the stages that look due now (the exact list is known only as they run).
    due = [s.NAME for s in selected if force or not ctx.manifest.is_current(s.NAME, s.fingerprint(ctx))]
    _preflight(ctx, due)
    for stage in selected:
        fp = stage.fingerprint(ctx)
        if not force and _current(ctx, stage, fp):
            ctx.reporter.stage(stage.NAME, "skipped", "already done with the same inputs")
            continue
        _run_stage(ctx, stage.NAME, fp)


def write_run_report(ctx: RunContext, status: str, error: BaseException | None = None) -> Path | None:
    """Record how the run ended in the manifest and write the run report; returns report.html's path.

    Never raises (a second Ctrl-C included): a report that cannot be written is one warning line, and
    the run's own error, which the caller re-raises, stays the one the user sees."""
    record = ctx.manifest.data.setdefault("run", {})
    record.update(finished=_now(), status=status, error=_error_text(error))
    try:
        from orchestrator.run_report import write_report

        with contextlib.suppress(OrchestratorError):
            ctx.manifest.save()  # the report reads the in-memory manifest; a full disk fails it next
        paths = write_report(ctx.run_dir, ctx.manifest.data, on_progress=ctx.reporter.transfer)
    except BaseException as exc:  # noqa: BLE001 (the report must never replace the run's outcome)
        log.warning("the run report was not written: %s", _report_failure(ctx, exc))
        return None
    record["report"] = str(paths.html)
    return paths.html


def _error_text(error: BaseException | None) -> str | None:
    if error is None:
        return None
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    return str(error) or type(error).__name__


def _report_failure(ctx: RunContext, exc: BaseException) -> str:
    """One line on why the report failed. Our own errors name a file; anything else may quote data
    from the run, so its traceback goes to logs/report.error.log and the line names only its type."""
    if isinstance(exc, OrchestratorError):
        return str(exc).splitlines()[0]
    path = ctx.logs_dir / "report.error.log"
    try:
        write_text(path, "".join(traceback.format_exception(exc)))
    except BaseException:  # noqa: BLE001
        return type(exc).__name__
    return f"{type(exc).__name__}; details in {path}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _current(ctx: RunContext, stage: Any, fp: str) -> bool:
    """Done with the same inputs, its outputs in place, and (for a stage whose output lives elsewhere,
    as a model in Ollama) that output checked by the stage's own ``still_current``."""
    if not ctx.manifest.is_current(stage.NAME, fp):
        return False
    check = getattr(stage, "still_current", None)
    return check is None or check(ctx, ctx.manifest.stage(stage.NAME))


def missing_packages(ctx: RunContext, names: list[str] | None = None) -> list[OrchestratorError]:
    """What the stages (default: all of the recipe's) need and this Python lacks, one error each."""
    from orchestrator.deps import problems
    from orchestrator.recipe import TINY_MODEL

    stages = ctx.recipe.stages if names is None else names
    return problems(stages, tiny_model=ctx.recipe.model.name_or_path == TINY_MODEL, method=ctx.recipe.method)


def _preflight(ctx: RunContext, names: list[str]) -> None:
    """What the stages about to run need, checked before the first one starts."""
    found = missing_packages(ctx, names)
    if found:
        raise found[0]


def _run_stage(ctx: RunContext, name: str, fp: str) -> None:
    ctx.reporter.stage(name, "started")
    began = ctx.manifest.start(name, fp, {"recipe": str(ctx.recipe_path)})
    try:
        result = BY_NAME[name].run(ctx)
    except OrchestratorError as exc:
        ctx.manifest.fail(name, began, str(exc))
        ctx.reporter.stage(name, "failed")
        raise
    except KeyboardInterrupt:
        ctx.manifest.fail(name, began, "interrupted")
        raise
    except Exception as exc:  # a bug or an unforeseen failure: still a true manifest and one line
        error = _unexpected(ctx, name, exc)
        ctx.manifest.fail(name, began, str(error))
        ctx.reporter.stage(name, "failed")
        raise error from exc
    ctx.manifest.data["stages"][name]["inputs"].update(result.inputs)
    ctx.manifest.finish(name, began, result.outputs, result.details)
    ctx.reporter.stage(name, "done", f"in {ctx.manifest.stage(name)['duration_s']:.1f} s")


def _unexpected(ctx: RunContext, name: str, exc: Exception) -> StageError:
    """The traceback goes to logs/<stage>.error.log; the user gets its last line and where it is."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        from orchestrator.deps import missing_module_error

        return missing_module_error(exc.name, f"the {name} stage")
    path = ctx.logs_dir / f"{name}.error.log"
    detail = "".join(traceback.format_exception(exc))
    try:
        write_text(path, detail)
        where = f"; details in {path}"
    except OrchestratorError:
        where = ""
    cause = str(exc).splitlines()[0] if str(exc) else ""
    return StageError(f"the {name} stage failed unexpectedly: {type(exc).__name__}: {cause}{where}")
