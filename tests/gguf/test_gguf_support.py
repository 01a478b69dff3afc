"""Helpers for the GGUF tests (no tests here): reading files back, llama.cpp's tensor requirements,
small random models of each supported architecture, and a small byte-level BPE tokenizer."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np

QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SMALL_VOCAB = 1024  # ids kept from the real Qwen3 vocabulary for the small tokenizer
ORIGINAL_MEMMAP = np.memmap


def read_gguf(path: Path):
    """gguf.GGUFReader on ``path``. The reader slices its buffer ~760k times for a 150k-token vocabulary;
    handing it a plain ndarray view of the file's memmap (same bytes) halves the time in tests."""
    import gguf

    def plain(filename, mode="r"):
        return np.asarray(ORIGINAL_MEMMAP(filename, mode=mode))

    with mock.patch.object(gguf.gguf_reader.np, "memmap", plain):
        return gguf.GGUFReader(path)


def field(reader, key: str):
    f = reader.get_field(key)
    return None if f is None else f.contents()


def loader_spec(arch: str, hp: dict) -> dict[str, tuple[int, ...]]:
    """Tensor name -> ggml shape (ne order) that llama.cpp's loader creates for ``arch``.

    Read from llama.cpp's src/models/{qwen3,qwen3moe,qwen2,llama}.cpp (load_arch_tensors) and
    llama_model_base::create_tensor_qkv. Optional tensors (output, biases, rope_freqs) are added by
    the caller when the model has them.
    """
    e, v, hd = hp["n_embd"], hp["n_vocab"], hp["head_dim"]
    q, kv = hp["n_head"] * hd, hp["n_head_kv"] * hd
    spec = {"token_embd.weight": (e, v), "output_norm.weight": (e,)}
    for i in range(hp["n_layer"]):
        b = f"blk.{i}."
        spec |= {
            b + "attn_norm.weight": (e,),
            b + "attn_q.weight": (e, q),
            b + "attn_k.weight": (e, kv),
            b + "attn_v.weight": (e, kv),
            b + "attn_output.weight": (q, e),
            b + "ffn_norm.weight": (e,),
        }
        if arch in ("qwen3", "qwen3moe"):
            spec |= {b + "attn_q_norm.weight": (hd,), b + "attn_k_norm.weight": (hd,)}
        if arch == "qwen3moe":
            n_exp, ff = hp["n_expert"], hp["n_ff_exp"]
            spec |= {
                b + "ffn_gate_inp.weight": (e, n_exp),
                b + "ffn_gate_exps.weight": (e, ff, n_exp),
                b + "ffn_down_exps.weight": (ff, e, n_exp),
                b + "ffn_up_exps.weight": (e, ff, n_exp),
            }
        else:
            ff = hp["n_ff"]
            spec |= {b + "ffn_gate.weight": (e, ff), b + "ffn_down.weight": (ff, e), b + "ffn_up.weight": (e, ff)}
    return spec


def hf_tensors(model_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors folder as float32 numpy (read with safetensors + torch)."""
    from safetensors.torch import load_file

    out = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        for name, tensor in load_file(path).items():
            out[name] = tensor.float().numpy()
    return out


def small_tokenizer(dst: Path, source: Path) -> int:
    """Copy a shrunken Qwen3 tokenizer into ``dst``: the first SMALL_VOCAB ids, the merges among them and
    the 26 added tokens renumbered after them. Returns the vocabulary size to put in config.json."""
    tok = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = {t: i for t, i in tok["model"]["vocab"].items() if i < SMALL_VOCAB}
    merges = [m for m in tok["model"]["merges"] if m[0] in vocab and m[1] in vocab and m[0] + m[1] in vocab]
    tok["model"]["vocab"], tok["model"]["merges"] = vocab, merges
    for n, entry in enumerate(tok["added_tokens"]):
        entry["id"] = SMALL_VOCAB + n
    config = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("added_tokens_decoder", None)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    (dst / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return SMALL_VOCAB + 32  # a few unused ids at the end, as real checkpoints have


def build_model(kind: str, dst: Path, tokenizer_src: Path, *, tied: bool = True, shard: bool = False, **extra) -> Path:
    """A tiny random model of ``kind`` (qwen3, qwen3moe, qwen2, llama) with the small tokenizer."""
    import torch
    import transformers

    n_vocab = small_tokenizer(dst, tokenizer_src)
    common = dict(
        vocab_size=n_vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=tied,
        rms_norm_eps=1e-6,
        eos_token_id=SMALL_VOCAB + 2,
    )
    config_cls, model_cls = {
        "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
        "qwen3moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM"),
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
        "llama": ("LlamaConfig", "LlamaForCausalLM"),
    }[kind]
    if kind in ("qwen3", "qwen3moe"):
        common["head_dim"] = 16
    if kind == "qwen3moe":
        common |= dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=True)
    config = getattr(transformers, config_cls)(**(common | extra))
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config).to(torch.bfloat16)
    with torch.no_grad():  # random norms and biases, so a swapped tensor cannot pass unnoticed
        for param in model.parameters():
            if param.dim() == 1:
                param.normal_(1.0, 0.1)
    model.save_pretrained(dst, max_shard_size="60KB" if shard else "5GB")
    return dst


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def write_safetensors_raw(path: Path, header: bytes, data: bytes = b"") -> None:
    """A safetensors file with exactly this header text (however broken) followed by ``data``."""
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


def edit_safetensors(path: Path, edit) -> None:
    """Let ``edit`` change the header table of a safetensors file in place; the data bytes stay as they are."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    edit(header)
    write_safetensors_raw(path, json.dumps(header).encode(), raw[8 + length :])


def rewrite_gguf(src: Path, dst: Path, *, kv: dict | None = None, drop: tuple[str, ...] = ()) -> Path:
    """Copy an F32 GGUF with gguf's own writer, changing metadata values (same value types) or dropping
    tensors: the way to make a file whose tensors disagree with its metadata."""
    import gguf

    reader = read_gguf(src)
    arch = field(reader, "general.architecture")
    writer = gguf.GGUFWriter(dst, arch)
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.alignment"):
            continue
        value = (kv or {}).get(key, f.contents())
        writer.add_key_value(key, value, f.types[0], f.types[1] if len(f.types) > 1 else None)
    for tensor in reader.tensors:
        if tensor.name not in drop:
            writer.add_tensor(tensor.name, np.array(tensor.data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def leftovers(folder: Path) -> list[str]:
    """GGUF files and hidden (temporary) files in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".gguf" or p.name.startswith("."))
