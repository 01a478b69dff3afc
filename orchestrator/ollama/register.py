"""The register stage: serve a tuned GGUF in Ollama and check that it answers.

``register_model`` writes ``<run_dir>/Modelfile`` first (so ``ollama create NAME -f <run_dir>/Modelfile``
works by hand too), then over the HTTP API: uploads the GGUF as a blob (skipped when Ollama has it),
creates the model (asking Ollama to quantize when the recipe wants a type the GGUF is not), and
verifies it: ``show`` must report the expected family, quantization, parameters and template, and a
short chat must return an answer that stops. The adapter route creates ``FROM <base model>`` with the
LoRA GGUF as ``ADAPTER``. Every step is safe to repeat, so a rerun picks up where a failure stopped.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from orchestrator.errors import OllamaError, StageError, UsageError
from orchestrator.fsutil import write_text
from orchestrator.ollama.modelfile import Modelfile, build_modelfile
from orchestrator.ollama.templates import thinks

log = logging.getLogger(__name__)

MODELFILE = "Modelfile"
# What Ollama's create can quantize to, and from which source types (reference/ollama-api.md).
OLLAMA_QUANTIZE = ("F32", "F16", "BF16", "Q8_0", "Q4_K_S", "Q4_K_M")
QUANTIZABLE_SOURCES = ("F16", "BF16", "F32")
VERIFY_PROMPT = "Say hello in one short sentence."
VERIFY_NUM_PREDICT = 512
_NAME_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"


@dataclass
class RegisterProgress:
    """One progress event: ``phase`` is hash, upload, create or verify; bytes in ``completed``/``total``."""

    phase: str
    message: str
    completed: int | None = None
    total: int | None = None


@dataclass
class GGUFInfo:
    path: Path
    architecture: str
    file_type: str  # as Ollama names it: F16, Q8_0, Q4_K_M... ("unknown" when the key is missing)
    kind: str  # general.type: "model" or "adapter"


@dataclass
class RegisterResult:
    """What ``register_model`` did: blobs (digest, size, uploaded or skipped), create statuses, and checks."""

    name: str
    host: str
    modelfile: Path
    command: str
    method: str
    blobs: list[Any] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    capabilities: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    answer: str = ""
    done_reason: str = ""

    @property
    def digests(self) -> dict[str, str]:
        return {str(b.path): b.digest for b in self.blobs}

    @property
    def skipped(self) -> list[str]:
        """Digests of blobs Ollama already had (not uploaded again)."""
        return [b.digest for b in self.blobs if not b.uploaded]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["modelfile"] = str(self.modelfile)
        data["blobs"] = [{**asdict(b), "path": str(b.path)} for b in self.blobs]
        return data


@dataclass
class _Plan:
    name: str
    modelfile: Modelfile
    modelfile_path: Path
    uploads: list[GGUFInfo]
    create: dict[str, Any]
    command: str
    expected_family: str | None
    expected_quantization: str | None
    thinks: bool


def register_model(
    *,
    name: str,
    run_dir: Path,
    gguf_path: Path | None,
    adapter_path: Path | None = None,
    base_model: str | None = None,
    template: str,
    enable_thinking: bool,
    system: str | None = None,
    num_ctx: int | None = None,
    parameters: dict[str, Any] | None = None,
    quantize: str | None = None,
    host: str | None = None,
    on_progress: Callable[[RegisterProgress], None] | None = None,
    use_cli: bool = False,
    verify_chat: bool = True,
) -> RegisterResult:
    """Register a GGUF (or base model + GGUF adapter) in Ollama and verify it; see the module docstring.

    Args:
        name: the Ollama model name (``[namespace/]model[:tag]``).
        run_dir: the run folder; ``run_dir/Modelfile`` is written with FROM relative to it.
        gguf_path: the merged model GGUF (None for the adapter route).
        adapter_path, base_model: the adapter route: a LoRA GGUF (``general.type=adapter``) on an
            Ollama model.
        template, enable_thinking: LLaMA-Factory's template and ``enable_thinking`` used in training.
        system, num_ctx, parameters: SYSTEM, ``num_ctx`` and PARAMETER overrides (from the recipe).
        quantize: the GGUF type the recipe asks for; Ollama quantizes when the GGUF is another type.
        host: the server (default ``$OLLAMA_HOST``, then 127.0.0.1:11434).
        on_progress: called with ``RegisterProgress`` events (bytes hashed and uploaded, statuses).
        use_cli: create with ``ollama create -f`` (the binary must be on PATH and the host local).
        verify_chat: end with a short chat that must answer and stop.

    Raises:
        UsageError: bad name or inputs, or a Modelfile value that cannot be written (exit 2).
        OllamaError: Ollama unreachable or refusing (exit 1); the message names the host, the cause
            and the ``ollama create ... -f <run_dir>/Modelfile`` command to run later.
        StageError: the model was created but does not check out (exit 1).
    """
    from orchestrator.ollama.client import OllamaClient

    emit = on_progress or (lambda event: None)
    sources = {"gguf_path": gguf_path, "adapter_path": adapter_path, "base_model": base_model}
    fmt = {"template": template, "enable_thinking": enable_thinking, "system": system, "num_ctx": num_ctx}
    plan = _plan(name, Path(run_dir), quantize, sources, {**fmt, "parameters": parameters})
    write_text(plan.modelfile_path, plan.modelfile.render())
    log.info("wrote %s", plan.modelfile_path)
    with OllamaClient(host) as client:
        result = RegisterResult(
            plan.name, client.base_url, plan.modelfile_path, plan.command, "cli" if use_cli else "api"
        )
        binary = _ollama_binary(client.base_url) if use_cli else None
        try:
            _reach(client)
            if binary:
                result.statuses = _create_with_cli(binary, plan, client.base_url, emit)
            else:
                result.blobs = [_upload(client, info, emit) for info in plan.uploads]
                result.statuses = _create(client, plan, result.blobs, emit)
            _verify(client, plan, result, emit, verify_chat)
        except OllamaError as exc:
            raise OllamaError(f"{exc}; to register later: {plan.command}") from exc
    return result


# -- planning (no network) ----------------------------------------------------------------------------


def _plan(name: str, run_dir: Path, quantize: str | None, sources: dict[str, Any], fmt: dict[str, Any]) -> _Plan:
    check_model_name(name)
    run_dir = run_dir.resolve()
    mf = build_modelfile(folder=run_dir, **sources, **fmt)
    create: dict[str, Any] = {"template": mf.template, "parameters": mf.parameters}
    if mf.system is not None:
        create["system"] = mf.system
    wanted = None
    if sources["adapter_path"] is not None:
        info = read_gguf_info(Path(sources["adapter_path"]), expect_adapter=True)
        create.update({"from_": mf.from_, "adapters": {info.path.name: info}})
        family, quantization = info.architecture, None
        if quantize:
            log.info("quantize %s ignored: the adapter route keeps the base model %s as it is", quantize, mf.from_)
    else:
        info = read_gguf_info(Path(sources["gguf_path"]), expect_adapter=False)
        wanted = _quantize_request(info, quantize.upper() if quantize else None)
        create["files"] = {info.path.name: info}
        if wanted:
            create["quantize"] = wanted
        family, quantization = info.architecture, wanted or info.file_type
    modelfile_path = run_dir / MODELFILE
    command = ["ollama", "create", name, "-f", str(modelfile_path)] + (["--quantize", wanted] if wanted else [])
    thinking = thinks(fmt["template"], fmt["enable_thinking"])
    return _Plan(name, mf, modelfile_path, [info], create, shlex.join(command), family, quantization, thinking)


def check_model_name(name: str) -> None:
    """Ollama's model names: ``[host/][namespace/]model[:tag]`` of letters, digits, ``_``, ``.``, ``-``."""
    path, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "")
    parts = path.split("/")
    ok = (
        bool(name)
        and len(parts) <= 3
        and all(re.fullmatch(r"[A-Za-z0-9_.:-]+", p) for p in parts[:-1])
        and re.fullmatch(_NAME_PART, parts[-1]) is not None
        and (not tag or re.fullmatch(_NAME_PART, tag) is not None)
    )
    if not ok:
        raise UsageError(
            f"'{name}' is not a valid Ollama model name; use [namespace/]model[:tag] of letters, digits, '_', '.', '-'"
        )


def _quantize_request(info: GGUFInfo, wanted: str | None) -> str | None:
    """The ``quantize`` to send: None when the GGUF already is that type."""
    if not wanted or wanted == info.file_type:
        return None
    if wanted not in OLLAMA_QUANTIZE:
        raise UsageError(
            f"{info.path.name} is {info.file_type} and Ollama cannot quantize to {wanted} (it offers "
            f"{', '.join(OLLAMA_QUANTIZE)}); produce {wanted} locally with llama-quantize or pick one of those"
        )
    if info.file_type not in QUANTIZABLE_SOURCES:
        raise UsageError(
            f"{info.path.name} is {info.file_type}; Ollama quantizes only F16, BF16 or F32 GGUFs to {wanted}: "
            "convert to f16 (gguf.type: f16) and register again"
        )
    return wanted


def read_gguf_info(path: Path, *, expect_adapter: bool | None = None) -> GGUFInfo:
    """Architecture, file type and kind from a GGUF's header (read with the gguf package)."""
    if not path.is_file():
        raise UsageError(f"GGUF not found: {path}; run the gguf stage first (or pass the right path)")
    import gguf

    try:
        fields = gguf.GGUFReader(str(path)).fields
    except Exception as exc:  # any decoding failure: the file is unusable
        raise StageError(f"{path} is not a readable GGUF ({exc}); rerun the gguf stage to write it again") from exc

    def value(key: str) -> Any:
        return fields[key].contents() if key in fields else None

    file_type = value(gguf.Keys.General.FILE_TYPE)
    try:
        type_name = gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except (TypeError, ValueError):
        type_name = "unknown"
    info = GGUFInfo(
        path, str(value(gguf.Keys.General.ARCHITECTURE) or ""), type_name, str(value(gguf.Keys.General.TYPE) or "model")
    )
    if expect_adapter is True and info.kind != "adapter":
        raise UsageError(f"{path} is not a LoRA adapter GGUF (general.type is '{info.kind}', not 'adapter')")
    if expect_adapter is False and info.kind == "adapter":
        raise UsageError(f"{path} is a LoRA adapter GGUF; register it with a base model (the adapter route)")
    return info


# -- talking to Ollama --------------------------------------------------------------------------------


def _reach(client: Any) -> None:
    from orchestrator.ollama.client import OllamaConnectionError

    try:
        version = client.version()
    except OllamaConnectionError as exc:
        raise OllamaError(
            f"cannot reach Ollama at {client.base_url} ({_cause(exc)}): start it with `ollama serve` "
            "or point --host / OLLAMA_HOST at it, then rerun"
        ) from exc
    log.info("Ollama %s at %s", version, client.base_url)


def _cause(exc: BaseException) -> str:
    """A few words for why a connection failed, from the chain of exceptions under ``exc``."""
    text = ""
    while exc is not None and len(text) < 2000:
        text += f" {exc}"
        exc = exc.__cause__ or exc.__context__
    for needle, words in (
        ("refused", "connection refused"),
        ("Name or service not known", "unknown host name"),
        ("nodename nor servname", "unknown host name"),
        ("timed out", "timed out"),
        ("reset by peer", "connection reset"),
    ):
        if needle in text:
            return words
    return "no answer"


def _upload(client: Any, info: GGUFInfo, emit: Callable[[RegisterProgress], None]) -> Any:
    def hashed(done: int, total: int) -> None:
        emit(RegisterProgress("hash", f"hashing {info.path.name}", done, total))

    def sent(done: int, total: int) -> None:
        emit(RegisterProgress("upload", f"uploading {info.path.name}", done, total))

    blob = client.push_blob(info.path, on_progress=sent, on_hash_progress=hashed)
    state = "uploaded" if blob.uploaded else "already on the server, not uploaded again"
    emit(RegisterProgress("upload", f"{info.path.name}: {blob.digest} {state}"))
    return blob


def _create(client: Any, plan: _Plan, blobs: list[Any], emit: Callable[[RegisterProgress], None]) -> list[str]:
    digests = {blob.path: blob.digest for blob in blobs}
    request = dict(plan.create)
    for key in ("files", "adapters"):
        if key in request:
            request[key] = {file: digests[info.path] for file, info in request[key].items()}

    def progress(line: dict[str, Any]) -> None:
        emit(RegisterProgress("create", str(line.get("status", "")), line.get("completed"), line.get("total")))

    lines = client.create(plan.name, on_progress=progress, **request)
    return [str(line.get("status", "")) for line in lines]


def _ollama_binary(host: str) -> str:
    """The ollama binary, for a local host only (``ollama create -f`` hands the server local paths)."""
    binary = shutil.which("ollama")
    if binary is None:
        raise UsageError("the ollama binary is not on PATH; install Ollama or register over the HTTP API")
    if not is_local_host(host):
        raise UsageError(f"`ollama create -f` reads the GGUF from this machine; {host} is not local, use the HTTP API")
    return binary


def _create_with_cli(binary: str, plan: _Plan, host: str, emit: Callable[[RegisterProgress], None]) -> list[str]:
    """``ollama create NAME -f Modelfile`` through the local binary; its output goes to logs/ollama-create.log."""
    args = shlex.split(plan.command)
    args[0] = binary
    log_path = plan.modelfile_path.parent / "logs" / "ollama-create.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    emit(RegisterProgress("create", f"running {plan.command}"))
    with open(log_path, "w", encoding="utf-8") as log_file:
        done = subprocess.run(
            args,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OLLAMA_HOST": host},
            cwd=plan.modelfile_path.parent,
            check=False,
        )
    if done.returncode != 0:
        lines = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        raise OllamaError(
            f"`ollama create` failed at {host} ({lines[-1] if lines else done.returncode}); see {log_path}"
        )
    return ["success"]


def is_local_host(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "127.0.0.1", "::1", "0.0.0.0", "::", "") or host.startswith("127.")


# -- verification ---------------------------------------------------------------------------------------


def _verify(client: Any, plan: _Plan, result: RegisterResult, emit: Callable, chat: bool) -> None:
    emit(RegisterProgress("verify", f"checking {plan.name} with /api/show"))
    shown = client.show(plan.name)
    result.details = dict(shown.get("details") or {})
    result.capabilities = list(shown.get("capabilities") or [])
    result.parameters = parse_show_parameters(str(shown.get("parameters") or ""))
    where = f"{plan.name} on {client.base_url}"
    _expect(where, "family", plan.expected_family, result.details.get("family"))
    _expect(where, "quantization level", plan.expected_quantization, result.details.get("quantization_level"))
    if shown.get("template") != plan.modelfile.template:
        raise StageError(f"{where} does not use the TEMPLATE sent: Ollama kept another one; run `{plan.command}`")
    if plan.modelfile.system is not None:
        _expect(where, "system prompt", plan.modelfile.system, shown.get("system"))
    for key, wanted in plan.modelfile.parameters.items():
        got = result.parameters.get(key)
        same = set(wanted) <= set(got or []) if key == "stop" else _same_number(wanted, got)
        if not same:
            raise StageError(f"{where} has parameter {key} = {got!r}, expected {wanted!r}; run `{plan.command}`")
    needed = {"completion", "tools"} | ({"thinking"} if plan.thinks else set())
    if not needed <= set(result.capabilities) or (not plan.thinks and "thinking" in result.capabilities):
        raise StageError(
            f"{where} reports capabilities {sorted(result.capabilities)}, expected {sorted(needed)}: Ollama is not "
            "using the TEMPLATE (a GGUF chat template may have won); check the GGUF's tokenizer.chat_template"
        )
    if chat:
        _verify_chat(client, plan, result, emit)


def _expect(where: str, what: str, wanted: Any, got: Any) -> None:
    if wanted is not None and got != wanted:
        raise StageError(f"{where} reports {what} {got!r}, expected {wanted!r}; check the GGUF and register again")


def _same_number(wanted: Any, got: Any) -> bool:
    try:
        return abs(float(wanted) - float(got)) < 1e-6
    except (TypeError, ValueError):
        return wanted == got


def _verify_chat(client: Any, plan: _Plan, result: RegisterResult, emit: Callable) -> None:
    emit(RegisterProgress("verify", f"asking {plan.name}: {VERIFY_PROMPT}"))
    content, final = [], {}
    messages = [{"role": "user", "content": VERIFY_PROMPT}]
    for chunk in client.chat(plan.name, messages, think=False, options={"num_predict": VERIFY_NUM_PREDICT}):
        content.append((chunk.get("message") or {}).get("content") or "")
        final = chunk
    result.answer = "".join(content).strip()
    result.done_reason = str(final.get("done_reason") or "")
    where = f"{plan.name} on {client.base_url}"
    if not result.answer:
        raise StageError(f"{where} answered nothing to a short chat; check the training data and the TEMPLATE")
    if result.done_reason != "stop":
        raise StageError(
            f"{where} did not stop (done_reason {result.done_reason or 'missing'} after {VERIFY_NUM_PREDICT} tokens): "
            "check the stop parameters and that the TEMPLATE matches the training format"
        )


def parse_show_parameters(text: str) -> dict[str, Any]:
    """``show``'s ``parameters`` text (``name value`` lines, values in Go syntax) as a dict; ``stop`` is a list."""
    params: dict[str, Any] = {}
    for line in text.splitlines():
        key, _, raw = line.strip().partition(" ")
        raw = raw.strip()
        if not key:
            continue
        value: Any
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw.strip('"')
        if key == "stop":
            params.setdefault("stop", []).append(value)
        else:
            params[key] = value
    return params
