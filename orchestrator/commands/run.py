"""`orchestrator run [RECIPE]`: run a recipe's stages (the quickstart when no recipe is given)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a recipe: data -> train -> merge",
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


class ConsoleReporter:
    """Stage lines and a live training line (step/total, loss, ETA) on stderr."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self._last_step = -1
        self._transfer: tuple[str, int] | None = None
        self._quarter = -1

    def stage(self, name: str, status: str, message: str = "") -> None:
        style = {"done": "green", "failed": "red", "skipped": "dim"}.get(status, "bold")
        self.console.print(f"[{style}]{name:<6} {status}[/{style}] {message}".rstrip())

    def progress(self, p) -> None:
        if p.step == self._last_step:
            return
        self._last_step = p.step
        loss = f"{p.loss:.4f}" if p.loss is not None else "-"
        self.console.print(f"  step {p.step}/{p.total}  loss {loss}  elapsed {p.elapsed}  eta {p.remaining}")

    def transfer(self, label: str, done: int, total: int) -> None:
        """Bytes converted or uploaded: a line at each quarter, so logs stay short."""
        if total <= 0:
            return
        if (label, total) != self._transfer:
            self._transfer, self._quarter = (label, total), -1
        quarter = 4 * done // total
        if quarter > self._quarter:
            self._quarter = quarter
            mib = 2**20
            self.console.print(f"  {label} {done / mib:,.1f}/{total / mib:,.1f} MiB ({100 * done / total:.0f}%)")

    def info(self, message: str) -> None:
        self.console.print(f"  {message}", markup=False)


def handle(args: argparse.Namespace) -> int:
    from orchestrator import pipeline

    reporter = ConsoleReporter()
    ctx = pipeline.prepare(args.recipe, reporter, until=args.until, assume_hardware=args.dry_run)
    if args.dry_run:
        for name, text in pipeline.dry_run(ctx).items():
            print(f"# {ctx.run_dir / name}")
            print(text)
        return 0
    reporter.info(f"recipe {ctx.recipe_path} -> {ctx.run_dir} on {ctx.hardware.describe()}")
    result = pipeline.run_pipeline(ctx, force=args.force)
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
