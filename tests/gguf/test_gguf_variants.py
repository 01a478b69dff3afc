"""Item 1: every supported layout converts as llama.cpp's loaders expect, with the right values.

Small random models (hidden 64, 2 layers, a 1,056-token byte-level BPE vocabulary cut from Qwen3's)
of Qwen3 tied/untied, Qwen3-MoE (per-expert and fused expert tensors), Qwen2 (q/k/v biases), Llama
(q/k rows reordered for llama.cpp's rope) and a sharded checkpoint.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_gguf_support import build_model, field, hf_tensors, loader_spec, read_gguf

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
VARIANTS = {
    "qwen3": dict(kind="qwen3"),
    "qwen3-untied": dict(kind="qwen3", tied=False),
    "qwen3moe": dict(kind="qwen3moe", tied=False),
    "qwen2": dict(kind="qwen2"),
    "llama": dict(kind="llama", attention_bias=True, rope_scaling=LLAMA3_ROPE, rope_theta=500000.0),
    "qwen3-sharded": dict(kind="qwen3", shard=True),
}


@pytest.fixture(scope="session")
def variants(tiny_model, tmp_path_factory):
    """name -> (model folder, F32 GGUF read back, HF tensors)."""
    from orchestrator.gguf import convert_model

    root = tmp_path_factory.mktemp("variants")
    out = {}
    for name, spec in VARIANTS.items():
        spec = dict(spec)
        folder = build_model(spec.pop("kind"), root / name, tiny_model, **spec)
        result = convert_model(folder, root / f"{name}.gguf", "f32")
        out[name] = (folder, result, read_gguf(result.path), hf_tensors(folder))
    return out


def hparams(folder) -> dict:
    c = json.loads((folder / "config.json").read_text())
    return {
        "n_embd": c["hidden_size"],
        "n_vocab": c["vocab_size"],
        "head_dim": c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
        "n_head": c["num_attention_heads"],
        "n_head_kv": c["num_key_value_heads"],
        "n_layer": c["num_hidden_layers"],
        "n_ff": c["intermediate_size"],
        "n_expert": c.get("num_experts") or c.get("num_local_experts"),
        "n_ff_exp": c.get("moe_intermediate_size"),
    }


def expected_tensors(name: str, folder) -> dict[str, tuple[int, ...]]:
    hp = hparams(folder)
    arch = {"qwen3moe": "qwen3moe", "qwen2": "qwen2", "llama": "llama"}.get(name, "qwen3")
    spec = loader_spec(arch, hp)
    if name in ("qwen3-untied", "qwen3moe"):
        spec["output.weight"] = (hp["n_embd"], hp["n_vocab"])
    if name in ("qwen2", "llama"):  # optional q/k/v biases, present in these checkpoints
        q, kv = hp["n_head"] * hp["head_dim"], hp["n_head_kv"] * hp["head_dim"]
        for i in range(hp["n_layer"]):
            spec |= {f"blk.{i}.attn_q.bias": (q,), f"blk.{i}.attn_k.bias": (kv,), f"blk.{i}.attn_v.bias": (kv,)}
            if name == "llama":  # attention_bias covers o_proj too in Llama
                spec[f"blk.{i}.attn_output.bias"] = (hp["n_embd"],)
    if name == "llama":
        spec["rope_freqs.weight"] = (hp["head_dim"] // 2,)
    return spec


def tensors(reader) -> dict[str, np.ndarray]:
    return {t.name: np.asarray(t.data).reshape(tuple(int(d) for d in reversed(t.shape))) for t in reader.tensors}


@pytest.mark.parametrize("name", VARIANTS)
def test_names_and_shapes_match_llama_cpp_loader(variants, name):
    folder, result, reader, _ = variants[name]
    got = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
    assert got == expected_tensors(name, folder)
    assert all(t.tensor_type.name == "F32" for t in reader.tensors)
    assert result.architecture == field(reader, "general.architecture")


@pytest.mark.parametrize("name", ["qwen3-untied", "qwen2", "qwen3-sharded"])
def test_dense_values_are_exact(variants, name):
    _, _, reader, hf = variants[name]
    got = tensors(reader)
    np.testing.assert_array_equal(got["token_embd.weight"], hf["model.embed_tokens.weight"])
    np.testing.assert_array_equal(got["blk.1.attn_q.weight"], hf["model.layers.1.self_attn.q_proj.weight"])
    np.testing.assert_array_equal(got["blk.0.ffn_down.weight"], hf["model.layers.0.mlp.down_proj.weight"])
    np.testing.assert_array_equal(got["blk.1.ffn_norm.weight"], hf["model.layers.1.post_attention_layernorm.weight"])
    if name == "qwen2":
        np.testing.assert_array_equal(got["blk.0.attn_k.bias"], hf["model.layers.0.self_attn.k_proj.bias"])
    if name == "qwen3-untied":
        np.testing.assert_array_equal(got["output.weight"], hf["lm_head.weight"])


def test_tied_embeddings_write_no_output_tensor(variants):
    _, _, reader, _ = variants["qwen3"]
    assert "output.weight" not in {t.name for t in reader.tensors}


def test_sharded_checkpoint_equals_single_file(variants):
    single, sharded = tensors(variants["qwen3"][2]), tensors(variants["qwen3-sharded"][2])
    assert len(list(variants["qwen3-sharded"][0].glob("*.safetensors"))) > 1
    assert single.keys() == sharded.keys()
    for key in single:
        np.testing.assert_array_equal(single[key], sharded[key])


def test_moe_experts_are_stacked_per_projection(variants):
    folder, _, reader, hf = variants["qwen3moe"]
    got = tensors(reader)
    hp = hparams(folder)
    for proj, gname in (("gate", "ffn_gate_exps"), ("up", "ffn_up_exps"), ("down", "ffn_down_exps")):
        stacked = np.stack([hf[f"model.layers.1.mlp.experts.{e}.{proj}_proj.weight"] for e in range(hp["n_expert"])])
        np.testing.assert_array_equal(got[f"blk.1.{gname}.weight"], stacked)
    np.testing.assert_array_equal(got["blk.0.ffn_gate_inp.weight"], hf["model.layers.0.mlp.gate.weight"])
    assert field(reader, "qwen3moe.expert_count") == hp["n_expert"]
    assert field(reader, "qwen3moe.expert_used_count") == 2
    assert field(reader, "qwen3moe.expert_feed_forward_length") == hp["n_ff_exp"]


def test_moe_fused_expert_tensors_convert_the_same(variants, tmp_path):
    """transformers' fused layout (gate_up_proj/down_proj per layer) gives the same GGUF tensors."""
    import torch
    from safetensors.torch import load_file, save_file

    from orchestrator.gguf import convert_model

    folder, _, reader, _ = variants["qwen3moe"]
    fused_dir = tmp_path / "fused"
    shutil.copytree(folder, fused_dir)
    weights = load_file(fused_dir / "model.safetensors")
    n_exp = hparams(folder)["n_expert"]
    for layer in range(2):
        p = f"model.layers.{layer}.mlp.experts"
        gate, up, down = (
            [weights.pop(f"{p}.{e}.{w}_proj.weight") for e in range(n_exp)] for w in ("gate", "up", "down")
        )
        weights[f"{p}.gate_up_proj"] = torch.stack([torch.cat([g, u]) for g, u in zip(gate, up, strict=True)])
        weights[f"{p}.down_proj"] = torch.stack(down)
    save_file(weights, fused_dir / "model.safetensors")
    fused = read_gguf(convert_model(fused_dir, tmp_path / "fused.gguf", "f32").path)
    want, got = tensors(reader), tensors(fused)
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_llama_q_k_rows_are_reordered_for_llama_cpp_rope(variants):
    folder, _, reader, hf = variants["llama"]
    got = tensors(reader)
    hp = hparams(folder)

    def to_interleaved(w, heads):  # Hugging Face rotate-half -> llama.cpp's pairs, as its converter does
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    for i in range(hp["n_layer"]):
        attn = f"model.layers.{i}.self_attn"
        np.testing.assert_array_equal(got[f"blk.{i}.attn_q.weight"], to_interleaved(hf[f"{attn}.q_proj.weight"], 4))
        np.testing.assert_array_equal(got[f"blk.{i}.attn_k.weight"], to_interleaved(hf[f"{attn}.k_proj.weight"], 2))
        np.testing.assert_array_equal(got[f"blk.{i}.attn_k.bias"], to_interleaved(hf[f"{attn}.k_proj.bias"], 2))
        np.testing.assert_array_equal(got[f"blk.{i}.attn_v.weight"], hf[f"{attn}.v_proj.weight"])
    assert field(reader, "llama.rope.dimension_count") == hp["head_dim"]
    assert field(reader, "llama.vocab_size") == hp["n_vocab"]
    factors = got["rope_freqs.weight"]
    assert factors[0] == 1.0 and factors[-1] == pytest.approx(8.0)  # high frequencies kept, low ones scaled


def test_yarn_rope_scaling_is_written(tiny_model, tmp_path):
    import gguf

    from orchestrator.gguf import convert_model
    from orchestrator.gguf.header import read_gguf_header

    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024}
    folder = build_model("qwen2", tmp_path / "yarn", tiny_model, rope_scaling=yarn)
    kv = read_gguf_header(convert_model(folder, tmp_path / "yarn.gguf", "q8_0").path).kv
    assert kv["qwen2.rope.scaling.type"] == gguf.RopeScalingType.YARN.value
    assert kv["qwen2.rope.scaling.factor"] == 4.0
    assert kv["qwen2.rope.scaling.original_context_length"] == 1024


@pytest.mark.parametrize("out_type", ["bf16", "q8_0"])
def test_moe_router_and_norms_stay_f32(variants, tmp_path, out_type):
    from orchestrator.gguf import convert_model

    folder = variants["qwen3moe"][0]
    reader = read_gguf(convert_model(folder, tmp_path / "moe.gguf", out_type).path)
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.ffn_gate_inp.weight"] == "F32"
    assert kinds["blk.0.attn_q_norm.weight"] == "F32"
    assert kinds["blk.0.ffn_gate_exps.weight"] == out_type.upper()
    assert kinds["output.weight"] == out_type.upper()


def test_rows_that_are_not_whole_blocks_fall_back_to_f16_with_a_note(tiny_model, tmp_path):
    from orchestrator.gguf import convert_model

    folder = build_model("qwen3", tmp_path / "odd", tiny_model, intermediate_size=100)
    result = convert_model(folder, tmp_path / "odd.gguf", "q8_0")
    kinds = {t.name: t.tensor_type.name for t in read_gguf(result.path).tensors}
    assert kinds["blk.0.ffn_down.weight"] == "F16"  # rows of 100 values: not whole 32-value blocks
    assert kinds["blk.0.ffn_up.weight"] == "Q8_0"  # rows of 64 values
    assert any("blk.0.ffn_down.weight: row length 100" in note for note in result.notes)
    assert any(line.startswith("note: blk.1.ffn_down.weight") for line in result.lines())
