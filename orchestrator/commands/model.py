"""`orchestrator model tiny`: build the tiny random-weight Qwen3 (real tokenizer) locally."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="local models (the tiny test Qwen3)")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    tiny = msub.add_parser("tiny", help="build a tiny random-weight Qwen3 with the real Qwen3 tokenizer")
    tiny.add_argument("--out", default=None, help="folder (default: llama_factory_data/models/tiny-qwen3)")
    tiny.add_argument("--layers", type=int, default=2, help="number of transformer layers")
    tiny.add_argument("--hidden", type=int, default=64, help="hidden size")
    tiny.add_argument("--force", action="store_true", help="rebuild even when it exists")
    tiny.set_defaults(handler=handle_tiny)


def handle_tiny(args: argparse.Namespace) -> int:
    from orchestrator.deps import TINY_MODULES, require
    from orchestrator.tiny import DEFAULT_DIR, TinySpec, build_tiny_qwen3

    require(TINY_MODULES, "building the tiny model")

    spec = TinySpec(num_hidden_layers=args.layers, hidden_size=args.hidden, intermediate_size=2 * args.hidden)
    out = build_tiny_qwen3(args.out or DEFAULT_DIR, spec, force=args.force)
    print(f"tiny Qwen3 ready: {out}")
    return 0
