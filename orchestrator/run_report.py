"""The run report: ``runs/<name>/report.html`` (one self-contained file: inline styles, charts as data:
URIs, nothing fetched) and ``report.md`` beside it, the same sections as text.

Everything comes from the run folder (manifest.json, adapter/trainer_log.jsonl, eval/*.json, logs/,
the artifacts) and the data stage's report, so ``orchestrator report RUN_DIR`` rebuilds it at any time.
A section whose input is missing says why. Both files are rendered from one list of ``Section``s, and
every text is escaped in the HTML (chats may hold markup). Message contents go only into these two
files, never to the terminal or a log.
"""

from __future__ import annotations

import io
import json
import math
import platform
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.fsutil import read_json, write_json, write_text
from orchestrator.report_doc import HTML_NAME, Block, Code, Image, Section, Table, display, render_html, render_markdown
from orchestrator.text import human_size

MD_NAME = "report.md"
RUN, FAILURE, RECIPE, DATA, HARDWARE = "Run", "Failure", "Recipe", "Data", "Hardware and versions"
CURVES, EVAL, ANSWERS, ARTIFACTS, TRY = (
    "Training curves",
    "Before and after",
    "Answers side by side",
    "Artifacts",
    "Try it",
)
SECTIONS = (RUN, RECIPE, DATA, HARDWARE, CURVES, EVAL, ANSWERS, ARTIFACTS, TRY)  # FAILURE after RUN when failed
STAGE_ORDER = ("data", "train", "merge", "eval", "gguf", "register")
STAGE_LOGS = {"train": ("train.log",), "merge": ("export.log",), "register": ("ollama-create.log",)}
VERSIONS = ("llamafactory", "torch", "transformers", "peft", "accelerate", "datasets", "gguf")
DIGEST_CACHE = ".report-digests.json"  # sha256 by (size, mtime), so a rebuilt report hashes nothing again
TAIL_LINES, TAIL_BYTES, CELL_CHARS, TABLE_STEPS = 40, 64 << 10, 4000, 25
_LOG_IN_ERROR = re.compile(r"(/\S+\.log)\b")


@dataclass
class ReportPaths:
    html: Path
    md: Path


@dataclass
class _Run:
    dir: Path
    manifest: dict[str, Any]
    on_progress: Callable[[str, int, int], None] | None = None

    @property
    def recipe(self) -> dict[str, Any]:
        return self.manifest.get("resolved_recipe") or {}

    @property
    def record(self) -> dict[str, Any]:
        """What the pipeline noted about the latest run: started, finished, status, error, its stages."""
        return self.manifest.get("run") or {}

    @property
    def this_run(self) -> list[str]:
        return list(self.record.get("stages") or self.recipe.get("stages") or [])

    @property
    def name(self) -> str:
        return self.recipe.get("name") or self.dir.name

    @property
    def ollama_name(self) -> str:
        return (self.recipe.get("ollama") or {}).get("name") or self.name

    def stage(self, name: str) -> dict[str, Any]:
        return (self.manifest.get("stages") or {}).get(name) or {}


def write_report(
    run_dir: str | Path,
    manifest: dict[str, Any] | None = None,
    *,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> ReportPaths:
    """Write ``report.html`` and ``report.md`` in ``run_dir`` (each atomically) and return their paths.
    ``manifest`` (the pipeline's in-memory one) defaults to ``run_dir/manifest.json``; ``on_progress``
    hears (label, bytes done, bytes in all) while artifacts are hashed (a merged model is gigabytes)."""
    run = _Run(Path(run_dir).resolve(), manifest if manifest is not None else _read_manifest(Path(run_dir)))
    run.on_progress = on_progress
    sections = build_sections(run)
    title = f"Run report: {run.name}"
    paths = ReportPaths(run.dir / HTML_NAME, run.dir / MD_NAME)
    write_text(paths.html, render_html(title, sections))
    write_text(paths.md, render_markdown(title, sections))
    return paths


def show(run_dir: str | Path, titles: tuple[str, ...] = (CURVES, EVAL)) -> None:
    """Show sections of a run's report in a notebook (Jupyter, Colab): by default the training curves
    and the before/after table, as charts and Markdown tables."""
    run = _Run(Path(run_dir).resolve(), _read_manifest(Path(run_dir)))
    display([section for section in build_sections(run) if section.title in titles])


def _read_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"{run_dir} has no manifest.json; give a run folder (llama_factory_data/runs/<name>)"
        ) from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path} ({type(exc).__name__}); rerun the recipe to write it again") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a run manifest; rerun the recipe to write it again")
    return data


def build_sections(run: _Run) -> list[Section]:
    """The report's sections in order; a "Failure" section follows "Run" when the run failed."""
    sections = [_run_section(run)]
    failure = _failure_section(run)
    if failure:
        sections.append(failure)
    results, why = _results(run)
    sections += [_recipe_section(run), _data_section(run), _hardware_section(run), _curves_section(run)]
    sections += [_eval_section(results, why), _answers_section(run, results, why)]
    return sections + [_artifacts_section(run), _try_section(run)]


# -- the run and its failure ---------------------------------------------------------------------------


def _failed_stage(run: _Run) -> str | None:
    return next((s for s in run.this_run if run.stage(s).get("status") in ("failed", "running")), None)


def _outcome(run: _Run) -> str:
    status, failed = run.record.get("status"), _failed_stage(run)
    if status == "interrupted":
        return f"interrupted during the {failed} stage" if failed else "interrupted"
    if failed and run.stage(failed).get("status") == "running":
        return f"the {failed} stage did not finish (it is still running, or the run was killed)"
    if failed:
        return f"failed at the {failed} stage"
    if status == "failed":
        return "failed outside any stage (see Failure)"
    if status == "running":
        return "still running"
    done = all(run.stage(s).get("status") == "done" for s in run.this_run)
    return "finished: every stage done" if done and run.this_run else "incomplete"


def _stage_note(run: _Run, name: str) -> tuple[str, str]:
    """(status, note) of one stage as this run left it."""
    entry = run.stage(name)
    status = entry.get("status", "not run")
    if name not in run.this_run:
        return status, "not part of the latest run" + (" (from an earlier one)" if entry else "")
    if status == "done" and _before(entry.get("started"), run.record.get("started")):
        return "skipped", "already done with the same inputs"
    if status in ("failed", "running"):
        return status, _first_line(entry.get("error") or "did not finish")
    return status, ""


def _run_section(run: _Run) -> Section:
    rec = run.record
    facts = [
        ["outcome", _outcome(run)],
        ["run folder", str(run.dir)],
        ["recipe file", str(run.manifest.get("recipe") or "—")],
        ["started", rec.get("started") or "—"],
        ["finished", rec.get("finished") or "—"],
        ["orchestrator", str(run.manifest.get("orchestrator_version") or "—")],
        ["report written", _now()],
    ]
    names = [s for s in STAGE_ORDER if s in run.this_run or run.stage(s)]
    names += [s for s in run.this_run + list(run.manifest.get("stages") or {}) if s not in names]
    rows = []
    for name in dict.fromkeys(names):
        status, note = _stage_note(run, name)
        took = run.stage(name).get("duration_s")
        rows.append([name, status, _duration(took) if status != "skipped" else "—", note])
    blocks: list[Block] = [Table(["", ""], facts)]
    blocks.append(Table(["stage", "status", "took", "note"], rows) if rows else "no stage has run in this folder yet")
    return Section(RUN, blocks)


def _failure_section(run: _Run) -> Section | None:
    failed = _failed_stage(run)
    error = (run.stage(failed).get("error") if failed else None) or run.record.get("error")
    if not failed and run.record.get("status") not in ("failed", "interrupted"):
        return None
    where = f"the {failed} stage" if failed else "the run itself, outside any stage"
    blocks: list[Block] = [f"What failed: {where}.", Code(error or "(no error was recorded)", "error")]
    logs = _stage_logs(run, failed, error) if failed else []
    for path in logs:
        blocks.append(Code(_tail(path), f"last lines of {_rel(path, run.dir)}"))
    if failed and not logs:
        blocks.append(f"no log: the {failed} stage wrote none in {run.dir / 'logs'}; its error above is all there is")
    return Section(FAILURE, blocks)


def _stage_logs(run: _Run, stage: str, error: str | None) -> list[Path]:
    """Logs of the failed stage written since it started: those its error names, then the usual ones."""
    logs = run.dir / "logs"
    found = [Path(p) for p in _LOG_IN_ERROR.findall(error or "")]
    found += [logs / f"{stage}.error.log", *(logs / n for n in STAGE_LOGS.get(stage, ())), logs / f"{stage}.log"]
    found += sorted(logs.glob(f"{stage}-*.log"))
    started = _timestamp(run.stage(stage).get("started"))
    kept: list[Path] = []
    for path in found:
        try:
            fresh = started is None or path.stat().st_mtime >= started - 1
        except OSError:
            continue
        if fresh and path.is_file() and path.resolve() not in kept:
            kept.append(path.resolve())
    return kept[:3]


def _tail(path: Path) -> str:
    """The last lines of a log, read from its end only; progress bars are dropped."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - TAIL_BYTES))
            text = handle.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(cannot read it: {exc.strerror or exc})"
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip() and "%|" not in ln]
    if size > TAIL_BYTES:
        lines = lines[1:]  # the first may be cut
    return "\n".join(lines[-TAIL_LINES:]) or "(the log is empty)"


# -- recipe, data, hardware ----------------------------------------------------------------------------


def _recipe_section(run: _Run) -> Section:
    r = run.recipe
    if not r:
        return Section(RECIPE, ["no recipe recorded: the manifest has no resolved_recipe (rerun the recipe)"])
    model, t, d = r.get("model") or {}, r.get("train") or {}, r.get("data") or {}
    hw = run.manifest.get("hardware") or {}
    length = f"max_steps {t['max_steps']}" if t.get("max_steps") else f"{t.get('num_train_epochs')} epochs"
    rank = t.get("lora_rank")
    rows = [
        [
            "model",
            f"{model.get('name_or_path')} (template {model.get('template') or 'from the name'}, "
            f"thinking {'on' if model.get('enable_thinking', True) else 'off'})",
        ],
        ["method", f"{r.get('method')} ({t.get('stage', 'sft')})"],
        ["hardware", f"{r.get('hardware')} -> {_describe_hardware(hw)}"],
        ["stages", ", ".join(run.this_run)],
        ["length", length],
        ["learning rate", f"{t.get('learning_rate')} ({t.get('lr_scheduler_type')}, warmup {t.get('warmup_ratio')})"],
        ["batch", f"{t.get('per_device_train_batch_size')} x {t.get('gradient_accumulation_steps')} accumulated"],
        [
            "LoRA",
            f"rank {rank}, alpha {t.get('lora_alpha') or (2 * rank if rank else '—')}, "
            f"dropout {t.get('lora_dropout')}, target {t.get('lora_target')}",
        ],
        ["cutoff_len", str(t.get("cutoff_len"))],
        ["held out", f"data.eval_split {d.get('eval_split')}, train.val_size {t.get('val_size')}"],
        ["eval", ", ".join(f"{k} {v}" for k, v in (r.get("eval") or {}).items()) or "—"],
        ["GGUF", f"{(r.get('gguf') or {}).get('type')}, served {(r.get('ollama') or {}).get('serve')}"],
    ]
    for key in ("llamafactory", "llamafactory_export"):
        if r.get(key):
            rows.append([key, json.dumps(r[key], ensure_ascii=False, sort_keys=True)])
    return Section(RECIPE, [Table(["setting", "value"], rows)])


def _data_section(run: _Run) -> Section:
    entry = run.stage("data")
    path = (entry.get("outputs") or {}).get("report")
    report = read_json(Path(path)) if path else None
    if not isinstance(report, dict):
        report = entry.get("details") if entry.get("status") == "done" else None  # the same dict, as recorded
    if not isinstance(report, dict) or "read" not in report:
        why = "the data stage failed" if entry.get("status") == "failed" else "the data stage has not run here"
        return Section(DATA, [f"no data report: {why}"])
    rows = [["read", _num(report.get("read")), ""], ["written", _num(report.get("written")), "for training"]]
    rows.append(["held out", _num(report.get("eval") or 0), "for evaluation"])
    skipped = report.get("skipped") or {}
    rows.append(["skipped", _num(sum(skipped.values())), "in all"])
    examples = report.get("examples") or {}
    rows += [[f"skipped: {k}", _num(v), "e.g. " + ", ".join(examples.get(k) or [])] for k, v in skipped.items()]
    rows += [[f"repaired: {k}", _num(v), ""] for k, v in (report.get("repaired") or {}).items()]
    rows += [[f"redacted: <{k}>", _num(v), ""] for k, v in sorted((report.get("redacted") or {}).items())]
    if not report.get("redact", True):
        rows.append(["redaction", "off", "data.redact: false"])
    dups = report.get("duplicates") or {}
    rows.append(["duplicates", f"{dups.get('exact', 0)} exact, {dups.get('near', 0)} near", _near(report)])
    rows += _token_rows(report)
    if report.get("pairs") is not None:
        rows.append(["preference pairs", _num(report["pairs"]), ""])
    where = f"from {path}" if path else "from the manifest"
    return Section(DATA, [f"dataset {report.get('name')} ({where})", Table(["", "count", "note"], rows)])


def _near(report: dict[str, Any]) -> str:
    threshold = report.get("near_threshold")
    return "near duplicates not looked for" if threshold is None else f"MinHash similarity >= {threshold}"


def _token_rows(report: dict[str, Any]) -> list[list[str]]:
    t = report.get("tokens")
    if report.get("tokens_unavailable"):
        return [["tokens", "not measured", str(report["tokens_unavailable"])]]
    if not t or not t.get("conversations"):
        return []
    estimated = t.get("estimated") or ()
    figures = ", ".join(f"{k} {'~' if k in estimated else ''}{_num(t.get(k))}" for k in ("p50", "p95", "max"))
    sampled = "; ~ estimated from a sample" if estimated else ""
    rows = [["tokens", figures, f"per conversation ({report.get('template')}){sampled}"]]
    if t.get("cutoff_len") is not None:
        note = f"longer than cutoff_len {_num(t['cutoff_len'])}"
        if t.get("over_cutoff"):
            note += f"; cutoff_len {_num(t.get('cutoff_len_for_95'))} keeps 95% whole"
        rows.append(["over cutoff", f"{t.get('over_cutoff')} of {t['conversations']}", note])
    return rows


def _describe_hardware(hw: dict[str, Any]) -> str:
    if not hw:
        return "not recorded"
    from orchestrator.hardware import Hardware

    known = {k: hw[k] for k in ("backend", "gpus", "gpu_memory_gib", "bf16", "torch_version") if k in hw}
    try:
        return Hardware(**known).describe()
    except (TypeError, ValueError):
        return str(hw.get("backend"))


def _hardware_section(run: _Run) -> Section:
    from importlib.metadata import PackageNotFoundError, version

    hw = run.manifest.get("hardware") or {}
    rows = [["hardware", _describe_hardware(hw)], ["torch the run saw", hw.get("torch_version") or "—"]]
    for name in VERSIONS:
        try:
            rows.append([name, version(name)])
        except PackageNotFoundError:
            rows.append([name, "not installed"])
    rows.append(["python", f"{platform.python_version()} on {platform.platform(terse=True)}"])
    note = "Hardware as the manifest recorded it; package versions as installed when the report was written."
    return Section(HARDWARE, [note, Table(["", "version"], rows)])


# -- training curves -----------------------------------------------------------------------------------


def _curves_section(run: _Run) -> Section:
    from orchestrator.llamafactory import read_trainer_log

    path = run.dir / "adapter" / "trainer_log.jsonl"
    rows = [r for r in read_trainer_log(path) if isinstance(r.get("current_steps"), int)]
    if not rows:
        why = "is missing (the train stage has not run)" if not path.is_file() else "has no logged steps"
        return Section(CURVES, [f"no training curves: {_rel(path, run.dir)} {why}"])
    series = {
        key: [(r["current_steps"], r[key]) for r in rows if _finite(r.get(key))] for key in ("loss", "eval_loss", "lr")
    }
    blocks: list[Block] = []
    try:
        if series["loss"] or series["eval_loss"]:
            losses = {"train loss": series["loss"], "eval loss": series["eval_loss"]}
            blocks.append(Image(_alt("loss", series["loss"], series["eval_loss"]), _plot(losses, "loss")))
        if series["lr"]:
            blocks.append(
                Image(_alt("learning rate", series["lr"]), _plot({"learning rate": series["lr"]}, "learning rate"))
            )
    except ImportError:
        blocks.append("no charts: matplotlib is not installed (pip install matplotlib); the steps are below")
    if not series["eval_loss"]:
        blocks.append("no eval loss: training had no held-out set (data.eval_split or train.val_size)")
    return Section(CURVES, [*blocks, _steps_table(rows)])


def _alt(what: str, points: list, eval_points: list | None = None) -> str:
    if not points:
        return f"{what}: nothing logged"
    text = (
        f"{what} by step: {_num(points[0][1])} at step {points[0][0]} to {_num(points[-1][1])} at step {points[-1][0]}"
    )
    return text + (f"; eval loss {_num(eval_points[-1][1])} at step {eval_points[-1][0]}" if eval_points else "")


def _plot(series: dict[str, list[tuple[int, float]]], ylabel: str) -> bytes:
    """A PNG line chart drawn with matplotlib's object API and Agg canvas (pyplot's global backend untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, points in series.items():
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=label, marker="o" if len(xs) <= 30 else None, markersize=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if any(series.values()):
        ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _steps_table(rows: list[dict[str, Any]]) -> Table:
    by_step: dict[int, dict[str, Any]] = {}
    for r in rows:
        by_step.setdefault(r["current_steps"], {}).update({k: v for k, v in r.items() if v is not None})
    steps = sorted(by_step)
    if len(steps) > TABLE_STEPS:  # evenly spaced, first and last kept, and every step with an eval loss
        picked = {steps[round(i * (len(steps) - 1) / (TABLE_STEPS - 1))] for i in range(TABLE_STEPS)}
        steps = sorted(picked | {s for s in steps if "eval_loss" in by_step[s]})
    head = ["step", "epoch", "loss", "eval loss", "learning rate"]
    keys = ("epoch", "loss", "eval_loss", "lr")
    return Table(
        head, [[f"{s}/{by_step[s].get('total_steps', '?')}", *(_num(by_step[s].get(k)) for k in keys)] for s in steps]
    )


# -- evaluation and answers ----------------------------------------------------------------------------


def _results(run: _Run) -> tuple[dict[str, Any] | None, str]:
    """eval/results.json, or None and why there is no evaluation."""
    path = run.dir / "eval" / "results.json"
    status = run.stage("eval").get("status")
    if status in ("failed", "running") and "eval" in run.this_run:  # what is there is an earlier run's
        return None, f"no evaluation: the eval stage {'failed' if status == 'failed' else 'did not finish'}"
    data = read_json(path)
    if isinstance(data, dict) and data.get("skipped"):
        return None, f"no evaluation: {_first_line(str(data['skipped']))}"
    if isinstance(data, dict):
        return data, ""
    if path.is_file():
        return None, f"no evaluation: {_rel(path, run.dir)} cannot be read"
    if "eval" not in run.this_run and not status:
        return None, "no evaluation: the recipe has no eval stage"
    return None, "no evaluation: the eval stage has not run"


def _eval_section(results: dict[str, Any] | None, why: str) -> Section:
    if results is None:
        return Section(EVAL, [why])
    base, tuned = results.get("base") or {}, results.get("tuned") or {}
    rows = [_change_row("held-out loss", base.get("eval_loss"), tuned.get("eval_loss"))]
    rows.append(_change_row("perplexity", base.get("perplexity"), tuned.get("perplexity")))
    b_metrics, t_metrics = base.get("metrics") or {}, tuned.get("metrics") or {}
    for key in sorted(set(b_metrics) | set(t_metrics)):
        rows.append(_change_row(key, b_metrics.get(key), t_metrics.get(key)))
    intro = (
        f"{results.get('conversations', '?')} held-out conversations of dataset {results.get('dataset')}; "
        f"base {base.get('model')}, tuned {tuned.get('model')}. Lower loss and perplexity are better; "
        "higher ROUGE and BLEU are."
    )
    blocks: list[Block] = [intro, Table(["measure", "base", "tuned", "change"], rows)]
    if not b_metrics and not t_metrics:
        blocks.append("ROUGE / BLEU: not computed")
    return Section(EVAL, blocks)


def _change_row(label: str, base: Any, tuned: Any) -> list[str]:
    change = "—"
    if _finite(base) and _finite(tuned):
        change = f"{tuned - base:+.4g}" + (f" ({(tuned - base) / abs(base):+.1%})" if base else "")
    return [label, _num(base), _num(tuned), change]


def _answers_section(run: _Run, results: dict[str, Any] | None, why: str) -> Section:
    if results is None:
        return Section(ANSWERS, [why.replace("no evaluation", "no answers", 1)])
    answers = [a for a in results.get("answers") or [] if isinstance(a, dict)]
    if not answers:
        return Section(ANSWERS, ["no answers: eval/results.json holds none (recipe eval.samples)"])
    served_file = read_json(run.dir / "eval" / "served.json")
    served = served_file if isinstance(served_file, dict) else {}
    served_answers = served.get("answers") if isinstance(served.get("answers"), list) else []
    if not served:
        note = "served: no eval/served.json (the model was not registered in Ollama, or none answered)"
    elif served.get("error"):
        note = f"served: {_first_line(str(served['error']))}"
    else:
        note = f"served: {served.get('model')} at {served.get('host')}"
    rows = []
    for i, answer in enumerate(answers):
        got = served_answers[i] if i < len(served_answers) else None
        shown = got if isinstance(got, str) else ("(no answer)" if served else "—")
        prompt = "\n\n".join(f"{m.get('role')}: {m.get('content')}" for m in answer.get("messages") or [])
        cells = [prompt, answer.get("base"), answer.get("tuned"), shown, answer.get("reference")]
        rows.append([str(i + 1), *(_cell(c) for c in cells)])
    head = ["#", "prompt", "base", "tuned", "served", "reference"]
    return Section(ANSWERS, [note, Table(head, rows, wide=True)])


# -- artifacts and how to try it -----------------------------------------------------------------------


def _artifacts(run: _Run) -> list[tuple[str, Path]]:
    d = run.dir
    found = [("adapter", d / "adapter" / n) for n in ("adapter_model.safetensors", "adapter_config.json")]
    found += [("merged shard", p) for p in sorted((d / "merged").glob("*.safetensors"))]
    found += [("GGUF", p) for p in sorted((d / "gguf").glob("*.gguf"))]
    found.append(("Modelfile", d / "Modelfile"))
    return [(kind, p) for kind, p in found if p.is_file()]


def _artifacts_section(run: _Run) -> Section:
    files = _artifacts(run)
    if not files:
        return Section(ARTIFACTS, ["no artifacts yet: no adapter, merged model, GGUF or Modelfile in the run folder"])
    digests = _digests(run, [p for _, p in files])
    rows = [[kind, _rel(p, run.dir), human_size(p.stat().st_size), digests[p]] for kind, p in files]
    kinds = {kind for kind, _ in files}
    missing = [k for k in ("adapter", "merged shard", "GGUF", "Modelfile") if k not in kinds]
    blocks: list[Block] = [Table(["artifact", "file", "size", "sha256"], rows)]
    if missing:
        blocks.append(f"not in the run folder: {', '.join(missing)}")
    return Section(ARTIFACTS, blocks)


def _digests(run: _Run, paths: list[Path]) -> dict[Path, str]:
    """sha256 of each file: as the register stage recorded it (file unchanged since), else from the
    digest cache (same size and mtime), else streamed from disk, then cached."""
    cache_path = run.dir / DIGEST_CACHE
    cache = read_json(cache_path)
    cache = cache if isinstance(cache, dict) else {}
    registered = _registered_digests(run)
    out, changed = {}, False
    for path in paths:
        stat = path.stat()
        key, stamp = str(path), [stat.st_size, stat.st_mtime_ns]
        # Manifest times are whole seconds: a file older than the second the register stage began is the one it hashed.
        digest = registered.get((key, stat.st_size)) if stat.st_mtime < registered.get("since", 0) + 1 else None
        cached = cache.get(key)
        if digest is None and isinstance(cached, dict) and cached.get("stat") == stamp:
            digest = cached.get("sha256")
        if digest is None:
            digest = _hash(path, run.on_progress)
        if not isinstance(cached, dict) or cached.get("sha256") != digest or cached.get("stat") != stamp:
            cache[key], changed = {"stat": stamp, "sha256": digest}, True
        out[path] = digest
    if changed:
        write_json(cache_path, cache)
    return out


def _hash(path: Path, on_progress: Callable[[str, int, int], None] | None) -> str:
    """The file's sha256 (hex), read in chunks."""
    from orchestrator.ollama.blobs import file_digest

    label = f"hashing {path.name}"
    progress = (lambda done, total: on_progress(label, done, total)) if on_progress else None
    return file_digest(path, progress).removeprefix("sha256:")


def _registered_digests(run: _Run) -> dict[Any, Any]:
    """(path, size) -> hex digest of the blobs the register stage uploaded, and "since": when it began."""
    entry = run.stage("register")
    started = _timestamp(entry.get("started"))
    if entry.get("status") != "done" or started is None:
        return {}
    found: dict[Any, Any] = {"since": started}
    for blob in (entry.get("details") or {}).get("blobs") or []:
        digest = str(blob.get("digest") or "")
        if re.fullmatch(r"sha256[:-][0-9a-fA-F]{64}", digest):
            found[(str(Path(blob.get("path", "")).resolve()), blob.get("size"))] = digest[7:].lower()
    return found


def _try_section(run: _Run) -> Section:
    entry = run.stage("register")
    name = (entry.get("details") or {}).get("name") or run.ollama_name
    if entry.get("status") == "done":
        host = _safe_host((entry.get("details") or {}).get("host"))
        blocks: list[Block] = [f"registered in Ollama at {host}:" if host else "registered in Ollama:"]
        return Section(TRY, [*blocks, Code(f"ollama run {shlex.quote(name)}")])
    modelfile = run.dir / "Modelfile"
    ggufs = sorted((run.dir / "gguf").glob("*.gguf"))
    if modelfile.is_file():
        how = f"ollama create {shlex.quote(name)} -f {shlex.quote(str(modelfile))}"
    elif ggufs:
        recipe = run.manifest.get("recipe")
        how = f"orchestrator ollama register {shlex.quote(str(ggufs[-1]))}" + (
            f" --recipe {shlex.quote(str(recipe))}" if recipe else ""
        )
    else:
        return Section(
            TRY, ["no GGUF yet: run the gguf stage and register it, then:", Code(f"ollama run {shlex.quote(name)}")]
        )
    lines = f"{how}\nollama run {shlex.quote(name)}"
    return Section(TRY, ["not registered in Ollama yet; with an Ollama running:", Code(lines)])


def _safe_host(host: Any) -> str:
    """A host URL without any user:password part."""
    return re.sub(r"//[^/@]*@", "//", str(host)) if host else ""


# -- small helpers -------------------------------------------------------------------------------------


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4f}" if value == 0 or abs(value) >= 0.01 else f"{value:.3g}"


def _cell(value: Any) -> str:
    text = "—" if value is None else str(value)
    if not text.strip():
        return f"(only whitespace: {len(text)} characters)" if text else "(empty)"
    if len(text) > CELL_CHARS:
        text = f"{text[:CELL_CHARS]}… ({len(text) - CELL_CHARS:,} more characters)"
    return text


def _duration(seconds: Any) -> str:
    if not _finite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _timestamp(text: Any) -> float | None:
    """A manifest time (``%Y-%m-%dT%H:%M:%S%z``) as seconds since the epoch."""
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


def _before(stage_started: Any, run_started: Any) -> bool:
    a, b = _timestamp(stage_started), _timestamp(run_started)
    return a is not None and b is not None and a < b
