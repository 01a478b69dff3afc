"""The gguf stage: the merged model (or, for ``serve: adapter``, the LoRA adapter) -> one GGUF file that
carries the chat template the model was trained with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.context import RunContext, StageResult
from orchestrator.errors import StageError
from orchestrator.manifest import file_stat
from orchestrator.manifest import fingerprint as _fingerprint
from orchestrator.stages.train import ADAPTER_FILE

if TYPE_CHECKING:
    from orchestrator.gguf.types import ConvertResult

NAME = "gguf"


def convert_to_gguf(
    source: Path,
    out: Path,
    out_type: str,
    *,
    template: str = "qwen3",
    enable_thinking: bool = True,
    adapter: bool = False,
    base_model_dir: Path | None = None,
    name: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ConvertResult:
    """Convert a merged model folder (or a PEFT adapter folder, ``adapter=True``) to ``out``. A model GGUF
    gets the Jinja chat template of LLaMA-Factory's ``template``/``enable_thinking``, so llama.cpp and
    Ollama prompt it as it was trained."""
    from orchestrator.gguf import convert_adapter, convert_model

    if adapter:
        return convert_adapter(source, out, base_model_dir=base_model_dir, out_type=out_type, on_progress=on_progress)
    from orchestrator.chat_templates import jinja_chat_template

    chat_template = jinja_chat_template(template, enable_thinking)
    return convert_model(source, out, out_type, chat_template=chat_template, on_progress=on_progress, name=name)


def _source(run: RunContext) -> Path:
    return run.adapter_dir if run.recipe.ollama.serve == "adapter" else run.merged_dir


def fingerprint(run: RunContext) -> str:
    recipe = run.recipe
    stats = [file_stat(p) for p in sorted(_source(run).glob("*.safetensors"))]
    return _fingerprint(
        stats,
        recipe.gguf.model_dump(),
        recipe.ollama.serve,
        recipe.model.resolved_template,
        recipe.model.enable_thinking,
        str(run.gguf_path),
        run.ollama_name,  # general.name in the file
    )


def run(run: RunContext) -> StageResult:
    recipe = run.recipe
    adapter = recipe.ollama.serve == "adapter"
    source = _source(run)
    if adapter and not (source / ADAPTER_FILE).is_file():
        raise StageError(f"no adapter in {source} to convert; run the train stage first")
    if not adapter and not any(source.glob("*.safetensors")):
        raise StageError(f"no merged model in {source} to convert; run the merge stage first")
    base = Path(run.model_path) if adapter and Path(run.model_path).is_dir() else None
    result = convert_to_gguf(
        source,
        run.gguf_path,
        recipe.gguf.type,
        template=recipe.model.resolved_template,
        enable_thinking=recipe.model.enable_thinking,
        adapter=adapter,
        base_model_dir=base,
        name=run.ollama_name,
        on_progress=lambda done, total: run.reporter.transfer("converting", done, total),
    )
    for note in result.notes:
        run.reporter.info(note)
    route = result.kquant_line()
    if route:
        run.reporter.info(route)
    run.reporter.info(f"wrote {result.path} ({result.file_type}, {result.bytes_written / 2**20:.1f} MiB)")
    details = {k: v for k, v in result.to_dict().items() if k != "path"}
    return StageResult(inputs={"source": str(source)}, outputs={"gguf": str(result.path)}, details=details)
