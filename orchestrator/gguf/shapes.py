"""The tensors llama.cpp's loader expects of each supported architecture, and their shapes.

Shapes are built from named sizes (``Dim``), so a tensor that disagrees names the setting behind the
expected size: a config.json key when converting, a GGUF metadata key when inspecting a file. Shapes
are in numpy order (rows first), as safetensors holds them; a GGUF's ggml dims are the reverse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from orchestrator.text import counted

BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class Dim:
    """A size and the setting(s) it comes from."""

    size: int
    label: str

    def __mul__(self, other: Dim) -> Dim:
        return Dim(self.size * other.size, f"{self.label} x {other.label}")


@dataclass
class Dims:
    """The sizes a layout is built from; ``expert`` and ``ff_expert`` only for MoE models."""

    n_layer: Dim
    embd: Dim
    vocab: Dim
    head: Dim
    head_kv: Dim
    head_dim: Dim
    ff: Dim
    rot: Dim
    expert: Dim | None = None
    ff_expert: Dim | None = None


@dataclass
class Layout:
    """Tensor name -> expected shape, outside the blocks and inside each block (name after ``blk.N.``)."""

    top: dict[str, tuple[Dim, ...]] = field(default_factory=dict)
    block: dict[str, tuple[Dim, ...]] = field(default_factory=dict)
    required_top: set[str] = field(default_factory=set)
    required_block: set[str] = field(default_factory=set)


def layout(arch: str, d: Dims, *, output_required: bool = False) -> Layout:
    """What llama.cpp's ``arch`` loader (qwen3, qwen3moe, qwen2, llama) creates; biases are optional."""
    import gguf

    t = gguf.MODEL_TENSOR

    def key(tensor: gguf.MODEL_TENSOR, kind: str = "weight") -> str:
        return gguf.TENSOR_NAMES[tensor].removeprefix("blk.{bid}.") + "." + kind

    q, kv = d.head * d.head_dim, d.head_kv * d.head_dim
    out = Layout()
    out.top = {key(t.TOKEN_EMBD): (d.vocab, d.embd), key(t.OUTPUT_NORM): (d.embd,), key(t.OUTPUT): (d.vocab, d.embd)}
    out.required_top = {key(t.TOKEN_EMBD), key(t.OUTPUT_NORM)} | ({key(t.OUTPUT)} if output_required else set())
    if arch == "llama":
        out.top[key(t.ROPE_FREQS)] = (Dim(d.rot.size // 2, f"{d.rot.label} / 2"),)
    block = {
        key(t.ATTN_NORM): (d.embd,),
        key(t.ATTN_Q): (q, d.embd),
        key(t.ATTN_K): (kv, d.embd),
        key(t.ATTN_V): (kv, d.embd),
        key(t.ATTN_OUT): (d.embd, q),
        key(t.FFN_NORM): (d.embd,),
    }
    if arch in ("qwen3", "qwen3moe"):
        block |= {key(t.ATTN_Q_NORM): (d.head_dim,), key(t.ATTN_K_NORM): (d.head_dim,)}
    if d.expert is not None and d.ff_expert is not None:
        x, fe = d.expert, d.ff_expert
        ffn = {
            key(t.FFN_GATE_INP): (x, d.embd),
            key(t.FFN_GATE_EXP): (x, fe, d.embd),
            key(t.FFN_UP_EXP): (x, fe, d.embd),
            key(t.FFN_DOWN_EXP): (x, d.embd, fe),
        }
    else:
        ffn = {key(t.FFN_GATE): (d.ff, d.embd), key(t.FFN_UP): (d.ff, d.embd), key(t.FFN_DOWN): (d.embd, d.ff)}
    out.block = block | ffn
    out.required_block = set(out.block)
    biases = {t.ATTN_Q: (q,), t.ATTN_K: (kv,), t.ATTN_V: (kv,), t.ATTN_OUT: (d.embd,)}
    if d.expert is None:
        biases |= {t.FFN_GATE: (d.ff,), t.FFN_UP: (d.ff,), t.FFN_DOWN: (d.embd,)}
    out.block |= {key(tensor, "bias"): shape for tensor, shape in biases.items()}
    return out


def expected_shape(lay: Layout, name: str, n_layer: int) -> tuple[Dim, ...] | None:
    """The expected shape of the tensor ``name``; None when the loader has no such tensor."""
    match = BLOCK.match(name)
    if match is None:
        return lay.top.get(name)
    return lay.block.get(match[2]) if int(match[1]) < n_layer else None


def shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(n) for n in shape) + "]"


def mismatch(shape: tuple[int, ...], want: tuple[Dim, ...]) -> str | None:
    """Why ``shape`` is not ``want`` (naming the settings behind the wrong sizes), or None when it is."""
    sizes = tuple(dim.size for dim in want)
    if shape == sizes:
        return None
    if len(shape) != len(want):
        return f"has {counted(len(shape), 'dimension')} {shape_text(shape)}, expected {len(want)}: {shape_text(sizes)}"
    labels = [f"{dim.label} = {dim.size}" for n, dim in zip(shape, want, strict=True) if n != dim.size]
    return f"has shape {shape_text(shape)}, expected {shape_text(sizes)} from {'; '.join(labels)}"


def block_set_problems(lay: Layout, names: list[str], n_layer: int) -> list[tuple[str, str]]:
    """Blocks that lack a tensor (a required one, or one another block has): (tensor name, problem)."""
    sets: list[set[str]] = [set() for _ in range(n_layer)]
    for name in names:
        match = BLOCK.match(name)
        if match and int(match[1]) < n_layer:
            sets[int(match[1])].add(match[2])
    found = []
    union = set().union(*sets) if sets else set()
    for bid, have in enumerate(sets):
        for part in sorted((lay.required_block | union) - have):
            others = [b for b, s in enumerate(sets) if part in s]
            why = f"layer {bid} has no {part}" + (f" (layer {others[0]} has one)" if others else "")
            found.append((f"blk.{bid}.{part}", why))
    for name in sorted(lay.required_top - set(names)):
        found.append((name, f"{name} is missing"))
    return found
