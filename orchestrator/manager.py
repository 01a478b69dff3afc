"""``FineTuningManager``: the chain in the shape of the original Ollama wrapper's manager, for code written
against it. Each method is a thin call into the pipeline (``orchestrator.run``'s stages, on one recipe
whose data source is the memory store), so the manifest, the skipping of finished stages and the report
are the same as from ``orchestrator run``::

    from orchestrator import FineTuningManager

    manager = FineTuningManager("quickstart", db="data/ollama_memory.db")
    manager.load_training_data_from_memory(session_ids=["work"])
    manager.train()
    gguf = manager.export_to_gguf()
    manager.register()                       # needs a running Ollama
    print(manager.chat("Hello!").content)    # the tuned model answers, recorded in the store
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.api import RunOutcome
from orchestrator.context import Reporter, RunContext, open_run


class FineTuningManager:
    """One run of a recipe, fed from an ``orchestrator chat`` memory store (``db``)."""

    def __init__(
        self,
        recipe: str | Path | None = None,
        *,
        db: str | Path | None = None,
        host: str | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        from orchestrator.memory import DEFAULT_DB

        self.db = Path(DEFAULT_DB if db is None else db)
        self.context: RunContext = open_run(recipe, reporter)
        if host is not None:
            self._set("ollama", host=host)

    @property
    def run_dir(self) -> Path:
        return self.context.run_dir

    @property
    def model_name(self) -> str:
        """The name the tuned model is registered under in Ollama."""
        return self.context.ollama_name

    def load_training_data_from_memory(self, session_ids: list[str] | None = None) -> dict[str, Any]:
        """Export the store's conversations (only ``session_ids`` when given) as the run's dataset; the
        export report (read, written, skipped, redacted, tokens) as a dict."""
        from orchestrator.recipe_sources import MemorySource

        source = MemorySource(type="memory", path=str(self.db), sessions=list(session_ids) if session_ids else None)
        self.context.recipe.data.sources = [source]
        return self._stage("data", force=False).stages["data"]["details"]

    def train(self, *, force: bool = False) -> dict[str, Any]:
        """Train the LoRA adapter on the exported dataset: steps, first and last loss."""
        return self._stage("train", force=force).stages["train"]["details"]

    def export_to_gguf(self, quantization: str | None = None, *, force: bool = False) -> Path:
        """Merge the adapter and convert the merged model to GGUF (``quantization``: the recipe's
        ``gguf.type`` when None, e.g. ``"q4_k_m"``); the GGUF's path."""
        if quantization is not None:
            self._set("gguf", type=quantization)
        self._stage("merge", force=force)
        outcome = self._stage("gguf", force=force or quantization is not None)
        path = outcome.output("gguf", "gguf")
        assert path is not None  # the gguf stage records its file when it finishes
        return path

    def evaluate(self, *, force: bool = False) -> dict[str, Any]:
        """Held-out loss and answers of the base and the tuned model (the recipe's eval stage)."""
        return self._stage("eval", force=force).stages["eval"]["details"]

    def register(self, name: str | None = None, *, force: bool = False) -> str:
        """Register the GGUF in Ollama (as ``name``, else the recipe's ``ollama.name``); the name."""
        if name is not None:
            self._set("ollama", name=name)
        self._stage("register", force=force or name is not None)
        return self.model_name

    def chat(self, message: str, *, session_id: str | None = None, **options: Any) -> Any:
        """Ask the tuned model in Ollama; the turn is recorded in the memory store like any chat
        (``orchestrator.chat.OllamaChat``: ``.content``, ``.thinking``)."""
        from orchestrator.chat import OllamaChat

        host = self.context.recipe.ollama.host
        with OllamaChat(self.model_name, session_id=session_id, db=self.db, host=host, **options) as chat:
            return chat.chat(message)

    def report(self) -> Path:
        """Write the run report again; report.html's path."""
        from orchestrator.run_report import write_report

        return write_report(self.run_dir).html

    def _stage(self, name: str, *, force: bool) -> RunOutcome:
        from orchestrator.pipeline import run_pipeline

        ctx = self.context
        ctx.recipe.stages = [name]
        result = run_pipeline(ctx, force=force)
        return RunOutcome.of(ctx, result.run_dir, result.manifest)

    def _set(self, section: str, **values: Any) -> None:
        """Change keys of a recipe section, checked as the recipe file's would be."""
        from pydantic import ValidationError

        from orchestrator.errors import UsageError

        old = getattr(self.context.recipe, section)
        try:
            setattr(self.context.recipe, section, type(old).model_validate({**old.model_dump(), **values}))
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in (section, *problem["loc"]))
            raise UsageError(f"{where}: {problem['msg']}") from None
