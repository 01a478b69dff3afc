"""The command line: parse, call the library, print. No logic of its own.

Each subcommand lives in ``orchestrator/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``. Those modules import nothing heavy at module level, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from orchestrator import __version__
from orchestrator.errors import OrchestratorError

COMMANDS = ("chat", "sessions", "data", "run", "plan", "batch", "report", "model", "gguf", "ollama")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Turn your Ollama conversations into a fine-tuned Qwen3 and serve it back in Ollama.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"orchestrator.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except OrchestratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
