"""From Ollama conversations to a fine-tuned Qwen3 served back by Ollama.

The library, one typed function per stage (each also reachable as ``orchestrator.stages.<stage>``)::

    import orchestrator
    outcome = orchestrator.run("quickstart", until="gguf")    # what `orchestrator run` does
    from orchestrator import export_dataset, train, merge, evaluate, convert, register, report
    from orchestrator import FineTuningManager                 # the original wrapper's shape

Importing this package is cheap: the names above are loaded on first use (PEP 562), and torch,
transformers and llamafactory only inside the functions that need them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS = {
    "load_recipe": ("orchestrator.recipe", "load_recipe"),
    "Recipe": ("orchestrator.recipe", "Recipe"),
    "open_run": ("orchestrator.context", "open_run"),
    "RunContext": ("orchestrator.context", "RunContext"),
    "run_pipeline": ("orchestrator.pipeline", "run_pipeline"),
    "run": ("orchestrator.api", "run"),
    "RunOutcome": ("orchestrator.api", "RunOutcome"),
    "FineTuningManager": ("orchestrator.manager", "FineTuningManager"),
    "export_dataset": ("orchestrator.stages.data", "export"),
    "train": ("orchestrator.stages.train", "train"),
    "TrainResult": ("orchestrator.stages.train", "TrainResult"),
    "merge": ("orchestrator.stages.merge", "merge"),
    "MergeResult": ("orchestrator.stages.merge", "MergeResult"),
    "evaluate": ("orchestrator.stages.eval", "evaluate"),
    "convert": ("orchestrator.stages.gguf", "convert_to_gguf"),
    "convert_to_gguf": ("orchestrator.stages.gguf", "convert_to_gguf"),
    "ServeSpec": ("orchestrator.ollama.spec", "ServeSpec"),
    "register": ("orchestrator.ollama.register", "register_model"),
    "register_model": ("orchestrator.ollama.register", "register_model"),
    "report": ("orchestrator.run_report", "write_report"),
    "OrchestratorError": ("orchestrator.errors", "OrchestratorError"),
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
