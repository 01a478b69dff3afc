"""The register stage: the GGUF -> a model in Ollama (blob upload, create, then show and a short chat),
with a Modelfile in the run folder whose TEMPLATE renders the format the model was trained on. After an
evaluation with answers, the registered model answers the same prompts too (eval/served.json)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.context import RunContext, StageResult
from orchestrator.errors import StageError
from orchestrator.manifest import file_digest, file_stat
from orchestrator.manifest import fingerprint as _fingerprint
from orchestrator.recipe import TINY_MODEL

if TYPE_CHECKING:
    from orchestrator.ollama.answers import ServedAnswers

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
        # New eval answers are asked of the served model again (eval/served.json goes with them).
        file_digest(run.run_dir / "eval" / "results.json"),
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
    outputs = {"modelfile": str(result.modelfile)}
    served = _served_answers(run, spec.host, result.name)
    if served is not None:
        outputs["served"] = str(served.path)
        details["served_answers"] = served.answered
    return StageResult(inputs={"gguf": str(path)}, outputs=outputs, details=details)


def _served_answers(run: RunContext, host: str | None, name: str) -> ServedAnswers | None:
    """What the registered model answers to the eval stage's prompts (eval/served.json), when the eval
    stage has answers; whatever goes wrong is reported and recorded, the registration stands."""
    from orchestrator.stages.eval import write_served

    try:
        served = write_served(run, host, name)
    except Exception as exc:  # noqa: BLE001 (a registered model is not undone by its evaluation)
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        run.reporter.info(f"warning: could not ask {name} the eval prompts: {cause}")
        return None
    if served is None:
        return None
    total = len(served.answers)
    if served.error:
        run.reporter.info(f"warning: {name} answered {served.answered} of {total} eval prompts ({served.error})")
    else:
        run.reporter.info(f"{name} answered the {total} eval prompts; in {served.path}")
    return served


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
