"""Ollama Modelfiles: render one from a ``Modelfile`` value, and parse one back (for round-trip tests and
for reading what a run wrote).

The grammar, as Ollama's parser reads it (reference/ollama-api.md): one command per line, names
case-insensitive (FROM, ADAPTER, TEMPLATE, SYSTEM, PARAMETER, MESSAGE, LICENSE, REQUIRES, RENDERER,
PARSER); a value runs to the end of the line, ``"..."`` quotes one line, triple double quotes span lines, and
there are no escape sequences; ``#`` starts a comment only at the start of a line. Ollama's parser
drops characters it does not consider printable (anything but letters, marks, numbers, punctuation,
symbols, spaces, tabs and line breaks), and triple quotes inside a triple-quoted value end it early, so
such values are refused rather than written wrongly.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import UsageError
from orchestrator.ollama.gguf_info import check_gguf_path
from orchestrator.ollama.templates import default_parameters, merge_parameters, ollama_template

if TYPE_CHECKING:
    from orchestrator.ollama.spec import ServeSpec

INT_PARAMETERS = (
    "num_keep",
    "seed",
    "num_predict",
    "top_k",
    "repeat_last_n",
    "num_ctx",
    "num_batch",
    "num_gpu",
    "num_thread",
    "main_gpu",
)
FLOAT_PARAMETERS = (
    "top_p",
    "min_p",
    "typical_p",
    "temperature",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
)
BOOL_PARAMETERS = ("use_mmap",)
LIST_PARAMETERS = ("stop",)
PARAMETERS = INT_PARAMETERS + FLOAT_PARAMETERS + BOOL_PARAMETERS + LIST_PARAMETERS
MESSAGE_ROLES = ("system", "user", "assistant")
COMMANDS = (
    "from",
    "adapter",
    "template",
    "system",
    "parameter",
    "message",
    "license",
    "requires",
    "renderer",
    "parser",
)
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_COMMAND_RE = re.compile(r"^([A-Za-z]+)(?:[ \t]+(.*))?$", re.DOTALL)


@dataclass
class Modelfile:
    """What a Modelfile says. ``from_`` is FROM (a path relative to the Modelfile, or a model name).

    ``parameters`` maps PARAMETER names to values (``stop`` to a list of strings); ``messages`` holds
    ``(role, content)`` pairs; ``license`` one entry per LICENSE command.
    """

    from_: str
    adapters: list[str] = field(default_factory=list)
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[tuple[str, str]] = field(default_factory=list)
    license: list[str] = field(default_factory=list)
    requires: str | None = None
    renderer: str | None = None
    parser: str | None = None

    def render(self) -> str:
        """The Modelfile text (LF line endings). Raises UsageError for a value it cannot represent."""
        if not self.from_.strip():
            raise UsageError("Modelfile: FROM needs a GGUF path or a model name")
        lines = [f"FROM {_line_value('FROM', self.from_)}"]
        lines += [f"ADAPTER {_line_value('ADAPTER', path)}" for path in self.adapters]
        if self.template is not None:
            lines.append(f"TEMPLATE {_block('TEMPLATE', self.template)}")
        if self.system is not None:
            lines.append(f"SYSTEM {_block('SYSTEM', self.system)}")
        for name, value in self.parameters.items():
            lines += [f"PARAMETER {name} {text}" for text in _parameter_texts(name, value)]
        for role, content in self.messages:
            if role not in MESSAGE_ROLES:
                raise UsageError(f"Modelfile: MESSAGE role '{role}' is not one of {', '.join(MESSAGE_ROLES)}")
            lines.append(f"MESSAGE {role} {_block('MESSAGE', content)}")
        lines += [f"LICENSE {_block('LICENSE', text)}" for text in self.license]
        for name in ("requires", "renderer", "parser"):
            value = getattr(self, name)
            if value is not None:
                lines.append(f"{name.upper()} {_line_value(name.upper(), value)}")
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Modelfile:
        """Read a Modelfile; raises UsageError naming the line for anything Ollama would reject."""
        return _parse(text)


# -- building one for a GGUF ---------------------------------------------------------------------


def build_modelfile(spec: ServeSpec, *, gguf: Path, folder: Path | None) -> Modelfile:
    """The Modelfile for ``spec`` with its GGUF, kept in ``folder``: FROM (or, on the adapter route, FROM
    the base model and ADAPTER) relative to it, the TEMPLATE matching training, the default PARAMETERs
    updated with ``spec.parameters``.

    Args:
        spec: what is served (template, thinking, system prompt, parameters, base model).
        gguf: the model GGUF, or the LoRA adapter GGUF when ``spec.base_model`` is set.
        folder: where the Modelfile goes (FROM and ADAPTER paths are relative to it); None when that is
            not known (a Modelfile printed to stdout): the GGUF's absolute path is written.
    """
    defaults = default_parameters(spec.template, spec.enable_thinking, spec.num_ctx)
    mf = Modelfile(
        from_="",
        template=ollama_template(spec.template, spec.enable_thinking),
        system=spec.system,
        parameters=merge_parameters(defaults, dict(spec.parameters)),
    )
    gguf = check_gguf_path(Path(gguf)).resolve()
    path = str(gguf) if folder is None else _relative(gguf, Path(folder).resolve())
    if spec.base_model:
        mf.from_, mf.adapters = spec.base_model, [path]
    else:
        mf.from_ = path
    return mf


def _relative(path: Path, run_dir: Path) -> str:
    """The path as FROM/ADAPTER write it: relative to the Modelfile's folder, starting with ./ or ../"""
    rel = os.path.relpath(path.resolve(), run_dir)
    return rel if rel.startswith("..") else f"./{rel}"


# -- rendering ------------------------------------------------------------------------------------


def _check_characters(command: str, value: str) -> None:
    for char in value:
        if not (char.isprintable() or char in "\n\r\t"):
            raise UsageError(
                f"Modelfile: the {command} value holds the character U+{ord(char):04X}, which Ollama's Modelfile "
                "parser drops; remove it (the HTTP API route registers such values unchanged)"
            )


def _block(command: str, value: str) -> str:
    """A value in triple quotes, which keep every line break and space exactly."""
    _check_characters(command, value)
    if '"""' in value:
        raise UsageError(
            f'Modelfile: the {command} value contains """, which cannot be written inside a Modelfile\'s triple quotes '
            "(it has no escape sequences); change the value"
        )
    return f'"""{value}"""'


def _line_value(command: str, value: str) -> str:
    """A one-line value: bare when it reads back unchanged, else quoted."""
    if "\n" in value or "\r" in value:
        raise UsageError(f"Modelfile: the {command} value must be a single line")
    if value != value.strip() or value.startswith('"'):
        return _block(command, value)
    _check_characters(command, value)
    return value


def _parameter_texts(name: str, value: Any) -> list[str]:
    if name not in PARAMETERS:
        raise UsageError(f"Modelfile: unknown PARAMETER '{name}'; valid names: {', '.join(PARAMETERS)}")
    if name in LIST_PARAMETERS:
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
            raise UsageError(f"Modelfile: PARAMETER {name} must be a string or a list of strings, got {value!r}")
        return [_quoted(name, v) for v in values]
    return [_scalar_text(name, value)]


def _quoted(name: str, value: str) -> str:
    if "\n" in value or "\r" in value or value.startswith('"'):
        return _block(f"PARAMETER {name}", value)
    _check_characters(f"PARAMETER {name}", value)
    return f'"{value}"'


def _scalar_text(name: str, value: Any) -> str:
    if name in BOOL_PARAMETERS:
        if not isinstance(value, bool):
            raise UsageError(f"Modelfile: PARAMETER {name} must be true or false, got {value!r}")
        return "true" if value else "false"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"Modelfile: PARAMETER {name} must be a number, got {value!r}")
    if name in INT_PARAMETERS:
        if isinstance(value, float) and not value.is_integer():
            raise UsageError(f"Modelfile: PARAMETER {name} must be a whole number, got {value!r}")
        return str(int(value))
    return repr(float(value)) if isinstance(value, float) else str(value)


# -- parsing --------------------------------------------------------------------------------------


def _parse(text: str) -> Modelfile:
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    commands: list[tuple[int, str, str]] = []
    index = 0
    while index < len(lines):
        number, line = index + 1, lines[index].rstrip("\r")
        index += 1
        stripped = line.strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        match = _COMMAND_RE.match(stripped)
        if not match or match.group(1).lower() not in COMMANDS:
            raise UsageError(
                f"Modelfile line {number}: unknown command; use one of {', '.join(c.upper() for c in COMMANDS)}"
            )
        name, rest = match.group(1).lower(), (match.group(2) or "").strip(" \t")
        if name in ("parameter", "message"):
            key, *tail = re.split(r"[ \t]+", rest, maxsplit=1)
            rest = tail[0] if tail else ""
            name = f"{name} {key}"
        value, index = _read_value(rest, lines, index, number)
        commands.append((number, name, value))
    return _build(commands)


def _read_value(rest: str, lines: list[str], index: int, number: int) -> tuple[str, int]:
    """The value starting with ``rest``; a triple-quoted one may take the following lines."""
    if rest.startswith('"""'):
        body = rest[3:]
        while not (body.rstrip(" \t").endswith('"""') and len(body.rstrip(" \t")) >= 3):
            if index >= len(lines):
                raise UsageError(f'Modelfile line {number}: a """ quote is never closed')
            body += "\n" + lines[index]
            index += 1
        return body.rstrip(" \t")[:-3], index
    if rest.startswith('"'):
        if len(rest) < 2 or not rest.endswith('"'):
            raise UsageError(f'Modelfile line {number}: a " quote is not closed on its line')
        return rest[1:-1], index
    return rest, index


def _build(commands: list[tuple[int, str, str]]) -> Modelfile:
    values: dict[str, Any] = {"adapters": [], "parameters": {}, "messages": [], "license": []}
    for number, name, value in commands:
        if name == "from":
            values["from_"] = value
        elif name == "adapter":
            values["adapters"].append(value)
        elif name in ("template", "system", "requires", "renderer", "parser"):
            values[name] = value
        elif name == "license":
            values["license"].append(value)
        elif name.startswith("message "):
            role = name.split(" ", 1)[1]
            if role not in MESSAGE_ROLES:
                raise UsageError(f"Modelfile line {number}: MESSAGE role must be one of {', '.join(MESSAGE_ROLES)}")
            values["messages"].append((role, value))
        else:
            _add_parameter(values["parameters"], name.split(" ", 1)[1], value, number)
    if "from_" not in values:
        raise UsageError("Modelfile: no FROM line")
    return Modelfile(**values)


def _add_parameter(parameters: dict[str, Any], name: str, text: str, number: int) -> None:
    try:
        if name in LIST_PARAMETERS:
            parameters.setdefault(name, []).append(text)
        elif name in INT_PARAMETERS:
            parameters[name] = int(text)
        elif name in FLOAT_PARAMETERS:
            parameters[name] = float(text)
        elif name in BOOL_PARAMETERS:
            if text not in _TRUE + _FALSE:
                raise ValueError(text)
            parameters[name] = text in _TRUE
        else:
            raise UsageError(f"Modelfile line {number}: unknown parameter '{name}'")
    except ValueError as exc:
        raise UsageError(f"Modelfile line {number}: invalid value for PARAMETER {name}: {text!r}") from exc
