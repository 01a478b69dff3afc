"""The register stage: the GGUF -> a model in Ollama (blob upload, create, then show and a short chat),
with a Modelfile in the run folder whose TEMPLATE renders the format the model was trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.errors import StageError
from orchestrator.manifest import file_stat
from orchestrator.manifest import fingerprint as _fingerprint
from orchestrator.recipe import TINY_MODEL
from orchestrator.run import RunContext, StageResult

NAME = "register"


def _gguf(run: RunContext) -> Path:
    return Path(run.manifest.stage("gguf").get("outputs", {}).get("gguf") or run.gguf_path)


def fingerprint(run: RunContext) -> str:
    recipe = run.recipe
    return _fingerprint(
        file_stat(_gguf(run)),
        recipe.ollama.model_dump(),
        run.ollama_name,
        recipe.model.resolved_template,
        recipe.model.enable_thinking,
    )


def run(run: RunContext) -> StageResult:
    from orchestrator.ollama.register import register_model
    from orchestrator.ollama.spec import ServeSpec

    path = _gguf(run)
    if not path.is_file():
        raise StageError(f"no GGUF at {path} to register; run the gguf stage first")
    spec = ServeSpec.from_recipe(run.recipe, gguf_details=run.manifest.stage("gguf").get("details"))
    result = register_model(
        spec,
        gguf=path,
        run_dir=run.run_dir,
        on_progress=lambda event: _progress(run, event),
        # A random-weight test model rambles to the token limit; only a real model must answer and stop.
        verify_chat=run.recipe.model.name_or_path != TINY_MODEL,
    )
    run.reporter.info(f"registered {result.name} at {result.host}")
    details = {k: v for k, v in result.to_dict().items() if k != "modelfile"}
    details["model_digest"] = registered_digest(spec.host, result.name)
    return StageResult(inputs={"gguf": str(path)}, outputs={"modelfile": str(result.modelfile)}, details=details)


def registered_digest(host: str | None, name: str) -> str | None:
    """The digest Ollama lists for model ``name`` (``GET /api/tags``), or None when it has no such model."""
    from orchestrator.ollama.client import OllamaClient
    from orchestrator.ollama.names import parse_model_name

    wanted = str(parse_model_name(name)).lower()
    with OllamaClient(host, retries=0) as client:
        for model in client.tags():
            listed = str(model.get("name") or model.get("model") or "")
            if str(parse_model_name(listed)).lower() == wanted:
                return model.get("digest")
    return None


def still_current(run: RunContext, entry: dict[str, Any]) -> bool:
    """The model lives in Ollama, not in the run folder: a finished registration counts only while Ollama
    still lists that model with the digest it had (it may have been deleted, or the host changed)."""
    from orchestrator.errors import OrchestratorError

    details = entry.get("details", {})
    name = details.get("name") or run.ollama_name
    try:
        digest = registered_digest(run.recipe.ollama.host, name)  # the host ServeSpec.from_recipe takes
    except OrchestratorError as exc:
        run.reporter.info(f"cannot check that {name} is still in Ollama ({str(exc).splitlines()[0]})")
        return False
    if digest is None:
        run.reporter.info(f"{name} is no longer in Ollama; registering it again")
    elif digest != details.get("model_digest"):
        run.reporter.info(f"{name} changed in Ollama since it was registered; registering it again")
    return digest is not None and digest == details.get("model_digest")


def _progress(run: RunContext, event: Any) -> None:
    if event.total:
        run.reporter.transfer(event.phase, event.completed or 0, event.total)
    else:
        run.reporter.info(event.message)
