"""The register stage's work: serve a tuned GGUF in Ollama and check that it answers.

``register_model`` writes ``<run_dir>/Modelfile`` first (so ``ollama create NAME -f <run_dir>/Modelfile``
works by hand too), checks that Ollama answers, then over the HTTP API: uploads the GGUF as a blob
(skipped when Ollama has it), creates the model (asking Ollama to quantize as ``quantize.quantize_request``
decides from the spec and the GGUF's header), and verifies it (``verify.verify``): ``show`` must report
the expected family, quantization, parameters and template, and a short chat must return an answer that
stops. The adapter route creates ``FROM <base model>`` with the LoRA GGUF as ``ADAPTER``. Every step is safe
to repeat, so a rerun picks up where a failure stopped.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import OllamaError, UsageError
from orchestrator.fsutil import write_text
from orchestrator.ollama.gguf_info import GGUFInfo, read_gguf_info
from orchestrator.ollama.hosts import is_local_host
from orchestrator.ollama.modelfile import Modelfile, build_modelfile
from orchestrator.ollama.quantize import quantize_request
from orchestrator.ollama.results import Emit, RegisterProgress, RegisterResult
from orchestrator.ollama.templates import thinks
from orchestrator.ollama.verify import verify
from orchestrator.procs import run_logged

if TYPE_CHECKING:
    from orchestrator.ollama.blobs import BlobUpload
    from orchestrator.ollama.client import OllamaClient
    from orchestrator.ollama.spec import ServeSpec

log = logging.getLogger(__name__)

MODELFILE = "Modelfile"


@dataclass
class RegisterPlan:
    """Everything decided before the network is used: the Modelfile, the create request, what to expect."""

    name: str
    modelfile: Modelfile
    modelfile_path: Path
    gguf: GGUFInfo
    blob_field: str  # "files" (a model GGUF) or "adapters" (a LoRA adapter GGUF)
    create: dict[str, Any]
    argv: list[str]  # the `ollama create` command to run later (or now, with use_cli)
    command: str
    expected_family: str | None
    expected_quantization: str | None
    thinks: bool


def register_model(
    spec: ServeSpec,
    *,
    gguf: Path,
    run_dir: Path,
    on_progress: Emit | None = None,
    use_cli: bool = False,
    verify_chat: bool = True,
) -> RegisterResult:
    """Register a GGUF (or base model + GGUF adapter) in Ollama and verify it; see the module docstring.

    Args:
        spec: what is served and where (name, host, template, parameters, quantize, base model).
        gguf: the model GGUF, or the LoRA adapter GGUF (``general.type=adapter``) when
            ``spec.base_model`` is set.
        run_dir: the run folder; ``run_dir/Modelfile`` is written with FROM relative to it.
        on_progress: called with ``RegisterProgress`` events (bytes hashed and uploaded, statuses).
        use_cli: create with ``ollama create -f`` (the binary must be on PATH and the host local).
        verify_chat: end with a short chat that must answer and stop.

    Raises:
        UsageError: bad name, host or inputs, or a Modelfile value that cannot be written (exit 2).
        OllamaError: Ollama unreachable or refusing (exit 1); the message names the host, the cause
            and the ``ollama create ... -f <run_dir>/Modelfile`` command to run later.
        StageError: the model was created but does not check out (exit 1).
    """
    from orchestrator.ollama.client import OllamaClient

    if not spec.name:
        raise UsageError("registering needs an Ollama model name: pass --name or set ollama.name in the recipe")
    emit = on_progress or (lambda event: None)
    with OllamaClient(spec.host) as client:  # the host is checked here, before anything is written
        plan = plan_registration(spec, gguf=Path(gguf), run_dir=Path(run_dir))
        write_text(plan.modelfile_path, plan.modelfile.render())
        log.info("wrote %s", plan.modelfile_path)
        method = "cli" if use_cli else "api"
        result = RegisterResult(plan.name, client.base_url, plan.modelfile_path, plan.command, method)
        binary = _ollama_binary(client.base_url) if use_cli else None
        try:
            _reach(client)  # before hashing or uploading gigabytes
            if binary:
                result.statuses = _create_with_cli(binary, plan, client.base_url, emit)
            else:
                result.blobs = [_upload(client, plan.gguf, emit)]
                result.statuses = _create(client, plan, result.blobs[0], emit)
            verify(client, plan, result, emit, verify_chat)
        except OllamaError as exc:
            raise OllamaError(f"{exc}; to register later: {plan.command}") from exc
    return result


# -- planning (no network) ----------------------------------------------------------------------------


def plan_registration(spec: ServeSpec, *, gguf: Path, run_dir: Path) -> RegisterPlan:
    """The Modelfile and the create request for ``spec``; reads the GGUF's header, sends nothing."""
    run_dir = run_dir.resolve()
    mf = build_modelfile(spec, gguf=gguf, folder=run_dir)
    info = read_gguf_info(gguf, expect_adapter=spec.adapter_route)
    create: dict[str, Any] = {"template": mf.template, "parameters": mf.parameters}
    if mf.system is not None:
        create["system"] = mf.system
    wanted = quantize_request(spec, info)
    if spec.adapter_route:
        create["from_"] = spec.base_model
        quantization = None  # the base model's, whatever it is
    else:
        if wanted:
            create["quantize"] = wanted
        quantization = wanted.upper() if wanted else info.file_type
    modelfile_path = run_dir / MODELFILE
    command = create_command(spec.name, modelfile_path, wanted)
    return RegisterPlan(
        name=spec.name,
        modelfile=mf,
        modelfile_path=modelfile_path,
        gguf=info,
        blob_field="adapters" if spec.adapter_route else "files",
        create=create,
        argv=command,
        command=shlex.join(command),
        expected_family=info.architecture,
        expected_quantization=quantization,
        thinks=thinks(spec.template, spec.enable_thinking),
    )


def create_command(name: str, modelfile: Path | str, quantize: str | None) -> list[str]:
    """``ollama create NAME -f MODELFILE [--quantize TYPE]``: a Modelfile cannot ask for the quantization."""
    return ["ollama", "create", name, "-f", str(modelfile)] + (["--quantize", quantize] if quantize else [])


# -- talking to Ollama --------------------------------------------------------------------------------


def _reach(client: OllamaClient) -> None:
    from orchestrator.ollama.client import OllamaConnectionError

    try:
        version = client.version()
    except OllamaConnectionError as exc:
        raise OllamaError(
            f"cannot reach Ollama at {client.base_url} ({_cause(exc)}): start it with `ollama serve` "
            "or point --host / OLLAMA_HOST at it, then rerun"
        ) from exc
    log.info("Ollama %s at %s", version, client.base_url)


def _cause(exc: BaseException | None) -> str:
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


def _upload(client: OllamaClient, info: GGUFInfo, emit: Emit) -> BlobUpload:
    def hashed(done: int, total: int) -> None:
        emit(RegisterProgress("hash", f"hashing {info.path.name}", done, total))

    def sent(done: int, total: int) -> None:
        emit(RegisterProgress("upload", f"uploading {info.path.name}", done, total))

    blob = client.push_blob(info.path, on_progress=sent, on_hash_progress=hashed)
    state = "uploaded" if blob.uploaded else "already on the server, not uploaded again"
    emit(RegisterProgress("upload", f"{info.path.name}: {blob.digest} {state}"))
    return blob


def _create(client: OllamaClient, plan: RegisterPlan, blob: BlobUpload, emit: Emit) -> list[str]:
    request = {**plan.create, plan.blob_field: {plan.gguf.path.name: blob.digest}}

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


def _create_with_cli(binary: str, plan: RegisterPlan, host: str, emit: Emit) -> list[str]:
    """``ollama create NAME -f Modelfile`` through the local binary; its output goes to logs/ollama-create.log."""
    log_path = plan.modelfile_path.parent / "logs" / "ollama-create.log"
    emit(RegisterProgress("create", f"running {plan.command}"))
    env = {**os.environ, "OLLAMA_HOST": host}
    code = run_logged([binary, *plan.argv[1:]], log_path, env=env, cwd=plan.modelfile_path.parent, poll_seconds=0.2)
    if code != 0:
        lines = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        raise OllamaError(f"`ollama create` failed at {host} ({lines[-1] if lines else code}); see {log_path}")
    return ["success"]
