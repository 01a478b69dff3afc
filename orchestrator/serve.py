"""The serving stages of a run: gguf (merged model or adapter -> GGUF) and register (-> Ollama).

Both read what earlier stages wrote into the run folder and what the recipe says; the GGUF carries
the chat template the model was trained with, and the Modelfile's TEMPLATE renders the same format.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import StageError
from orchestrator.recipe import TINY_MODEL

if TYPE_CHECKING:
    from orchestrator.pipeline import RunContext, StageResult


def gguf_path(ctx: RunContext) -> Path:
    """Where the gguf stage writes: gguf/<name>-<type>.gguf, or gguf/adapter-<type>.gguf for serve: adapter."""
    if ctx.recipe.ollama.serve == "adapter":
        return ctx.run_dir / "gguf" / "adapter-f16.gguf"
    return ctx.run_dir / "gguf" / f"{ctx.recipe.name}-{ctx.recipe.gguf.type}.gguf"


def chat_template(ctx: RunContext) -> str:
    from orchestrator.chat_templates import jinja_chat_template

    return jinja_chat_template(ctx.recipe.model.resolved_template, ctx.recipe.model.enable_thinking)


def stage_gguf(ctx: RunContext) -> StageResult:
    from orchestrator.gguf import convert_adapter, convert_model
    from orchestrator.pipeline import StageResult

    out = gguf_path(ctx)

    def progress(done: int, total: int) -> None:
        ctx.reporter.transfer("converting", done, total)

    if ctx.recipe.ollama.serve == "adapter":
        if not (ctx.adapter_dir / "adapter_model.safetensors").is_file():
            raise StageError(f"no adapter in {ctx.adapter_dir} to convert; run the train stage first")
        base = ctx.model_path if Path(ctx.model_path).is_dir() else None
        result = convert_adapter(ctx.adapter_dir, out, base_model_dir=base, on_progress=progress)
        source = ctx.adapter_dir
    else:
        if not any(ctx.merged_dir.glob("*.safetensors")):
            raise StageError(f"no merged model in {ctx.merged_dir} to convert; run the merge stage first")
        result = convert_model(
            ctx.merged_dir,
            out,
            ctx.recipe.gguf.type,
            chat_template=chat_template(ctx),
            on_progress=progress,
            name=ctx.ollama_name,
        )
        source = ctx.merged_dir
    for note in result.notes:
        ctx.reporter.info(note)
    if result.kquant_route:
        route = "llama-quantize, here" if result.kquant_route == "llama-quantize" else "Ollama, at registration"
        ctx.reporter.info(f"{ctx.recipe.gguf.type}: quantized by {route}")
    ctx.reporter.info(f"wrote {result.path} ({result.file_type}, {result.bytes_written / 2**20:.1f} MiB)")
    details = {k: v for k, v in result.to_dict().items() if k != "path"}
    return StageResult(inputs={"source": str(source)}, outputs={"gguf": str(result.path)}, details=details)


def stage_register(ctx: RunContext) -> StageResult:
    from orchestrator.ollama.register import register_model
    from orchestrator.pipeline import StageResult

    gguf_entry = ctx.manifest.stage("gguf")
    path = Path(gguf_entry.get("outputs", {}).get("gguf") or gguf_path(ctx))
    if not path.is_file():
        raise StageError(f"no GGUF at {path} to register; run the gguf stage first")
    spec, model = ctx.recipe.ollama, ctx.recipe.model
    adapter_route = spec.serve == "adapter"
    result = register_model(
        name=ctx.ollama_name,
        run_dir=ctx.run_dir,
        gguf_path=None if adapter_route else path,
        adapter_path=path if adapter_route else None,
        base_model=spec.base_model if adapter_route else None,
        template=model.resolved_template,
        enable_thinking=model.enable_thinking,
        system=spec.system,
        num_ctx=spec.num_ctx,
        parameters=spec.parameters,
        quantize=gguf_entry.get("details", {}).get("ollama_quantize"),
        host=spec.host,
        on_progress=lambda p: _register_progress(ctx, p),
        # A random-weight test model rambles to the token limit; only a real model must answer and stop.
        verify_chat=ctx.recipe.model.name_or_path != TINY_MODEL,
    )
    ctx.reporter.info(f"registered {result.name} at {result.host}; it answered: {result.answer[:80]!r}")
    details = {k: v for k, v in result.to_dict().items() if k != "modelfile"}
    return StageResult(inputs={"gguf": str(path)}, outputs={"modelfile": str(result.modelfile)}, details=details)


def _register_progress(ctx: RunContext, event: Any) -> None:
    if event.total:
        ctx.reporter.transfer(event.phase, event.completed or 0, event.total)
    else:
        ctx.reporter.info(event.message)
