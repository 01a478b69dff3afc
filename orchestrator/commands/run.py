"""`orchestrator run [RECIPE]`: run a recipe's stages (the quickstart when no recipe is given)."""

from __future__ import annotations

import argparse
import sys

# recipe.STAGES, without importing the recipe (pydantic) for --help; tests/test_cli.py holds them equal
STAGES = ("data", "train", "merge", "eval", "gguf", "register")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a recipe: data -> train -> merge -> eval -> gguf -> register, then its report",
        description="Run a pipeline recipe. Without RECIPE, the offline quickstart runs.",
    )
    p.add_argument(
        "recipe", nargs="?", default=None, help="a shipped recipe's name (quickstart, ...) or a path to a recipe YAML"
    )
    p.add_argument("--dry-run", action="store_true", help="print the LLaMA-Factory YAML and run nothing")
    p.add_argument("--force", action="store_true", help="rerun every stage, even those already done")
    stages = STAGES
    p.add_argument(
        "--until", choices=stages, help="stop after this stage (e.g. --until gguf where no Ollama runs, as on Colab)"
    )
    p.add_argument(
        "--from",
        dest="start",
        choices=stages,
        metavar="STAGE",
        help="redo this stage and the ones after it, even if done (e.g. --from gguf: convert and register again)",
    )
    p.add_argument(
        "--only", choices=stages, metavar="STAGE", help="redo this one stage, even if done (e.g. --only register)"
    )
    p.add_argument(
        "--node-rank",
        type=int,
        metavar="N",
        help="this machine's place in a multi-node training (train.nodes): overrides train.node_rank",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from orchestrator import pipeline
    from orchestrator.context import open_run
    from orchestrator.progress import ConsoleReporter

    reporter = ConsoleReporter()
    if args.only and (args.start or args.until):
        from orchestrator.errors import UsageError

        raise UsageError("--only runs one stage; it does not go with --from or --until")
    ctx = open_run(
        args.recipe, reporter, until=args.until, start=args.start, only=args.only, assume_hardware=args.dry_run
    )
    if args.node_rank is not None:
        set_node_rank(ctx.recipe, args.node_rank)
    if args.dry_run:
        for name, text in pipeline.dry_run(ctx).items():
            print(f"# {ctx.run_dir / name}")
            print(text)
        if "train" in ctx.recipe.stages:
            print_launch(ctx)
        if ctx.hardware.backend == "cpu" and "train" in ctx.recipe.stages:
            from orchestrator.stages.train import CPU_WEIGHTS

            reporter.info(CPU_WEIGHTS)
        for problem in pipeline.missing_packages(ctx):
            reporter.info(f"warning: {problem}")
        return 0
    reporter.info(f"recipe {ctx.recipe_path} -> {ctx.run_dir} on {ctx.hardware.describe()}")
    try:
        result = pipeline.run_pipeline(ctx, force=bool(args.force or args.start or args.only))
    except BaseException:
        reporter.close()
        report = ctx.manifest.data.get("run", {}).get("report")  # set only once this run's report is written
        if report:
            print(f"run report: {report}", file=sys.stderr)
        raise
    reporter.close()
    print(f"run finished: {result.run_dir} (manifest: {result.manifest})")
    for line in summary(ctx):
        print(line)
    if result.report:
        print(f"report:       {result.report} (and {result.report.with_suffix('.md').name} beside it)")
    return 0


def set_node_rank(recipe, rank: int) -> None:
    from orchestrator.errors import UsageError

    nodes = recipe.train.nodes
    if not 0 <= rank < nodes:
        raise UsageError(f"--node-rank {rank}: the recipe's train.nodes is {nodes}; give 0 to {nodes - 1}")
    recipe.train.node_rank = rank


def print_launch(ctx) -> None:
    """The DeepSpeed JSON the train stage writes (stdout, with the YAMLs), and on stderr how training is
    launched: the exact environment LLaMA-Factory gets beyond this one, the command, each speed choice
    with its reason, and for a multi-node training the command to start on every other node."""
    import json
    import os
    import shlex

    from orchestrator import distributed, speed
    from orchestrator import llamafactory as lf
    from orchestrator.errors import StageError

    t, hw = ctx.recipe.train, ctx.hardware
    if t.deepspeed:
        print(f"# {ctx.run_dir / distributed.DEEPSPEED_FILE}")
        print(json.dumps(distributed.deepspeed_config(t.deepspeed), indent=2))
    config = ctx.run_dir / "train.yaml"
    try:
        argv = lf.cli_argv("train", config, float32_weights=hw.backend == "cpu")
    except StageError:  # the train extra is not installed here; the dry run warns of it
        argv = ["llamafactory-cli", "train", str(config)]
    env = ctx.lf_env(train=True)
    added = [f"{k}={v}" for k, v in sorted(env.items()) if os.environ.get(k) != v]
    lines = [
        f"launch: {distributed.describe(ctx.recipe, hw)}",
        f"  cd {shlex.quote(str(ctx.run_dir))} && {shlex.join(['env', *added, *argv])}",
        "speed:",
        *(
            f"  {c.key}: {'not set' if c.value is None else c.value} - {c.reason}"
            for c in speed.train_choices(ctx.recipe, hw)
        ),
    ]
    commands = distributed.node_commands(ctx.recipe, ctx.recipe_path)
    if commands:
        lines += [f"start the same recipe on every node (node {t.node_rank} is this one):"] + [
            f"  {c}" for c in commands
        ]
    print("\n".join(lines), file=sys.stderr)


def summary(ctx) -> list[str]:
    """What the run produced, and the next command when it stopped short of Ollama."""
    stages = ctx.manifest.data["stages"]
    lines = []
    train = stages.get("train", {})
    if "train" in ctx.recipe.stages and train.get("status") == "done":
        details = train.get("details", {})
        first, last = details.get("first_loss"), details.get("last_loss")
        if first is not None and last is not None:
            lines.append(f"training:     {details.get('steps')} logged steps, loss {first:.4f} -> {last:.4f}")
        lines.append(f"adapter:      {ctx.adapter_dir}")
        plot = ctx.adapter_dir / "training_loss.png"
        if plot.is_file():
            lines.append(f"loss plot:    {plot}")
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
