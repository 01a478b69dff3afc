"""`orchestrator batch BATCH.yaml`: many runs, queued onto the GPUs (or max_parallel at once on a CPU
machine), or onto a Ray cluster with --ray; a summary table at the end."""

from __future__ import annotations

import argparse
import signal
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch",
        help="run many recipes (a list, or one swept over values), as many at once as the GPUs allow",
        description="Run a batch file: recipes: [files or shipped names] and/or recipe: BASE with "
        "sweep: {dotted.key: [values]}, overrides: {dotted.key: value} for every run, max_parallel. "
        "A rerun skips the finished runs and retries the failed ones.",
    )
    p.add_argument("batch", help="the batch file (YAML)")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="where batch.json and batch.md go (default: llama_factory_data/batches/<file stem>)",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const=True,
        default=None,
        metavar="ADDRESS",
        help="run each run as a Ray task: on the cluster at ADDRESS (HOST:PORT, ray://HOST:PORT), or without "
        "one on a local cluster started here (pip install -e '.[ray]')",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from orchestrator.batch import HEAD, run_batch, table_rows
    from orchestrator.progress import ConsoleReporter

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # a plain `kill` ends the runs (and a local Ray cluster) as Ctrl-C does

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        result = run_batch(args.batch, out=args.out, ray=args.ray, reporter=ConsoleReporter())
    finally:
        signal.signal(signal.SIGTERM, previous)
    print_table(HEAD, table_rows(result.rows))
    print(f"summary: {result.json_path} and {result.md_path.name} beside it")
    for run in result.failed:
        print(f"failed:  {run.name}: {run.error} (log: {run.log_path})")
    return 1 if result.failed else 0


def print_table(head: tuple[str, ...], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, highlight=False)
    for name in head:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*row)
    # In a log or a pipe nothing is cut to 80 columns; on a terminal long cells fold.
    Console(highlight=False, width=None if sys.stdout.isatty() else 1000).print(table)
