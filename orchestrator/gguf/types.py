"""Output types and the result of a conversion. Light module: no numpy, no gguf at import time."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError


@dataclass(frozen=True)
class GGUFType:
    """One output type: how it is made, and whether Ollama's create can quantize to it."""

    name: str  # lower case, as recipes and the CLI spell it: q4_k_m
    kind: str  # "float", "block" (the gguf package quantizes it) or "kquant" (llama-quantize, or Ollama)
    ollama_quantize: bool = False  # Ollama's create `quantize` accepts it (from an F16/BF16/F32 source)
    adapter: bool = False  # a LoRA adapter GGUF can be written in it


# The one table of GGUF types: the recipe schema, the converter, the CLI help and the Ollama quantize
# route all read it.
TYPES: tuple[GGUFType, ...] = (
    GGUFType("f32", "float", ollama_quantize=True, adapter=True),
    GGUFType("f16", "float", ollama_quantize=True, adapter=True),
    GGUFType("bf16", "float", ollama_quantize=True, adapter=True),
    GGUFType("q8_0", "block", ollama_quantize=True, adapter=True),
    GGUFType("q4_0", "block"),
    GGUFType("q4_1", "block"),
    GGUFType("q5_0", "block"),
    GGUFType("q5_1", "block"),
    GGUFType("q2_k", "kquant"),
    GGUFType("q3_k_s", "kquant"),
    GGUFType("q3_k_m", "kquant"),
    GGUFType("q3_k_l", "kquant"),
    GGUFType("q4_k_s", "kquant", ollama_quantize=True),
    GGUFType("q4_k_m", "kquant", ollama_quantize=True),
    GGUFType("q5_k_s", "kquant"),
    GGUFType("q5_k_m", "kquant"),
    GGUFType("q6_k", "kquant"),
)
BY_NAME = {t.name: t for t in TYPES}
OUT_TYPES = tuple(t.name for t in TYPES)
FLOAT_TYPES = tuple(t.name for t in TYPES if t.kind == "float")
BLOCK_TYPES = tuple(t.name for t in TYPES if t.kind == "block")
KQUANT_TYPES = tuple(t.name for t in TYPES if t.kind == "kquant")
# K-quants Ollama makes itself at create time when llama-quantize is not installed.
OLLAMA_KQUANTS = tuple(t.name for t in TYPES if t.kind == "kquant" and t.ollama_quantize)
# What Ollama's create `quantize` accepts (ollama_quantize_name gives Ollama's spelling).
OLLAMA_QUANTIZE = tuple(t.name for t in TYPES if t.ollama_quantize)
ADAPTER_TYPES = tuple(t.name for t in TYPES if t.adapter)
# Our own metadata key: the type a 16-bit GGUF is to be quantized to by Ollama when it is registered
# (written when llama-quantize was not found; read back by `ollama register FILE`).
QUANTIZE_TO_KEY = "orchestrator.quantize_to"


def types_help() -> str:
    """The list for --help texts."""
    plain = " ".join(FLOAT_TYPES + BLOCK_TYPES)
    return f"{plain}, or a K-quant ({' '.join(KQUANT_TYPES)})"


def normalize_type(out_type: str, allowed: tuple[str, ...] = OUT_TYPES) -> str:
    """``"Q4_K_M"`` -> ``"q4_k_m"``; refuses a type the converter cannot write."""
    name = out_type.strip().lower()
    if name not in allowed:
        raise UsageError(f"unknown GGUF type {out_type!r}; choose one of: {', '.join(allowed)}")
    return name


def file_type_name(out_type: str) -> str:
    """The ``gguf.LlamaFileType`` member name for an output type (``q8_0`` -> ``MOSTLY_Q8_0``)."""
    return "ALL_F32" if out_type == "f32" else f"MOSTLY_{out_type.upper()}"


def ollama_quantize_name(out_type: str) -> str:
    """The spelling Ollama's create ``quantize`` field uses: ``q4_k_m`` -> ``q4_K_M``, ``q8_0`` -> ``Q8_0``."""
    if BY_NAME[out_type].kind != "kquant":
        return out_type.upper()
    bits, _, rest = out_type.partition("_k")
    return f"{bits}_K{rest.upper()}"


@dataclass
class ConvertResult:
    """What a conversion wrote.

    ``path`` is the file written, ``requested_type`` the type asked for and ``file_type`` the short name of
    ``general.file_type`` as written (``Q8_0``, ``BF16``...). For a K-quant, ``kquant_route`` is
    ``"llama-quantize"`` (quantized here) or ``"ollama"``: the file is then F16/BF16, named for that type
    when the requested name carried the K-quant's (``X-q4_k_m.gguf`` -> ``X-bf16.gguf``), its header
    records ``QUANTIZE_TO_KEY = ollama_quantize``, and Ollama's create must be given that ``quantize``.
    """

    path: Path
    kind: str  # "model" or "adapter"
    architecture: str
    requested_type: str
    file_type: str
    tensor_types: dict[str, int]
    bytes_written: int
    duration_s: float
    parameter_count: int = 0
    notes: list[str] = field(default_factory=list)
    chat_template_source: str | None = None
    kquant_route: str | None = None
    ollama_quantize: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data

    def kquant_line(self) -> str | None:
        """Who makes the K-quant, and where the file is (None for other types)."""
        if self.kquant_route == "llama-quantize":
            return f"{self.requested_type}: quantized locally with llama-quantize"
        if self.kquant_route == "ollama":
            return (
                f"{self.requested_type}: llama-quantize not found; wrote {self.file_type} to {self.path}; "
                f"Ollama quantizes it to {self.ollama_quantize} when it is registered"
            )
        return None

    def lines(self) -> list[str]:
        """A short human summary, one fact per line (the CLI prints these)."""
        types = ", ".join(f"{n} {name}" for name, n in sorted(self.tensor_types.items()))
        mb = self.bytes_written / 1e6
        out = [
            f"wrote {self.path} ({mb:,.1f} MB, {self.architecture} {self.kind}, {self.file_type}) "
            f"in {self.duration_s:.1f} s",
            f"tensors: {types}",
        ]
        route = self.kquant_line()
        if route:
            out.append(route)
        if self.chat_template_source:
            out.append(f"chat template: from {self.chat_template_source}")
        out.extend(f"note: {note}" for note in self.notes)
        return out
