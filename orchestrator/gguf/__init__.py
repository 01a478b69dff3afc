"""Built-in GGUF conversion: merged Hugging Face models and PEFT LoRA adapters -> GGUF for llama.cpp/Ollama.

Public API (importing this package is cheap: numpy and gguf load when a function runs):

- ``convert_model(model_dir, out_path, out_type="q8_0", *, chat_template=None, on_progress=None)``
- ``convert_adapter(adapter_dir, out_path, *, base_model_dir=None, out_type="f16", on_progress=None)``
- ``inspect_gguf(path) -> dict``
- ``read_gguf_header(path) -> GGUFHeader``: metadata and tensor table only, fast (no tensor data).
- ``ConvertResult``: what a conversion wrote (path, types, notes, K-quant route...).
"""

from __future__ import annotations

from orchestrator.gguf.adapter import convert_adapter
from orchestrator.gguf.convert import convert_model
from orchestrator.gguf.header import GGUFHeader, read_gguf_header
from orchestrator.gguf.inspect import inspect_gguf
from orchestrator.gguf.types import OUT_TYPES, ConvertResult

__all__ = [
    "OUT_TYPES",
    "ConvertResult",
    "GGUFHeader",
    "convert_adapter",
    "convert_model",
    "inspect_gguf",
    "read_gguf_header",
]
