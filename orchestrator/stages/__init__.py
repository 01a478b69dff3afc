"""The stages of a run, one module each, in pipeline order.

Each module has ``NAME``, a typed library function that does the work on plain arguments
(``data.export``, ``train.train``, ``merge.merge``, ``eval.evaluate``, ``gguf.convert_to_gguf``; register uses
``orchestrator.ollama.register.register_model``), and the two functions the pipeline calls:
``fingerprint(run) -> str`` (a hash of everything the stage reads) and ``run(run) -> StageResult``.
Data flows one way: sources -> dataset -> train -> merge -> eval -> gguf -> register.
"""

from __future__ import annotations

from orchestrator.stages import data, eval, gguf, merge, register, train

PIPELINE = (data, train, merge, eval, gguf, register)
BY_NAME = {stage.NAME: stage for stage in PIPELINE}

__all__ = ["PIPELINE", "BY_NAME", "data", "train", "merge", "eval", "gguf", "register"]
