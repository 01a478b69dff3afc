"""Many runs from one batch file: a list of recipes and/or one base recipe swept over values, with
overrides applied to every run. Each run is the child process ``python -m orchestrator run <recipe>``
of its resolved recipe (sweep and overrides applied, every path absolute), written into the batch
folder, with ``CUDA_VISIBLE_DEVICES``/``HIP_VISIBLE_DEVICES`` set to the GPUs it was given. As many run
at once as the GPUs allow (``max_parallel`` on a CPU machine, default 1), or as a Ray cluster's
resources allow (``orchestrator.batch_ray``). A failed run does not stop the others; the summary table
goes to ``batch.json`` and ``batch.md``; a rerun skips the runs whose manifest says they finished with
the same recipe, and retries the rest.
"""

from __future__ import annotations

import difflib
import itertools
import logging
import os
import re
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError

from orchestrator.errors import UsageError
from orchestrator.fsutil import read_json, write_json, write_text
from orchestrator.recipe import TINY_MODEL, Recipe, dump_recipe, load_recipe, validate_recipe
from orchestrator.recipe_sources import Section

log = logging.getLogger(__name__)
GPU_VARS = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
CHILD_LOG = "orchestrator.log"  # in the run folder's logs/: what `orchestrator run` printed


class BatchSpec(Section):
    recipes: list[str] = Field(default_factory=list, description="Recipe files or shipped recipes' names")
    recipe: str | None = Field(None, description="The base recipe of the sweep")
    sweep: dict[str, list[Any]] = Field(default_factory=dict, description="dotted.key: [values]; runs: the product")
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted.key: value, for every run")
    max_parallel: int | None = Field(None, ge=1, description="Runs at once (CPU machine: default 1)")


@dataclass
class BatchRun:
    name: str
    recipe: Recipe
    recipe_file: Path  # the resolved recipe, in the batch folder
    origin: str  # the recipe it came from, and its sweep values
    gpus: int = 0  # how many it asks for
    status: str = "planned"  # planned, then queued or skipped; running; done, failed or interrupted
    assigned: list[str] = field(default_factory=list)
    where: str = ""  # "GPU 0,1", "CPU", or a Ray node
    started: float | None = None
    finished: float | None = None
    error: str | None = None

    @property
    def run_dir(self) -> Path:
        return self.recipe.run_dir

    @property
    def log_path(self) -> Path:
        return self.run_dir / "logs" / CHILD_LOG

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "orchestrator", "run", str(self.recipe_file)]


@dataclass
class BatchResult:
    folder: Path
    runs: list[BatchRun]
    json_path: Path
    md_path: Path
    rows: list[dict[str, Any]]

    @property
    def failed(self) -> list[BatchRun]:
        return [r for r in self.runs if r.status not in ("done", "skipped")]


# -- the batch file ----------------------------------------------------------------------------------


def load_batch(path: str | Path, out: str | Path | None = None) -> tuple[BatchSpec, list[BatchRun], Path]:
    """Read and check the batch file; every run's recipe resolved and validated, nothing written yet.
    Returns the spec, the runs and the batch folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such batch file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: cannot read the batch file ({str(exc).splitlines()[0]})") from None
    try:
        spec = BatchSpec.model_validate(data if data is not None else {})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        hint = f"; allowed: {', '.join(BatchSpec.model_fields)}" if err["type"] == "extra_forbidden" else ""
        raise UsageError(f"{path}: {key}: {err['msg']}{hint}") from None
    if spec.sweep and not spec.recipe:
        raise UsageError(f"{path}: sweep: needs recipe: BASE, the recipe it varies")
    if not spec.recipes and not spec.recipe:
        raise UsageError(f"{path}: no runs; give recipes: [files or shipped names] and/or recipe: BASE with sweep:")
    for where, keys in (("overrides", spec.overrides), ("sweep", spec.sweep)):
        for key in keys:
            check_key(key, f"{path}: {where}")
    for key, values in spec.sweep.items():
        if not values:
            raise UsageError(f"{path}: sweep: {key} has no values; give a list of one or more")
    folder = Path(out) if out else Path("llama_factory_data") / "batches" / path.stem
    runs = expand(spec, path, folder.resolve())
    return spec, runs, folder.resolve()


def check_key(key: str, where: str) -> None:
    """A dotted recipe key must exist in the schema; below ``llamafactory``/``llamafactory_export`` (verbatim
    passthrough maps) anything goes."""
    model: type[BaseModel] = Recipe
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = model.model_fields
        at = ".".join(parts[:i]) or "the recipe"
        if part not in fields:
            close = difflib.get_close_matches(part, fields, n=1)
            hint = f"did you mean '{'.'.join([*parts[:i], close[0]])}'? " if close else ""
            raise UsageError(f"{where}: no key {key}: {at} has no '{part}'; {hint}keys there: {', '.join(fields)}")
        annotation = fields[part].annotation
        if i == len(parts) - 1:
            return
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif get_origin(annotation) is dict:
            return
        else:
            here = ".".join(parts[: i + 1])
            raise UsageError(f"{where}: no key {key}: {here} is a value, not a section; set {here} as a whole")


def expand(spec: BatchSpec, batch_path: Path, folder: Path) -> list[BatchRun]:
    """Every run of the batch: the listed recipes, then the sweep's product, each with the overrides."""
    planned: list[tuple[str, dict[str, Any], str]] = []
    for ref in spec.recipes:
        recipe, path = load_recipe(_find(ref, batch_path))
        data = _apply(recipe.model_dump(mode="json", exclude_unset=True), spec.overrides)
        planned.append((recipe.name, data, str(path)))
    if spec.recipe:
        base, path = load_recipe(_find(spec.recipe, batch_path))
        keys = list(spec.sweep)
        for values in itertools.product(*spec.sweep.values()) if keys else [()]:
            data = _apply(base.model_dump(mode="json", exclude_unset=True), spec.overrides)
            data = _apply(data, dict(zip(keys, values, strict=True)))
            suffix = "-".join(f"{k.rsplit('.', 1)[-1]}{_label(v)}" for k, v in zip(keys, values, strict=True))
            name = f"{base.name}-{suffix}" if suffix else base.name
            if suffix and (data.get("ollama") or {}).get("name"):  # each run its own model in Ollama
                data["ollama"]["name"] = f"{data['ollama']['name']}-{suffix}"
            origin = (
                f"{path} ({', '.join(f'{k}={v}' for k, v in zip(keys, values, strict=True))})" if keys else str(path)
            )
            planned.append((name, {**data, "name": name}, origin))
    runs, seen = [], {}
    for name, data, origin in planned:
        if name in seen:
            raise UsageError(
                f"{batch_path}: two runs are named {name} ({seen[name]} and {origin}); give them different names"
            )
        seen[name] = origin
        recipe = validate_recipe(data, f"{batch_path}: run {name}")
        runs.append(BatchRun(name, _absolute(recipe), folder / "recipes" / f"{name}.yaml", origin))
    return runs


def _find(ref: str, batch_path: Path) -> str:
    """A recipe path relative to the batch file's folder when it is there; else as `orchestrator run` takes it."""
    beside = batch_path.parent / ref
    return str(beside) if beside.is_file() else ref


def _apply(data: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Set each dotted key (checked against the schema: every part but the last is a section)."""
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return data


def _label(value: Any) -> str:
    """A sweep value as part of a run name (letters, digits, '_', '-', '.')."""
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "_"


def _absolute(recipe: Recipe) -> Recipe:
    """Every path of the recipe absolute, from where the batch runs (a Ray worker runs elsewhere)."""
    recipe.runs_dir = str(Path(recipe.runs_dir).resolve())
    recipe.data.dataset_dir = str(Path(recipe.data.dataset_dir).resolve())
    for source in recipe.data.sources:
        if getattr(source, "path", None):
            source.path = str(Path(source.path).resolve())
    name = recipe.model.name_or_path
    if name != TINY_MODEL and Path(name).exists():
        recipe.model.name_or_path = str(Path(name).resolve())
    return recipe


# -- GPUs and the queue ------------------------------------------------------------------------------


def local_gpus() -> list[str]:
    """This machine's GPU ids, as CUDA_VISIBLE_DEVICES/HIP_VISIBLE_DEVICES name them (those set narrow them)."""
    from orchestrator.hardware import detect

    count = len(detect().gpus)
    for var in GPU_VARS:
        visible = [v.strip() for v in os.environ.get(var, "").split(",") if v.strip()]
        if var in os.environ:
            return visible[:count]
    return [str(i) for i in range(count)]


def gpus_needed(recipe: Recipe, available: int) -> int:
    """GPUs one run asks for: none on the CPU (hardware: cpu, or auto where no GPU is), else train.gpus."""
    if recipe.hardware == "cpu" or (recipe.hardware == "auto" and available == 0):
        return 0
    return recipe.train.gpus


def size_runs(runs: list[BatchRun], available: int, batch_path: Path, where: str = "this machine") -> None:
    for run in runs:
        run.gpus = gpus_needed(run.recipe, available)
        if run.gpus > available:
            raise UsageError(
                f"{batch_path}: run {run.name} asks for {run.gpus} GPUs (train.gpus, hardware {run.recipe.hardware}) "
                f"and {where} has {available}; lower train.gpus (overrides: {{train.gpus: {max(available, 1)}}})"
            )


def prepare(runs: list[BatchRun], folder: Path) -> None:
    """Write each run's resolved recipe; mark the runs already finished with the same recipe; build the
    tiny model once (two runs building it at once would race)."""
    for run in runs:
        write_text(run.recipe_file, dump_recipe(run.recipe))
        manifest = read_json(run.run_dir / "manifest.json")
        record = (manifest.get("run") or {}) if isinstance(manifest, dict) else {}
        same = isinstance(manifest, dict) and manifest.get("resolved_recipe") == run.recipe.model_dump(mode="json")
        run.status = "skipped" if same and record.get("status") == "done" else "queued"
    tiny = {
        Path(r.recipe.runs_dir).parent / "models" / TINY_MODEL
        for r in runs
        if r.status == "queued"
        and r.recipe.model.name_or_path == TINY_MODEL
        and {"train", "merge", "eval"} & {*r.recipe.stages}
    }
    if tiny:
        from orchestrator.tiny import build_tiny_qwen3

        for path in sorted(tiny):
            build_tiny_qwen3(path)


def child_env(gpu_ids: list[str], base: dict[str, str] | None = None) -> dict[str, str]:
    """The run's environment: its GPUs visible, and only those (none for a CPU run on a GPU machine)."""
    env = dict(os.environ if base is None else base)
    env.update(dict.fromkeys(GPU_VARS, ",".join(gpu_ids)))
    return env


def run_local(runs: list[BatchRun], gpu_ids: list[str], limit: int, on_update: Any) -> None:
    """Run the queued runs as child processes, as many at once as free GPUs and ``limit`` allow (first
    fit in queue order). ``on_update(runs)`` hears the state about once a second. Ctrl-C stops them all."""
    from orchestrator.procs import run_logged

    stop = threading.Event()

    def child(run: BatchRun) -> int:
        def poll() -> None:
            if stop.is_set():
                raise KeyboardInterrupt

        env = child_env(run.assigned) if gpu_ids or run.gpus else None
        return run_logged(run.argv, run.log_path, env=env, poll=poll, poll_seconds=0.5)

    free, pending = list(gpu_ids), [r for r in runs if r.status == "queued"]
    active: dict[Any, BatchRun] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(pending)), thread_name_prefix="batch") as pool:
        try:
            while pending or active:
                for run in list(pending):
                    if len(active) < limit and run.gpus <= len(free):
                        run.assigned, free = free[: run.gpus], free[run.gpus :]
                        run.where = f"GPU {','.join(run.assigned)}" if run.assigned else "CPU"
                        run.status, run.started = "running", time.time()
                        pending.remove(run)
                        active[pool.submit(child, run)] = run
                done, _ = wait(active, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    run = active.pop(future)
                    free += run.assigned
                    finish(run, future.exception() or future.result())
                on_update(runs)
        except BaseException:
            stop.set()
            for run in [*active.values(), *pending]:
                run.status, run.error = "interrupted", "the batch was interrupted"
            raise


def finish(run: BatchRun, outcome: int | BaseException) -> None:
    """Record how a run ended: its exit code, or what went wrong launching it."""
    run.finished = time.time()
    if outcome == 0:
        run.status = "done"
        return
    run.status = "failed"
    if isinstance(outcome, BaseException):
        run.error = str(outcome).splitlines()[0] if str(outcome) else type(outcome).__name__
        return
    run.error = _error_line(run.log_path) or f"exit code {outcome}; see {run.log_path}"


def _error_line(log_path: Path) -> str | None:
    """The `error: ...` line `orchestrator run` ended with, from the end of its log."""
    try:
        with log_path.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, 2) - 16384))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    return next((ln.removeprefix("error: ") for ln in reversed(lines) if ln.startswith("error: ")), None)


# -- the whole batch ---------------------------------------------------------------------------------


def run_batch(
    path: str | Path,
    *,
    out: str | Path | None = None,
    gpus: list[str] | None = None,
    ray: str | bool | None = None,
    reporter: Any = None,
) -> BatchResult:
    """Run a batch file. ``gpus``: the GPU ids to share out (default: this machine's); ``ray``: True for a
    local Ray cluster, an address for a running one, None to run here. Bad input raises UsageError before
    any run starts; a failed run is in the result, not raised."""
    spec, runs, folder = load_batch(path, out)
    show = getattr(reporter, "batch", None)
    on_update = (lambda runs: show([live_row(run) for run in runs])) if show else (lambda runs: None)
    began = time.time()
    try:
        if ray:
            from orchestrator.batch_ray import run_on_ray

            address = None if ray is True else str(ray)
            run_on_ray(runs, address, spec.max_parallel, Path(path), folder, on_update)
        else:
            gpu_ids = local_gpus() if gpus is None else list(gpus)
            size_runs(runs, len(gpu_ids), Path(path))
            prepare(runs, folder)
            run_local(runs, gpu_ids, spec.max_parallel or (len(runs) if gpu_ids else 1), on_update)
    finally:
        if reporter is not None and hasattr(reporter, "close"):
            reporter.close()
        if any(run.status != "planned" for run in runs):  # something was queued: say how it went
            result = write_summary(Path(path), folder, runs, began)
    return result


def live_row(run: BatchRun) -> dict[str, Any]:
    """A run as the live view shows it: where, its status, and while it runs its stage, step and loss."""
    row: dict[str, Any] = {"run": run.name, "where": run.where, "status": run.status, "stage": ""}
    row.update(step=None, total=None, loss=None)
    if run.status != "running":
        return row
    manifest = read_json(run.run_dir / "manifest.json")
    stages = manifest.get("stages") if isinstance(manifest, dict) else None
    if isinstance(stages, dict):
        row["stage"] = next((n for n, e in stages.items() if isinstance(e, dict) and e.get("status") == "running"), "")
    if row["stage"] == "train":
        from orchestrator.llamafactory import read_trainer_log

        logged = [r for r in read_trainer_log(run.run_dir / "adapter" / "trainer_log.jsonl") if "loss" in r]
        if logged:
            last = logged[-1]
            row.update(step=last.get("current_steps"), total=last.get("total_steps"), loss=last.get("loss"))
    return row


def summary_row(run: BatchRun) -> dict[str, Any]:
    """What the summary says of one run, read from its folder the way the run report reads it."""
    from orchestrator.run_report import _results, _Run

    manifest = read_json(run.run_dir / "manifest.json")
    folder = _Run(run.run_dir, manifest if isinstance(manifest, dict) else {})
    train = folder.stage("train")
    results, _ = _results(folder)
    eval_loss = ((results or {}).get("tuned") or {}).get("eval_loss")
    if eval_loss is None:
        from orchestrator.llamafactory import read_trainer_log

        logged = [
            r["eval_loss"] for r in read_trainer_log(run.run_dir / "adapter" / "trainer_log.jsonl") if "eval_loss" in r
        ]
        eval_loss = logged[-1] if logged and train.get("status") == "done" else None
    gguf = folder.stage("gguf")
    register = folder.stage("register")
    took = run.finished - run.started if run.started and run.finished else None
    return {
        "run": run.name,
        "status": run.status,
        "where": run.where or None,
        "train_loss": (train.get("details") or {}).get("last_loss") if train.get("status") == "done" else None,
        "eval_loss": eval_loss,
        "duration_s": round(took, 1) if took is not None else None,
        "gguf": (gguf.get("outputs") or {}).get("gguf") if gguf.get("status") == "done" else None,
        "ollama": ((register.get("details") or {}).get("name") or folder.ollama_name)
        if register.get("status") == "done"
        else None,
        "run_dir": str(run.run_dir),
        "recipe": str(run.recipe_file),
        "from": run.origin,
        "started": run.started,
        "finished": run.finished,
        "log": str(run.log_path) if run.log_path.is_file() else None,
        "error": run.error,
    }


HEAD = ("run", "status", "train loss", "eval loss", "duration", "GGUF", "Ollama name")


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    from orchestrator.run_report import _duration, _num

    def cell(value: Any) -> str:
        return "—" if value is None else _num(value)

    return [
        [
            r["run"],
            r["status"] + (f": {r['error']}" if r.get("error") and r["status"] == "failed" else ""),
            cell(r["train_loss"]),
            cell(r["eval_loss"]),
            _duration(r["duration_s"]),
            r["gguf"] or "—",
            r["ollama"] or "—",
        ]
        for r in rows
    ]


def write_summary(batch_path: Path, folder: Path, runs: list[BatchRun], began: float) -> BatchResult:
    """batch.json and batch.md in the batch folder (each written atomically)."""
    from orchestrator.report_doc import Section as DocSection
    from orchestrator.report_doc import Table, render_markdown

    rows = [summary_row(run) for run in runs]
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed", "interrupted")}
    data = {
        "batch": str(batch_path.resolve()),
        "started": began,
        "finished": time.time(),
        "counts": counts,
        "runs": rows,
    }
    json_path = write_json(folder / "batch.json", data)
    said = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    doc = [DocSection("Runs", [f"{batch_path}: {said}", Table(list(HEAD), table_rows(rows))])]
    md_path = write_text(folder / "batch.md", render_markdown(f"Batch: {batch_path.stem}", doc))
    return BatchResult(folder, runs, json_path, md_path, rows)
