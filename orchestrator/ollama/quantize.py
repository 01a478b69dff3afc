"""The ``quantize`` an Ollama create is asked for, decided from the spec and the GGUF's header.

In order: the spec's ``quantize`` (``--quantize``, or what the recipe and the gguf stage's result say),
else the type the converter recorded in a 16-bit GGUF for Ollama to make (``QUANTIZE_TO_KEY``, written
when llama-quantize was not found). Nothing is sent when the GGUF already is that type. A recipe type
that the GGUF is not and that Ollama cannot make from it (``q6_k`` from an F16 file) is refused here,
before anything is written or sent: registering the F16 file instead would silently serve another type.
The same decision serves the HTTP API, ``ollama create -f`` and the command printed for later.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from orchestrator.errors import UsageError
from orchestrator.gguf.types import OLLAMA_KQUANTS, OLLAMA_QUANTIZE, QUANTIZE_TO_KEY, ollama_quantize_name

if TYPE_CHECKING:
    from orchestrator.ollama.gguf_info import GGUFInfo
    from orchestrator.ollama.spec import ServeSpec

log = logging.getLogger(__name__)

QUANTIZABLE_SOURCES = ("F16", "BF16", "F32")  # what Ollama's create quantizes from (reference/ollama-api.md)


def quantize_request(spec: ServeSpec, info: GGUFInfo) -> str | None:
    """The ``quantize`` to send with this GGUF (Ollama's spelling), or None.

    Raises:
        UsageError: the GGUF cannot become the type asked for (Ollama quantizes only F16/BF16/F32 files,
            to the types of ``OLLAMA_QUANTIZE``), or its header records a type Ollama does not make.
    """
    if spec.adapter_route:
        if spec.quantize:
            log.info("quantize %s ignored: the adapter route keeps %s as it is", spec.quantize, spec.base_model)
        return None
    wanted = spec.quantize or recorded_target(info)
    if wanted is None:
        if spec.gguf_type and spec.gguf_type.upper() != info.file_type:
            raise UsageError(unmakeable_type(spec.gguf_type, info))
        return None
    if wanted.upper() == info.file_type:
        return None
    if info.file_type not in QUANTIZABLE_SOURCES:
        raise UsageError(
            f"{info.path.name} is {info.file_type}; Ollama quantizes only F16, BF16 or F32 GGUFs to {wanted}: "
            "convert to f16 (gguf.type: f16) and register again"
        )
    return wanted


def recorded_target(info: GGUFInfo) -> str | None:
    """The type a 16-bit GGUF's header asks Ollama to make; ignored for a file already quantized."""
    if info.quantize_to is None:
        return None
    if info.file_type not in QUANTIZABLE_SOURCES:
        log.info("%s is %s already: its %s is ignored", info.path.name, info.file_type, QUANTIZE_TO_KEY)
        return None
    name = info.quantize_to.strip().lower()
    if name not in OLLAMA_QUANTIZE:
        raise UsageError(
            f"{info.path}: {QUANTIZE_TO_KEY} is {info.quantize_to!r}, not a type Ollama quantizes to; "
            "pass --quantize TYPE (or convert the model again)"
        )
    return ollama_quantize_name(name)


def unmakeable_type(gguf_type: str, info: GGUFInfo) -> str:
    """Why a GGUF of another type than the recipe's cannot be served as that type, and how to make it."""
    from orchestrator.gguf.kquant import find_llama_quantize
    from orchestrator.gguf.types import BY_NAME

    convert = f"`orchestrator gguf convert MODEL_DIR OUT.gguf --type {gguf_type}`"
    if BY_NAME[gguf_type].kind != "kquant":
        fix = f"convert the model to it with {convert}"
    elif find_llama_quantize() is not None:
        fix = f"llama-quantize is installed: convert the model again with {convert}"
    else:
        fix = (
            f"install llama.cpp's llama-quantize (PATH or LLAMA_CPP_DIR) and convert again with {convert}, "
            f"or set gguf.type to {' or '.join(OLLAMA_KQUANTS)}, which Ollama makes itself"
        )
    offered = ", ".join(ollama_quantize_name(t) for t in OLLAMA_QUANTIZE)
    return (
        f"gguf.type {gguf_type}, but {info.path.name} is {info.file_type} and Ollama cannot quantize to "
        f"{gguf_type} (it makes {offered}); {fix}"
    )
