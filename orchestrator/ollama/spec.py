"""``ServeSpec``: everything a Modelfile and an Ollama registration are made from, in one value.

A recipe gives one with ``ServeSpec.from_recipe`` (the register stage and ``ollama register --recipe``
use the same rules); the CLI's options override fields with ``dataclasses.replace``. The GGUF itself
is not part of it: ``build_modelfile`` and ``register_model`` take the path beside the spec.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.errors import UsageError
from orchestrator.gguf.types import OLLAMA_QUANTIZE, normalize_type, ollama_quantize_name
from orchestrator.ollama.names import check_model_name
from orchestrator.ollama.templates import TEMPLATES

if TYPE_CHECKING:
    from orchestrator.recipe import Recipe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSpec:
    """How a tuned GGUF is served in Ollama.

    Attributes:
        name: the Ollama model name (``[namespace/]model[:tag]``); empty only for a Modelfile alone.
        host: the server (None: ``$OLLAMA_HOST``, then 127.0.0.1:11434).
        template, enable_thinking: LLaMA-Factory's template and ``enable_thinking`` used in training;
            they choose the TEMPLATE, the stop tokens and the sampling defaults.
        system, num_ctx, parameters: SYSTEM, ``num_ctx`` and PARAMETER overrides.
        quantize: the ``quantize`` value for Ollama's create (``q4_K_M``), or None; any spelling is
            taken and stored in Ollama's. It is only sent when the GGUF is another type. None also
            takes the type a 16-bit GGUF records for Ollama to make (``gguf.types.QUANTIZE_TO_KEY``).
        base_model: the adapter route: the Ollama model the LoRA adapter GGUF goes on (None: merged).
        gguf_type: the GGUF type the recipe asks for (``gguf.type``), or None: a GGUF of another type
            that ``quantize`` does not turn into it is refused (``register.quantize_request``).
    """

    name: str = ""
    host: str | None = None
    template: str = "qwen3"
    enable_thinking: bool = True
    system: str | None = None
    num_ctx: int | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    quantize: str | None = None
    base_model: str | None = None
    gguf_type: str | None = None

    def __post_init__(self) -> None:
        if self.name:
            check_model_name(self.name)
        if self.template not in TEMPLATES:
            raise UsageError(
                f"no Ollama template for LLaMA-Factory template '{self.template}'; use one of: {', '.join(TEMPLATES)}"
            )
        if self.base_model is not None:
            check_model_name(self.base_model)
        # Frozen: the normalized values are set through object.__setattr__, once, here.
        object.__setattr__(self, "parameters", dict(self.parameters or {}))
        object.__setattr__(self, "quantize", _ollama_quantize(self.quantize))
        if self.gguf_type is not None:
            object.__setattr__(self, "gguf_type", normalize_type(self.gguf_type))

    @property
    def adapter_route(self) -> bool:
        return self.base_model is not None

    @classmethod
    def from_recipe(cls, recipe: Recipe, *, gguf_details: dict[str, Any] | None = None) -> ServeSpec:
        """The spec a recipe describes.

        ``gguf_details`` is what the gguf stage recorded (``ConvertResult.to_dict()`` without the path):
        when given, Ollama is asked to quantize only when the converter left the K-quant to it
        (``kquant_route == "ollama"``). Without it, the recipe's ``gguf.type`` is asked for when Ollama
        can make it (see ``quantize_for_type``).
        """
        ollama, model = recipe.ollama, recipe.model
        adapter = ollama.serve == "adapter"
        if adapter:
            quantize = None  # the base model stays as Ollama has it
        elif gguf_details:
            quantize = quantize_from_details(gguf_details)
        else:  # None or {}: no gguf stage result to go by
            quantize = quantize_for_type(recipe.gguf.type)
        return cls(
            name=ollama.name or recipe.name,
            host=ollama.host,
            template=model.resolved_template,
            enable_thinking=model.enable_thinking,
            system=ollama.system,
            num_ctx=ollama.num_ctx,
            parameters=dict(ollama.parameters),
            quantize=quantize,
            base_model=ollama.base_model if adapter else None,
            gguf_type=None if adapter else recipe.gguf.type,
        )


def quantize_for_type(gguf_type: str) -> str | None:
    """A recipe's ``gguf.type`` as a create ``quantize``: Ollama's spelling, or None when Ollama cannot
    make that type (the GGUF is then registered as it is)."""
    name = gguf_type.strip().lower()
    if name in OLLAMA_QUANTIZE:
        return ollama_quantize_name(name)
    log.info("gguf.type %s is not a type Ollama quantizes to; the GGUF is registered as it is", gguf_type)
    return None


def quantize_from_details(details: dict[str, Any]) -> str | None:
    """The ``quantize`` a conversion left to Ollama: set only when ``kquant_route`` is ``"ollama"``."""
    if details.get("kquant_route") != "ollama":
        return None
    wanted = details.get("ollama_quantize") or details.get("requested_type")
    if not wanted:
        raise UsageError("the gguf stage left a K-quant to Ollama without naming it; rerun the gguf stage")
    return str(wanted)


def _ollama_quantize(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    name = value.strip().lower()
    if name not in OLLAMA_QUANTIZE:
        offered = ", ".join(ollama_quantize_name(t) for t in OLLAMA_QUANTIZE)
        raise UsageError(
            f"Ollama cannot quantize to {value} (it offers {offered}); produce {value} locally with llama-quantize "
            "(orchestrator gguf convert --type) or pick one of those"
        )
    return ollama_quantize_name(name)
