"""`orchestrator report RUN_DIR`: write a run's report.html and report.md again from its folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write a run's report (report.html and report.md) again",
        description="Rebuild RUN_DIR/report.html (one self-contained page) and report.md from the run folder: "
        "recipe, data, hardware, training curves, before/after evaluation, answers, artifacts. "
        "Every run writes them at its end; this writes them on demand.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (llama_factory_data/runs/<name>) or a run's name")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from orchestrator.progress import ConsoleReporter
    from orchestrator.run_report import write_report

    reporter = ConsoleReporter()
    try:
        paths = write_report(resolve_run_dir(args.run_dir), on_progress=reporter.transfer)
    finally:
        reporter.close()
    print(f"report: {paths.html}")
    print(f"        {paths.md}")
    return 0


def resolve_run_dir(ref: str) -> Path:
    """A folder as given, else a run's name under the default runs folder (``llama_factory_data/runs``)."""
    from orchestrator.recipe import Recipe

    path = Path(ref)
    if not path.is_dir() and "/" not in ref:
        named = Path(Recipe.model_fields["runs_dir"].default) / ref
        if named.is_dir():
            return named
    return path
