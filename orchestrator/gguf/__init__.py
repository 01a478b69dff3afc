"""Built-in GGUF conversion: merged Hugging Face models and PEFT LoRA adapters -> GGUF for llama.cpp/Ollama.

Public API (importing this package is cheap: numpy and gguf load when a function runs):

- ``convert_model(model_dir, out_path, out_type="q8_0", *, chat_template=None, on_progress=None)``
- ``convert_adapter(adapter_dir, out_path, *, base_model_dir=None, out_type="f16", on_progress=None)``
- ``inspect_gguf(path) -> dict``
- ``read_gguf_header(path) -> GGUFHeader``: metadata and tensor table only, fast (no tensor data).
- ``ConvertResult``: what a conversion wrote (path, types, notes, K-quant route...).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module; loaded on first use, so that importing a light submodule (types, header) or
# building the CLI's help does not load the converter and numpy.
_EXPORTS = {
    "convert_adapter": "orchestrator.gguf.adapter",
    "convert_model": "orchestrator.gguf.convert",
    "GGUFHeader": "orchestrator.gguf.header",
    "read_gguf_header": "orchestrator.gguf.header",
    "inspect_gguf": "orchestrator.gguf.inspect",
    "OUT_TYPES": "orchestrator.gguf.types",
    "ConvertResult": "orchestrator.gguf.types",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'orchestrator.gguf' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
