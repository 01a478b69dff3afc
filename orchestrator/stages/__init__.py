"""The stages of a run, one module each, in pipeline order.

Each module has ``NAME``, a typed library function that does the work on plain arguments
(``data.export``, ``train.train``, ``merge.merge``, ``gguf.convert_to_gguf``; register uses
``orchestrator.ollama.register.register_model``), and the two functions the pipeline calls:
``fingerprint(run) -> str`` (a hash of everything the stage reads) and ``run(run) -> StageResult``.
Data flows one way: sources -> dataset -> train -> merge -> gguf -> register.
"""

from __future__ import annotations

from orchestrator.stages import data, gguf, merge, register, train

PIPELINE = (data, train, merge, gguf, register)
BY_NAME = {stage.NAME: stage for stage in PIPELINE}

__all__ = ["PIPELINE", "BY_NAME", "data", "train", "merge", "gguf", "register"]
