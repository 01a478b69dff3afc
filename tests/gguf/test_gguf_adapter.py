"""Item 5: a PEFT LoRA adapter folder becomes a GGUF LoRA adapter llama.cpp/Ollama apply on the base."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_gguf_support import build_model, field, loader_spec, read_gguf

from orchestrator.errors import UsageError

RANK, ALPHA = 8, 16
TARGETS = {  # PEFT module suffix -> (GGUF tensor, in features, out features) for the tiny Qwen3
    "self_attn.q_proj": ("attn_q", 64, 64),
    "self_attn.k_proj": ("attn_k", 64, 32),
    "self_attn.v_proj": ("attn_v", 64, 32),
    "self_attn.o_proj": ("attn_output", 64, 64),
    "mlp.gate_proj": ("ffn_gate", 64, 128),
    "mlp.up_proj": ("ffn_up", 64, 128),
    "mlp.down_proj": ("ffn_down", 128, 64),
}


def write_adapter(folder, base, *, layers=2, targets=TARGETS, extra_config=None, extra_tensors=None, seed=0):
    """An adapter folder exactly as PEFT saves one: adapter_config.json + adapter_model.safetensors."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors = {}
    for i in range(layers):
        for module, (_, n_in, n_out) in targets.items():
            prefix = f"base_model.model.model.layers.{i}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((RANK, n_in)).astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal((n_out, RANK)).astype(np.float32) * 0.1
    tensors |= extra_tensors or {}
    config = {
        "peft_type": "LORA",
        "r": RANK,
        "lora_alpha": ALPHA,
        "base_model_name_or_path": str(base),
        "target_modules": sorted({m.split(".")[-1] for m in targets}),
        "use_rslora": False,
        "use_dora": False,
    } | (extra_config or {})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    save_file(tensors, folder / "adapter_model.safetensors")
    return tensors


def lora(reader) -> dict[str, np.ndarray]:
    return {
        t.name: np.asarray(t.data, dtype=np.float32).reshape(tuple(int(d) for d in reversed(t.shape)))
        for t in reader.tensors
    }


def test_adapter_gguf_has_adapter_metadata_and_base_tensor_names(tiny_model, tmp_path):
    from orchestrator.gguf import convert_adapter, inspect_gguf

    source = write_adapter(tmp_path / "adapter", tiny_model)
    result = convert_adapter(tmp_path / "adapter", tmp_path / "adapter.gguf")  # base from adapter_config
    reader = read_gguf(result.path)
    assert field(reader, "general.type") == "adapter"
    assert field(reader, "adapter.type") == "lora"
    assert field(reader, "adapter.lora.alpha") == ALPHA
    assert field(reader, "general.architecture") == "qwen3"
    hp = {"n_embd": 64, "n_vocab": 151_936, "head_dim": 16, "n_head": 4, "n_head_kv": 2, "n_layer": 2, "n_ff": 128}
    base_names = set(loader_spec("qwen3", hp))  # what llama.cpp's qwen3 loader creates
    got = lora(reader)
    assert len(got) == 2 * len(TARGETS) * 2
    for i in range(2):
        for module, (gname, n_in, n_out) in TARGETS.items():
            name = f"blk.{i}.{gname}.weight"
            assert name in base_names
            a, b = got[f"{name}.lora_a"], got[f"{name}.lora_b"]
            assert a.shape == (RANK, n_in) and b.shape == (n_out, RANK)  # ggml: {in, r} and {r, out}
            prefix = f"base_model.model.model.layers.{i}.{module}"
            np.testing.assert_array_equal(a, source[f"{prefix}.lora_A.weight"].astype(np.float16).astype(np.float32))
            np.testing.assert_array_equal(b, source[f"{prefix}.lora_B.weight"].astype(np.float16).astype(np.float32))
    assert result.kind == "adapter" and result.tensor_types == {"F16": 28}
    info = inspect_gguf(result.path, read_back=True)
    assert info["kind"] == "adapter" and info["verified"] and info["lora_alpha"] == ALPHA


def test_lora_a_precedes_lora_b_for_every_weight(tiny_model, tmp_path):
    from orchestrator.gguf import convert_adapter

    write_adapter(tmp_path / "adapter", tiny_model, layers=1)
    names = [t.name for t in read_gguf(convert_adapter(tmp_path / "adapter", tmp_path / "a.gguf").path).tensors]
    for a, b in zip(names[::2], names[1::2], strict=True):
        assert a.endswith(".lora_a") and b == a[:-1] + "b"


def test_rslora_scale_is_folded_into_alpha(tiny_model, tmp_path):
    from orchestrator.gguf import convert_adapter

    write_adapter(tmp_path / "adapter", tiny_model, extra_config={"use_rslora": True})
    result = convert_adapter(tmp_path / "adapter", tmp_path / "a.gguf", base_model_dir=tiny_model, out_type="f32")
    # llama.cpp applies alpha / r; PEFT's rsLoRA applies lora_alpha / sqrt(r)
    assert field(read_gguf(result.path), "adapter.lora.alpha") / RANK == pytest.approx(ALPHA / math.sqrt(RANK))
    assert any("rsLoRA" in note for note in result.notes)


def test_alpha_pattern_scales_lora_b_of_that_module(tiny_model, tmp_path):
    from orchestrator.gguf import convert_adapter

    source = write_adapter(tmp_path / "adapter", tiny_model, extra_config={"alpha_pattern": {"v_proj": 32}})
    got = lora(read_gguf(convert_adapter(tmp_path / "adapter", tmp_path / "a.gguf", out_type="f32").path))
    b = source["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"]
    np.testing.assert_allclose(got["blk.0.attn_v.weight.lora_b"], b * 2, rtol=1e-6)
    q = source["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    np.testing.assert_array_equal(got["blk.0.attn_q.weight.lora_b"], q)


def test_llama_adapter_reorders_q_k_lora_b_rows(tiny_model, tmp_path):
    from orchestrator.gguf import convert_adapter

    base = build_model("llama", tmp_path / "llama", tiny_model)
    targets = {"self_attn.q_proj": ("attn_q", 64, 64), "self_attn.k_proj": ("attn_k", 64, 32)}
    source = write_adapter(tmp_path / "adapter", base, targets=targets)
    got = lora(read_gguf(convert_adapter(tmp_path / "adapter", tmp_path / "a.gguf", out_type="f32").path))
    b = source["base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"]
    reordered = b.reshape(2, 2, 8, RANK).swapaxes(1, 2).reshape(b.shape)  # 2 kv heads of 16 rows
    np.testing.assert_array_equal(got["blk.0.attn_k.weight.lora_b"], reordered)
    a = source["base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"]
    np.testing.assert_array_equal(got["blk.0.attn_k.weight.lora_a"], a)


def test_moe_expert_loras_stack(tiny_model, tmp_path):
    from orchestrator.gguf import convert_adapter

    base = build_model("qwen3moe", tmp_path / "moe", tiny_model)
    targets = {f"mlp.experts.{e}.up_proj": ("", 64, 32) for e in range(4)}
    source = write_adapter(tmp_path / "adapter", base, layers=1, targets=targets)
    got = lora(read_gguf(convert_adapter(tmp_path / "adapter", tmp_path / "a.gguf", out_type="f32").path))
    stacked = np.stack(
        [source[f"base_model.model.model.layers.0.mlp.experts.{e}.up_proj.lora_B.weight"] for e in range(4)]
    )
    np.testing.assert_array_equal(got["blk.0.ffn_up_exps.weight.lora_b"], stacked)
    assert got["blk.0.ffn_up_exps.weight.lora_a"].shape == (4, RANK, 64)


def test_adapter_saved_by_peft_converts(tiny_model, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from orchestrator.gguf import convert_adapter

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    result = convert_adapter(tmp_path / "adapter", tmp_path / "a.gguf", base_model_dir=tiny_model)
    names = {t.name for t in read_gguf(result.path).tensors}
    assert names == {f"blk.{i}.{w}.weight.lora_{ab}" for i in (0, 1) for w in ("attn_q", "ffn_down") for ab in "ab"}


def test_refusals(tiny_model, tmp_path):
    from orchestrator.gguf import convert_adapter, convert_model

    write_adapter(tmp_path / "adapter", tiny_model)
    with pytest.raises(UsageError, match="LoRA adapter, not a model"):
        convert_model(tmp_path / "adapter", tmp_path / "x.gguf")
    with pytest.raises(UsageError, match="model folder, not a LoRA adapter"):
        convert_adapter(tiny_model, tmp_path / "x.gguf")
    write_adapter(tmp_path / "dora", tiny_model, extra_config={"use_dora": True})
    with pytest.raises(UsageError, match="DoRA"):
        convert_adapter(tmp_path / "dora", tmp_path / "x.gguf")
    embed = {"base_model.model.model.embed_tokens.weight": np.zeros((4, 64), np.float32)}
    write_adapter(tmp_path / "saved", tiny_model, extra_tensors=embed)
    with pytest.raises(UsageError, match="serve this run merged"):
        convert_adapter(tmp_path / "saved", tmp_path / "x.gguf")
    write_adapter(tmp_path / "nobase", tmp_path / "no-such-base")
    with pytest.raises(UsageError, match="pass the base model"):
        convert_adapter(tmp_path / "nobase", tmp_path / "x.gguf")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*"))
