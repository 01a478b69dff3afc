"""`orchestrator data export`: conversations -> a LLaMA-Factory ShareGPT dataset, with a report."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="datasets for LLaMA-Factory")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    export = dsub.add_parser(
        "export",
        help="export recorded conversations as a ShareGPT dataset",
        description="Write DATASET_DIR/NAME.jsonl and add or update only the NAME entry of dataset_info.json.",
    )
    export.add_argument("--name", required=True, help="dataset name (file NAME.jsonl, key in dataset_info.json)")
    export.add_argument("--db", action="append", default=[], help="memory store (default: data/ollama_memory.db)")
    export.add_argument("--file", action="append", default=[], help="a .json/.jsonl file of conversations")
    export.add_argument("--session", action="append", default=None, help="only this session id (repeatable)")
    export.add_argument("--dataset-dir", default="data", help="folder of dataset_info.json (default: data)")
    export.add_argument(
        "--no-thinking", action="store_true", help="drop chains of thought (for the qwen3_nothink template)"
    )
    export.set_defaults(handler=handle_export)


# What this command adds to a source's own error: the options that name another source.
OPTIONS_HINT = "or export another store (--db PATH) or a file of conversations (--file PATH)"


def handle_export(args: argparse.Namespace) -> int:
    from orchestrator.dataset import export_dataset
    from orchestrator.errors import UsageError
    from orchestrator.recipe import FileSource, MemorySource
    from orchestrator.sources import MissingSource, read_sources

    dbs = args.db or ([] if args.file else ["data/ollama_memory.db"])
    specs = [MemorySource(type="memory", path=db, sessions=args.session) for db in dbs]
    specs += [FileSource(type="file", path=f) for f in args.file]
    try:
        report = export_dataset(
            read_sources(specs, recipe_keys=False), args.name, args.dataset_dir, keep_thinking=not args.no_thinking
        )
    except MissingSource as exc:
        raise UsageError(f"{exc}, {OPTIONS_HINT}") from exc
    print("\n".join(report.lines()))
    return 0
