"""``orchestrator ollama register`` / ``ollama modelfile``: serve a tuned GGUF in Ollama, or write its Modelfile.

Only argparse at module level: the library (requests, gguf) is imported when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from orchestrator.text import human_size

REGISTER_HELP = """\
Register a GGUF in Ollama over its HTTP API and check it: writes RUN_DIR/Modelfile (so
`ollama create NAME -f RUN_DIR/Modelfile` works by hand too), uploads the GGUF as a blob (skipped when
Ollama already has it), creates the model with a TEMPLATE that matches the training format, then checks
`ollama show` and a short chat. With --base, GGUF is a LoRA adapter GGUF put on that Ollama model.
--recipe takes the template, thinking, system prompt, num_ctx, parameters, host and GGUF type from a
recipe; the other options override it. A 16-bit GGUF that `gguf convert` left for Ollama to quantize
(a K-quant without llama-quantize) says so in its header, and Ollama is asked to quantize it; --quantize
overrides that. When Ollama cannot be reached, the command to run later is printed and the exit code is 1."""

MODELFILE_HELP = """\
Print (or write with -o) the Modelfile for a GGUF: the TEMPLATE that matches the training format, stop
tokens and Qwen's recommended sampling. When printed to stdout, FROM is the GGUF's absolute path (the file may
be saved anywhere); with -o PATH, FROM is relative to PATH's folder. The `ollama create` command goes to
stderr, with the --quantize the GGUF or the recipe asks for: a Modelfile cannot carry quantize."""


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("ollama", help="serve a tuned GGUF in Ollama")
    actions = parser.add_subparsers(dest="ollama_command", metavar="ACTION", required=True)
    register = actions.add_parser(
        "register",
        help="upload a GGUF, create the model in Ollama and check that it answers",
        description=REGISTER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    register.add_argument("gguf", metavar="GGUF", help="the model GGUF (with --base: the LoRA adapter GGUF)")
    register.add_argument("--name", help="Ollama model name, e.g. my-qwen3:latest (default: the recipe's)")
    register.add_argument("--host", help="Ollama server URL (default: the recipe's, else $OLLAMA_HOST, else :11434)")
    register.add_argument("--run-dir", metavar="DIR", help="where the Modelfile goes (default: the GGUF's folder)")
    register.add_argument(
        "--quantize",
        metavar="TYPE",
        help="ask Ollama to quantize to TYPE, e.g. q4_K_M (default: what the recipe or the GGUF's header asks)",
    )
    register.add_argument("--use-cli", action="store_true", help="create with a local `ollama create -f` instead")
    register.add_argument("--no-chat", action="store_true", help="skip the short chat at the end of the checks")
    _format_options(register)
    register.set_defaults(handler=run_register)

    modelfile = actions.add_parser(
        "modelfile",
        help="print the Modelfile for a GGUF",
        description=MODELFILE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    modelfile.add_argument("gguf", metavar="GGUF", help="the model GGUF (with --base: the LoRA adapter GGUF)")
    modelfile.add_argument("-o", "--output", metavar="PATH", help="write the Modelfile here instead of printing it")
    _format_options(modelfile)
    modelfile.set_defaults(handler=run_modelfile)


def _format_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", metavar="RECIPE", help="take the defaults below from this recipe")
    parser.add_argument("--base", metavar="MODEL", help="adapter route: the Ollama model the adapter goes on")
    parser.add_argument("--template", choices=("qwen3", "qwen3_nothink"), help="LLaMA-Factory template (qwen3)")
    parser.add_argument(
        "--thinking",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="qwen3 trained with enable_thinking (default: true)",
    )
    parser.add_argument("--system", metavar="TEXT", help="SYSTEM prompt")
    parser.add_argument("--num-ctx", type=int, metavar="N", help="context window (PARAMETER num_ctx)")
    parser.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="a PARAMETER, e.g. temperature=0.5"
    )


def _spec(args: argparse.Namespace) -> tuple[Any, Path]:
    """The ``ServeSpec`` from the recipe (when given) with the options applied over it, and the run folder."""
    import dataclasses

    from orchestrator.ollama.spec import ServeSpec

    spec, run_dir = ServeSpec(), None
    if args.recipe:
        from orchestrator.recipe import load_recipe

        recipe, _ = load_recipe(args.recipe)
        spec, run_dir = ServeSpec.from_recipe(recipe), recipe.run_dir
    options = {
        "template": args.template,
        "enable_thinking": args.thinking,
        "system": args.system,
        "num_ctx": args.num_ctx,
        "base_model": args.base,
        "name": getattr(args, "name", None),
        "host": getattr(args, "host", None),
        "quantize": getattr(args, "quantize", None),
    }
    changes: dict[str, Any] = {key: value for key, value in options.items() if value is not None}
    params = _parse_params(args.param)
    if params:
        changes["parameters"] = {**spec.parameters, **params}
    run_dir = Path(getattr(args, "run_dir", None) or run_dir or Path(args.gguf).parent)
    return dataclasses.replace(spec, **changes), run_dir


def _parse_params(items: list[str]) -> dict[str, Any]:
    import json

    from orchestrator.errors import UsageError

    params: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {item!r}: use KEY=VALUE, e.g. --param temperature=0.5")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        if key == "stop":
            params.setdefault("stop", []).append(str(value))
        else:
            params[key] = value
    return params


def run_register(args: argparse.Namespace) -> int:
    from orchestrator.errors import UsageError
    from orchestrator.ollama.register import register_model

    spec, run_dir = _spec(args)
    if not spec.name:
        raise UsageError("ollama register needs --name (or a --recipe that names the model)")
    from orchestrator.progress import ConsoleReporter

    progress = ConsoleReporter()
    try:
        result = register_model(
            spec,
            gguf=Path(args.gguf),
            run_dir=run_dir,
            on_progress=progress.register_event,
            use_cli=args.use_cli,
            verify_chat=not args.no_chat,
        )
    finally:
        progress.close()
    _print_result(result)
    return 0


def _print_result(result: Any) -> None:
    details = result.details
    print(f"registered {result.name} on {result.host} ({result.method})")
    print(f"  Modelfile  {result.modelfile}")
    for blob in result.blobs:
        state = f"uploaded {human_size(blob.size)}" if blob.uploaded else "already in Ollama, not uploaded again"
        print(f"  blob       {blob.path.name} {blob.digest} ({state})")
    print(
        f"  show       family {details.get('family')}, {details.get('quantization_level')}, "
        f"{details.get('parameter_size')} parameters; capabilities: {', '.join(result.capabilities)}"
    )
    if result.answer:
        answer = result.answer if len(result.answer) <= 200 else result.answer[:197] + "..."
        print(f"  chat       {answer!r} (done: {result.done_reason})")
    print(f"  try it     ollama run {result.name}")


def run_modelfile(args: argparse.Namespace) -> int:
    import shlex

    from orchestrator.ollama.gguf_info import read_gguf_info
    from orchestrator.ollama.modelfile import build_modelfile
    from orchestrator.ollama.quantize import quantize_request
    from orchestrator.ollama.register import create_command

    spec, _ = _spec(args)
    gguf = Path(args.gguf)
    target = Path(args.output) if args.output else None
    quantize = quantize_request(spec, read_gguf_info(gguf, expect_adapter=spec.adapter_route))
    text = build_modelfile(spec, gguf=gguf, folder=None if target is None else target.parent).render()
    command = shlex.join(create_command(spec.name or "NAME", target or "Modelfile", quantize))
    if target is not None:
        from orchestrator.fsutil import write_text

        write_text(target, text)
        print(f"wrote {target}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    how = "create the model with" if target is not None else "save it as Modelfile and create the model with"
    note = "; a Modelfile cannot carry quantize" if quantize else ""
    print(f"{how}: {command}{note}", file=sys.stderr)
    return 0
