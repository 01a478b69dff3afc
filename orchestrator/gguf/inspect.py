"""Reading a GGUF back: what it holds, and whether llama.cpp could load it.

The checks are the ones llama.cpp and Ollama make while decoding: known tensor types, at most four
dimensions, rows that are whole blocks, data inside the file and aligned, and the metadata keys the
loader needs for the file's kind (model or adapter).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from orchestrator.gguf.types import QUANTIZE_TO_KEY
from orchestrator.text import counted

SPECIAL_KINDS = ("bos", "eos", "pad", "unk", "sep", "mask")
TEMPLATE_HEAD_LINES = 8
LAYOUT_ARCHS = ("qwen3", "qwen3moe", "qwen2", "llama")  # the ones shapes.layout knows
MAX_SHAPE_PROBLEMS = 5


def inspect_gguf(path: str | Path, *, read_back: bool = False) -> dict[str, Any]:
    """Describe a GGUF file and check it as llama.cpp's loader would.

    The header is parsed quickly (``header.read_gguf_header``); with ``read_back`` the whole file is also
    read with ``gguf.GGUFReader`` (several seconds for a 150k-token vocabulary) and must agree.

    Returns a dict with: path, size_bytes, kind, architecture, name, size_label, file_type,
    quantization_version, parameter_count, tensor_count, tensor_types {type: count}, context_length,
    embedding_length, block_count, expert_count, vocab_size, tokenizer_model, tokenizer_pre,
    special_tokens {kind: {id, text}}, add_bos, chat_template, chat_template_head, lora_alpha,
    quantize_to (the type Ollama is to quantize the file to at registration, or None), problems (list of
    str), verified (bool: no problems), read_back (bool) and shapes_checked (bool: the tensor shapes were
    checked against the metadata, for the architectures the converter knows).
    """
    import gguf

    from orchestrator.gguf.header import read_gguf_header

    path = Path(path)
    header = read_gguf_header(path)
    kv = header.kv
    arch = kv.get(gguf.Keys.General.ARCHITECTURE, "?")
    kind = kv.get(gguf.Keys.General.TYPE, "model")
    info: dict[str, Any] = {
        "path": str(path),
        "size_bytes": header.file_size,
        "kind": kind,
        "architecture": arch,
        "name": kv.get(gguf.Keys.General.NAME),
        "size_label": kv.get(gguf.Keys.General.SIZE_LABEL),
        "file_type": file_type(kv.get(gguf.Keys.General.FILE_TYPE)),
        "quantization_version": kv.get(gguf.Keys.General.QUANTIZATION_VERSION),
        "tensor_count": len(header.tensors),
        "tensor_types": dict(Counter(t.qtype.name for t in header.tensors)),
        "parameter_count": sum(t.n_elements for t in header.tensors),
        "lora_alpha": kv.get(gguf.Keys.Adapter.LORA_ALPHA),
        "quantize_to": kv.get(QUANTIZE_TO_KEY),
    }
    for key, gguf_key in (
        ("context_length", gguf.Keys.LLM.CONTEXT_LENGTH),
        ("embedding_length", gguf.Keys.LLM.EMBEDDING_LENGTH),
        ("block_count", gguf.Keys.LLM.BLOCK_COUNT),
        ("expert_count", gguf.Keys.LLM.EXPERT_COUNT),
    ):
        info[key] = kv.get(gguf_key.format(arch=arch))
    info.update(tokenizer_info(kv))
    info["problems"] = problems(header, arch, kind)
    info["shapes_checked"] = False
    if kind == gguf.GGUFType.MODEL and arch in LAYOUT_ARCHS:
        info["problems"] += dimension_problems(header, arch)
        info["shapes_checked"] = True
    if read_back:
        info["problems"] += read_back_problems(path, header)
    info["read_back"] = read_back
    info["verified"] = not info["problems"]
    return info


def file_type(value: int | None) -> str:
    import gguf

    if value is None:
        return "unknown"
    try:
        return gguf.LlamaFileType(value).name.partition("_")[2]
    except ValueError:
        return f"unknown ({value})"


def tokenizer_info(kv: dict[str, Any]) -> dict[str, Any]:
    import gguf

    tokens = kv.get(gguf.Keys.Tokenizer.LIST) or []
    special = {}
    for kind in SPECIAL_KINDS:
        idx = kv.get(getattr(gguf.Keys.Tokenizer, f"{kind.upper()}_ID"))
        if idx is not None:
            special[kind] = {"id": idx, "text": tokens[idx] if idx < len(tokens) else None}
    template = kv.get(gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    return {
        "vocab_size": len(tokens),
        "tokenizer_model": kv.get(gguf.Keys.Tokenizer.MODEL),
        "tokenizer_pre": kv.get(gguf.Keys.Tokenizer.PRE),
        "special_tokens": special,
        "add_bos": kv.get(gguf.Keys.Tokenizer.ADD_BOS),
        "chat_template": template,
        "chat_template_head": "\n".join(template.splitlines()[:TEMPLATE_HEAD_LINES]) if template else None,
    }


def problems(header: Any, arch: str, kind: str) -> list[str]:
    """What llama.cpp's loader (or Ollama's decoder) would reject in this file."""
    import gguf

    found = []
    if header.version not in (2, 3):
        found.append(f"GGUF version {header.version} (llama.cpp reads 2 and 3)")
    ends = header.data_offset
    for t in header.tensors:
        block = gguf.GGML_QUANT_SIZES[t.qtype][0]
        if len(t.dims) > 4:
            found.append(f"{t.name}: {len(t.dims)} dimensions (at most 4)")
        if t.dims and t.dims[0] % block:
            found.append(f"{t.name}: row of {t.dims[0]} is not whole {t.qtype.name} blocks")
        if (t.offset - header.data_offset) % header.alignment:
            found.append(f"{t.name}: data is not aligned to {header.alignment}")
        ends = max(ends, t.offset + t.n_bytes)
    if ends > header.file_size:
        found.append(f"tensor data runs {counted(ends - header.file_size, 'byte')} past the end of the file")
    found += [f"metadata key {key} is missing" for key in required_keys(arch, kind) if key not in header.kv]
    if not header.tensors:
        found.append("the file has no tensors")
    return found


def dimension_problems(header: Any, arch: str) -> list[str]:
    """Tensors whose shapes disagree with the file's own metadata, and blocks that lack tensors."""
    from orchestrator.gguf.shapes import block_set_problems, expected_shape, layout, mismatch

    dims = metadata_dims(header.kv, arch)
    if isinstance(dims, str):
        return [dims]
    n_layer = dims.n_layer.size
    lay = layout(arch, dims)
    shapes = {t.name: tuple(reversed(t.dims)) for t in header.tensors}
    found = []
    for name, shape in shapes.items():
        want = expected_shape(lay, name, n_layer)
        if want is None:
            found.append(f"{name}: not a tensor llama.cpp's {arch} loader reads ({dims.n_layer.label} = {n_layer})")
        elif (why := mismatch(shape, want)) is not None:
            found.append(f"{name} {why}")
    for name, why in block_set_problems(lay, list(shapes), n_layer):
        found.append(f"{name}: {why} ({dims.n_layer.label} = {n_layer})")
    if len(found) > MAX_SHAPE_PROBLEMS:
        more = counted(len(found) - MAX_SHAPE_PROBLEMS, "more tensor shape problem")
        found[MAX_SHAPE_PROBLEMS:] = [f"and {more}"]
    return found


def metadata_dims(kv: dict[str, Any], arch: str) -> Any:
    """The layout sizes from a GGUF's metadata (``shapes.Dims``), or a problem when one is missing or bad."""
    import gguf

    from orchestrator.gguf.shapes import Dim, Dims

    def size(key: str, default: Dim | None = None) -> Dim:
        name = key.format(arch=arch)
        value = kv.get(name)
        if value is None and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"metadata key {name} is {value!r}, not a positive whole number")
        return Dim(value, name)

    llm, att = gguf.Keys.LLM, gguf.Keys.Attention
    try:
        embd, head = size(llm.EMBEDDING_LENGTH), size(att.HEAD_COUNT)
        tokens = kv.get(gguf.Keys.Tokenizer.LIST) or []
        vocab = size(llm.VOCAB_SIZE, Dim(len(tokens), f"the vocabulary ({gguf.Keys.Tokenizer.LIST})"))
        head_dim = size(att.KEY_LENGTH, Dim(embd.size // head.size, f"{embd.label} / {head.label}"))
        moe = arch == "qwen3moe"
        return Dims(
            n_layer=size(llm.BLOCK_COUNT),
            embd=embd,
            vocab=vocab,
            head=head,
            head_kv=size(att.HEAD_COUNT_KV, head),
            head_dim=head_dim,
            ff=size(llm.FEED_FORWARD_LENGTH),
            rot=size(gguf.Keys.Rope.DIMENSION_COUNT, head_dim),
            expert=size(llm.EXPERT_COUNT) if moe else None,
            ff_expert=size(llm.EXPERT_FEED_FORWARD_LENGTH) if moe else None,
        )
    except ValueError as exc:
        return str(exc)


def required_keys(arch: str, kind: str) -> list[str]:
    import gguf

    if kind == gguf.GGUFType.ADAPTER:
        return [gguf.Keys.General.ARCHITECTURE, gguf.Keys.Adapter.TYPE, gguf.Keys.Adapter.LORA_ALPHA]
    per_arch = (
        gguf.Keys.LLM.CONTEXT_LENGTH,
        gguf.Keys.LLM.EMBEDDING_LENGTH,
        gguf.Keys.LLM.BLOCK_COUNT,
        gguf.Keys.Attention.HEAD_COUNT,
        gguf.Keys.Attention.LAYERNORM_RMS_EPS,
    )
    general = [gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.FILE_TYPE]
    return general + [gguf.Keys.Tokenizer.LIST, gguf.Keys.Tokenizer.MODEL] + [k.format(arch=arch) for k in per_arch]


def read_back_problems(path: Path, header: Any) -> list[str]:
    """Read the whole file with gguf.GGUFReader; it must see the same tensors as the quick parse."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, IndexError, KeyError) as exc:
        return [f"gguf.GGUFReader cannot read the file: {exc}"]
    seen = {(t.name, t.tensor_type.name, tuple(int(d) for d in t.shape)) for t in reader.tensors}
    expected = {(t.name, t.qtype.name, t.dims) for t in header.tensors}
    return [] if seen == expected else ["gguf.GGUFReader sees a different tensor table"]


def summary_lines(info: dict[str, Any]) -> list[str]:
    """The facts ``orchestrator gguf inspect`` prints."""
    types = ", ".join(f"{n} {name}" for name, n in sorted(info["tensor_types"].items()))
    lines = [
        f"file:            {info['path']} ({info['size_bytes'] / 1e6:,.1f} MB)",
        f"kind:            {info['kind']} ({info['architecture']}), name {info['name']}, "
        f"size {info['size_label'] or '-'}",
        f"file type:       {info['file_type']}",
        *([f"quantize to:     {info['quantize_to']} (by Ollama, when registered)"] if info["quantize_to"] else []),
        f"parameters:      {info['parameter_count']:,}",
        f"tensors:         {info['tensor_count']} ({types})",
    ]
    if info["kind"] == "adapter":
        lines.append(f"lora alpha:      {info['lora_alpha']}")
    else:
        lines += [
            f"context length:  {info['context_length']}",
            f"vocabulary:      {info['vocab_size']} tokens, pre-tokenizer {info['tokenizer_pre']}, "
            f"add_bos {info['add_bos']}",
        ]
        for kind, token in info["special_tokens"].items():
            lines.append(f"{kind + ' token:':17}{token['id']} {token['text']!r}")
        if info["chat_template_head"]:
            lines.append("chat template (head):")
            lines += [f"  {line}" for line in info["chat_template_head"].splitlines()]
        else:
            lines.append("chat template:   none")
    checked = "header and gguf.GGUFReader read-back" if info["read_back"] else "header"
    if info["kind"] != "adapter" and not info["shapes_checked"]:
        checked += f"; tensor shapes not checked: no layout for {info['architecture']}"
    verdict = f"OK ({checked})" if info["verified"] else "PROBLEMS: " + "; ".join(info["problems"])
    lines.append(f"verified:        {verdict}")
    return lines
