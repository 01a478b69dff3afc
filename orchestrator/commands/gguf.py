"""`orchestrator gguf convert|inspect`: Hugging Face model or LoRA adapter -> GGUF, and a look inside one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from orchestrator.gguf.types import types_help

    p = sub.add_parser("gguf", help="convert models and LoRA adapters to GGUF; inspect GGUF files")
    gsub = p.add_subparsers(dest="gguf_command", metavar="ACTION", required=True)
    convert = gsub.add_parser(
        "convert",
        help="a merged safetensors model (or, with --adapter, a PEFT LoRA adapter) -> one GGUF file",
        description="Qwen3, Qwen3-MoE, Qwen2/2.5 and Llama; no llama.cpp needed except for K-quants, which use "
        "llama-quantize when found (PATH or LLAMA_CPP_DIR) or else leave Q4_K_M/Q4_K_S to Ollama: the file is then "
        "16-bit, named for it (X-q4_k_m.gguf becomes X-bf16.gguf or X-f16.gguf), and its header asks Ollama for "
        "the K-quant when it is registered (orchestrator ollama register FILE).",
    )
    convert.add_argument("source", metavar="MODEL_DIR", help="model folder (or adapter folder with --adapter)")
    convert.add_argument("out", metavar="OUT.gguf", help="file to write")
    convert.add_argument("--type", default=None, help=f"{types_help()}; default q8_0 (f16 for --adapter)")
    convert.add_argument("--chat-template", metavar="FILE", help="Jinja chat template to embed (the trained one)")
    convert.add_argument("--adapter", action="store_true", help="MODEL_DIR is a PEFT LoRA adapter")
    convert.add_argument("--base", metavar="DIR", help="base model folder of the adapter (its config.json)")
    convert.add_argument("--json", action="store_true", help="print the result as JSON")
    convert.set_defaults(handler=handle_convert)
    inspect = gsub.add_parser("inspect", help="what a GGUF holds, and whether llama.cpp could load it")
    inspect.add_argument("file", metavar="FILE", help="a .gguf file")
    inspect.add_argument("--quick", action="store_true", help="check the header only (skip the full read-back)")
    inspect.add_argument("--json", action="store_true", help="print everything as JSON")
    inspect.set_defaults(handler=handle_inspect)


def handle_convert(args: argparse.Namespace) -> int:
    from orchestrator.errors import UsageError
    from orchestrator.gguf import convert_adapter, convert_model
    from orchestrator.gguf.vocab import read_template

    template = read_template(Path(args.chat_template)) if args.chat_template else None
    from orchestrator.progress import ConsoleReporter

    reporter = ConsoleReporter()

    def progress(done: int, total: int) -> None:
        reporter.transfer("converting", done, total)

    try:
        if args.adapter:
            if template is not None:
                raise UsageError("--chat-template applies to models; an adapter GGUF carries no template")
            result = convert_adapter(
                args.source, args.out, base_model_dir=args.base, out_type=args.type or "f16", on_progress=progress
            )
        else:
            if args.base:
                raise UsageError("--base is for --adapter; a model folder carries its own config")
            result = convert_model(
                args.source, args.out, args.type or "q8_0", chat_template=template, on_progress=progress
            )
    finally:
        reporter.close()
    print(json.dumps(result.to_dict(), indent=2) if args.json else "\n".join(result.lines()))
    return 0


def handle_inspect(args: argparse.Namespace) -> int:
    from orchestrator.gguf.inspect import inspect_gguf, summary_lines

    info = inspect_gguf(args.file, read_back=not args.quick)
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        print("\n".join(summary_lines(info)))
    return 0 if info["verified"] else 1
