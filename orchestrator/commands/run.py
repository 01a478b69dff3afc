"""`orchestrator run [RECIPE]`: run a recipe's stages (the quickstart when no recipe is given)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a recipe: data -> train -> merge -> gguf -> register",
        description="Run a pipeline recipe. Without RECIPE, the offline quickstart runs.",
    )
    p.add_argument(
        "recipe", nargs="?", default=None, help="a shipped recipe's name (quickstart, ...) or a path to a recipe YAML"
    )
    p.add_argument("--dry-run", action="store_true", help="print the LLaMA-Factory YAML and run nothing")
    p.add_argument("--force", action="store_true", help="rerun every stage, even those already done")
    p.add_argument(
        "--until",
        choices=("data", "train", "merge", "gguf", "register"),
        help="stop after this stage (e.g. --until gguf where no Ollama runs, as on Colab)",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from orchestrator import pipeline
    from orchestrator.progress import ConsoleReporter
    from orchestrator.run import open_run

    reporter = ConsoleReporter()
    ctx = open_run(args.recipe, reporter, until=args.until, assume_hardware=args.dry_run)
    if args.dry_run:
        for name, text in pipeline.dry_run(ctx).items():
            print(f"# {ctx.run_dir / name}")
            print(text)
        return 0
    reporter.info(f"recipe {ctx.recipe_path} -> {ctx.run_dir} on {ctx.hardware.describe()}")
    try:
        result = pipeline.run_pipeline(ctx, force=args.force)
    finally:
        reporter.close()
    print(f"run finished: {result.run_dir} (manifest: {result.manifest})")
    for line in summary(ctx):
        print(line)
    return 0


def summary(ctx) -> list[str]:
    """What the run produced, and the next command when it stopped short of Ollama."""
    stages = ctx.manifest.data["stages"]
    lines = []
    if "merge" in ctx.recipe.stages and ctx.merged_dir.is_dir():
        lines.append(f"merged model: {ctx.merged_dir}")
    gguf = stages.get("gguf", {}).get("outputs", {}).get("gguf")
    if "gguf" in ctx.recipe.stages and gguf:
        lines.append(f"gguf:         {gguf}")
        if "register" not in ctx.recipe.stages:
            lines.append(f"serve it:     orchestrator ollama register {gguf} --recipe {ctx.recipe_path}")
    if "register" in ctx.recipe.stages and stages.get("register", {}).get("status") == "done":
        lines.append(f"in Ollama:    ollama run {ctx.ollama_name}")
    return lines
