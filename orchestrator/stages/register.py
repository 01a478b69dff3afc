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
    return StageResult(inputs={"gguf": str(path)}, outputs={"modelfile": str(result.modelfile)}, details=details)


def _progress(run: RunContext, event: Any) -> None:
    if event.total:
        run.reporter.transfer(event.phase, event.completed or 0, event.total)
    else:
        run.reporter.info(event.message)
