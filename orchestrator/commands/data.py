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
    export.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="TYPE:PATH",
        help="a source of another kind (repeatable): ollama_app:[DB], open_webui:FILE_OR_DB, chatgpt:FILE, "
        "ollama_saved:[HOST] (empty: the default place or host), file:PATH, memory:PATH",
    )
    export.add_argument("--session", action="append", default=None, help="only this session id (repeatable)")
    export.add_argument("--model", action="append", default=None, help="only chats answered by this model (glob)")
    export.add_argument("--since", help="only chats started on or after this day (YYYY-MM-DD)")
    export.add_argument("--until", help="only chats started on or before this day (YYYY-MM-DD)")
    export.add_argument("--min-turns", type=int, default=1, help="only chats with this many assistant replies")
    export.add_argument("--dataset-dir", default="data", help="folder of dataset_info.json (default: data)")
    export.add_argument(
        "--no-thinking", action="store_true", help="drop chains of thought (for the qwen3_nothink template)"
    )
    export.add_argument(
        "--no-redact", action="store_true", help="write secrets as they are (default: replaced by placeholders)"
    )
    export.add_argument(
        "--near-duplicates",
        type=_similarity,
        default=0.9,
        metavar="X",
        help="drop conversations this similar to a kept one (MinHash, 0-1; default 0.9; 'off': keep them)",
    )
    export.add_argument(
        "--eval-split",
        metavar="N",
        help="hold conversations out in NAME_eval for evaluation: a share below 1 (0.1) or a whole count (20)",
    )
    export.add_argument(
        "--preferences",
        action="store_true",
        help="also write NAME_pref: preference pairs from rated or regenerated Open WebUI answers (for DPO)",
    )
    export.set_defaults(handler=handle_export)
    sources = dsub.add_parser(
        "sources",
        help="list the conversation sources found on this machine, with their chat counts",
        description="Looks for the Ollama app's database and Open WebUI's webui.db; reads no message.",
    )
    sources.add_argument(
        "--open-webui", action="append", default=None, metavar="DIR", help="Open WebUI's data folder or webui.db"
    )
    sources.add_argument(
        "--chatgpt", action="append", default=None, metavar="FILE", help="a ChatGPT conversations.json"
    )
    sources.set_defaults(handler=handle_sources)


# What this command adds to a source's own error: the options that name another source.
OPTIONS_HINT = "or export another store (--db PATH) or a file of conversations (--file PATH)"
SOURCE_KINDS = ("ollama_app", "open_webui", "ollama_saved", "chatgpt", "file", "memory")


def source_specs(args: argparse.Namespace) -> list:
    """The sources the options name, as the recipe's source objects, each with the filters given."""
    from pydantic import ValidationError

    from orchestrator.errors import UsageError
    from orchestrator.recipe import SOURCE_TYPES

    filters = {"models": args.model, "since": args.since, "until": args.until, "min_turns": args.min_turns}
    given: list[tuple[str, dict]] = [("memory", {"path": db, "sessions": args.session}) for db in args.db]
    given += [("file", {"path": f}) for f in args.file]
    for value in args.source:
        kind, sep, rest = value.partition(":")
        if not sep or kind not in SOURCE_KINDS:
            raise UsageError(f"--source {value}: give TYPE:PATH with TYPE one of {', '.join(SOURCE_KINDS)}")
        if kind == "ollama_saved":
            given.append((kind, {"host": rest or None}))
        elif rest or kind == "ollama_app":
            given.append((kind, {"path": rest or None, **({"sessions": args.session} if kind == "memory" else {})}))
        else:
            raise UsageError(f"--source {value}: {kind} needs a path ({kind}:PATH)")
    if not given:
        given = [("memory", {"path": "data/ollama_memory.db", "sessions": args.session})]
    specs = []
    for kind, fields in given:
        try:
            specs.append(SOURCE_TYPES[kind](type=kind, **fields, **filters))
        except ValidationError as exc:
            problem = exc.errors()[0]
            key = "--" + str(problem["loc"][0]).replace("models", "model").replace("_", "-")
            raise UsageError(f"{key}: {problem['msg']}") from None
    return specs


def _similarity(text: str) -> float | None:
    if text.lower() == "off":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a similarity above 0 and at most 1, or 'off'")
    return value


def extra_datasets(args: argparse.Namespace, specs: list) -> dict:
    """--eval-split and --preferences (NAME_eval, NAME_pref) as export_dataset keywords, checked as the recipe is."""
    from pydantic import ValidationError

    from orchestrator.errors import UsageError
    from orchestrator.recipe import DataSpec

    options: dict = {}
    if args.eval_split is not None:
        try:
            options["eval_split"] = DataSpec(sources=specs, eval_split=args.eval_split).eval_split
        except ValidationError:
            raise UsageError(
                f"--eval-split {args.eval_split}: give a share of the conversations below 1 (e.g. 0.1) "
                "or a whole count of them (e.g. 20)"
            ) from None
    if args.preferences:
        if not any(spec.type == "open_webui" for spec in specs):
            raise UsageError("--preferences needs an Open WebUI source (--source open_webui:FILE_OR_DB)")
        options["preferences"] = True
    return options


def handle_export(args: argparse.Namespace) -> int:
    from orchestrator.dataset import export_dataset
    from orchestrator.errors import UsageError
    from orchestrator.sources import MissingSource, read_sources

    specs = source_specs(args)
    options = extra_datasets(args, specs)
    try:
        report = export_dataset(
            read_sources(specs, recipe_keys=False),
            args.name,
            args.dataset_dir,
            keep_thinking=not args.no_thinking,
            redact=not args.no_redact,
            near_duplicates=args.near_duplicates,
            **options,
        )
    except MissingSource as exc:
        raise UsageError(f"{exc}, {OPTIONS_HINT}") from exc
    print("\n".join(report.lines()))
    return 0


def handle_sources(args: argparse.Namespace) -> int:
    from orchestrator.sources.discover import find_sources

    found = find_sources(args.open_webui, args.chatgpt)
    if not found:
        print(
            "no conversation sources found (no Ollama app database, no Open WebUI data folder); "
            "give one with --open-webui DIR, or export a file with `data export --source TYPE:PATH`"
        )
        return 0
    for source in found:
        print(source.line())
    return 0
