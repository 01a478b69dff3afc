"""``orchestrator ollama register`` / ``ollama modelfile``: serve a tuned GGUF in Ollama, or write its Modelfile.

Only argparse at module level: the library (requests, gguf) is imported when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REGISTER_HELP = """\
Register a GGUF in Ollama over its HTTP API and check it: writes RUN_DIR/Modelfile (so
`ollama create NAME -f RUN_DIR/Modelfile` works by hand too), uploads the GGUF as a blob (skipped when
Ollama already has it), creates the model with a TEMPLATE that matches the training format, then checks
`ollama show` and a short chat. With --base, GGUF is a LoRA adapter GGUF put on that Ollama model.
--recipe takes the template, thinking, system prompt, num_ctx, parameters, host and GGUF type from a
recipe; the other options override it. When Ollama cannot be reached, the command to run later is
printed and the exit code is 1."""

MODELFILE_HELP = """\
Print (or write with -o) the Modelfile for a GGUF: FROM relative to the Modelfile's folder, the TEMPLATE
that matches the training format, stop tokens and Qwen's recommended sampling."""


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
    register.add_argument("--quantize", metavar="TYPE", help="ask Ollama to quantize to TYPE (e.g. q4_K_M)")
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


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The register/modelfile settings: the recipe's (when given), overridden by the options."""
    values: dict[str, Any] = {"template": "qwen3", "enable_thinking": True, "parameters": {}}
    run_dir = None
    if args.recipe:
        from orchestrator.recipe import load_recipe

        recipe, _ = load_recipe(args.recipe)
        spec = recipe.ollama
        values.update(
            template=recipe.model.resolved_template,
            enable_thinking=recipe.model.enable_thinking,
            name=spec.name or recipe.name,
            host=spec.host,
            system=spec.system,
            num_ctx=spec.num_ctx,
            parameters=dict(spec.parameters),
            quantize=recipe.gguf.type,
            base_model=spec.base_model if spec.serve == "adapter" else None,
        )
        run_dir = recipe.run_dir
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
    values.update({key: value for key, value in options.items() if value is not None})
    values["parameters"] = {**values["parameters"], **_parse_params(args.param)}
    values["run_dir"] = Path(getattr(args, "run_dir", None) or run_dir or Path(args.gguf).parent)
    return values


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

    s = _settings(args)
    if not s.get("name"):
        raise UsageError("ollama register needs --name (or a --recipe that names the model)")
    gguf = Path(args.gguf)
    if s.get("base_model") is None and s.get("quantize"):
        s["quantize"] = _quantize_for(gguf, s["quantize"], explicit=args.quantize is not None)
    progress = _Progress(sys.stderr)
    result = register_model(
        name=s["name"],
        run_dir=s["run_dir"],
        **_serving(s, gguf),
        quantize=s.get("quantize"),
        host=s.get("host"),
        on_progress=progress,
        use_cli=args.use_cli,
        verify_chat=not args.no_chat,
    )
    progress.finish()
    _print_result(result)
    return 0


def _serving(s: dict[str, Any], gguf: Path) -> dict[str, Any]:
    """What the Modelfile is built from, shared by register and modelfile: with a base model, GGUF is an adapter."""
    adapter = s.get("base_model") is not None
    return {
        "gguf_path": None if adapter else gguf,
        "adapter_path": gguf if adapter else None,
        "base_model": s.get("base_model"),
        "template": s["template"],
        "enable_thinking": s["enable_thinking"],
        "system": s.get("system"),
        "num_ctx": s.get("num_ctx"),
        "parameters": s["parameters"],
    }


def _quantize_for(gguf: Path, wanted: str, *, explicit: bool) -> str | None:
    """A recipe's gguf.type asks Ollama to quantize only to what Ollama can make; --quantize always asks."""
    from orchestrator.ollama.register import OLLAMA_QUANTIZE

    if explicit or wanted.upper() in OLLAMA_QUANTIZE:
        return wanted
    note = f"note: the recipe's gguf.type {wanted} is not a type Ollama quantizes to; {gguf.name} is registered as is"
    print(note, file=sys.stderr)
    return None


def _print_result(result: Any) -> None:
    details = result.details
    print(f"registered {result.name} on {result.host} ({result.method})")
    print(f"  Modelfile  {result.modelfile}")
    for blob in result.blobs:
        state = f"uploaded {_size(blob.size)}" if blob.uploaded else "already in Ollama, not uploaded again"
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
    from orchestrator.ollama.modelfile import build_modelfile

    s = _settings(args)
    gguf = Path(args.gguf)
    target = Path(args.output) if args.output else Path.cwd() / "Modelfile"
    text = build_modelfile(folder=target.parent, **_serving(s, gguf)).render()
    if args.output:
        from orchestrator.fsutil import write_text

        write_text(target, text)
        print(f"wrote {target}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class _Progress:
    """Register progress on stderr: a line per step; bytes redrawn in place on a terminal, else every 25%."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.tty = stream.isatty()
        self.last: Any = ""
        self.open = False

    def __call__(self, event: Any) -> None:
        if event.phase in ("hash", "upload") and event.total is not None and event.completed is not None:
            self._bytes(event)
        elif event.message and event.message != self.last:
            self.finish()
            print(f"[{event.phase}] {event.message}", file=self.stream)
            self.last = event.message

    def _bytes(self, event: Any) -> None:
        percent = 100 * event.completed // max(event.total, 1)
        text = f"{event.message}: {_size(event.completed)} / {_size(event.total)} ({percent}%)"
        if self.tty:
            self.stream.write("\r" + text.ljust(len(str(self.last))))
            self.stream.flush()
            self.last, self.open = text, True
        elif (event.message, percent // 25) != self.last:
            print(f"[{event.phase}] {text}", file=self.stream)
            self.last = (event.message, percent // 25)

    def finish(self) -> None:
        if self.open:
            self.stream.write("\n")
            self.open = False
