"""A GGUF is only written when every tensor fits the config, and `inspect` checks the same of a file.

The converter compares each tensor's shape with what config.json implies (embedding and output
[vocab, hidden], attention [heads x head_dim, hidden], norms, MLP, MoE experts), each safetensors byte
range with shape x itemsize, and each block's tensor set with the others'. `inspect` compares a GGUF's
tensor shapes with its own metadata.
"""

from __future__ import annotations

import pytest
from test_gguf_support import build_model, edit_config, edit_safetensors, leftovers, rewrite_gguf

from orchestrator.cli import main


def convert(capsys, source, out, *extra) -> tuple[int, str]:
    code = main(["gguf", "convert", str(source), str(out), *extra])
    return code, capsys.readouterr().err


def assert_refused(code, err, folder, *words):
    """Exit 2 with one error line holding ``words``, and nothing written into ``folder``."""
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    assert leftovers(folder) == []


@pytest.mark.parametrize(
    "key, value",
    [
        ("hidden_size", 128),
        ("num_attention_heads", 8),
        ("num_key_value_heads", 4),
        ("head_dim", 32),
        ("intermediate_size", 100),
        ("vocab_size", 2048),
    ],
)
def test_config_that_disagrees_with_the_weights_is_refused(model_copy, tmp_path, capsys, key, value):
    edit_config(model_copy, **{key: value})
    code, err = convert(capsys, model_copy, tmp_path / "m.gguf")
    assert_refused(code, err, tmp_path, "config.json", key, "model.safetensors")


def test_zero_attention_heads_is_refused(model_copy, tmp_path, capsys):
    edit_config(model_copy, num_attention_heads=0)
    code, err = convert(capsys, model_copy, tmp_path / "m.gguf")
    assert_refused(code, err, tmp_path, "config.json", "num_attention_heads")


@pytest.mark.parametrize(
    "drop, words",
    [
        (["model.layers.1.mlp.up_proj.weight"], ["layer 1", "ffn_up"]),
        (["model.layers.0.self_attn.q_norm.weight", "model.layers.1.self_attn.q_norm.weight"], ["attn_q_norm"]),
    ],
)
def test_a_block_missing_a_tensor_is_refused(model_copy, tmp_path, capsys, drop, words):
    edit_safetensors(model_copy / "model.safetensors", lambda header: [header.pop(name) for name in drop])
    code, err = convert(capsys, model_copy, tmp_path / "m.gguf")
    assert_refused(code, err, tmp_path, *words)


def test_a_tensor_only_some_blocks_have_is_refused(model_copy, tmp_path, capsys):
    def add_bias(header):  # 64 BF16 values: the bytes of layer 0's input norm serve as a q bias
        header["model.layers.0.self_attn.q_proj.bias"] = dict(header["model.layers.0.input_layernorm.weight"])

    edit_safetensors(model_copy / "model.safetensors", add_bias)
    code, err = convert(capsys, model_copy, tmp_path / "m.gguf")
    assert_refused(code, err, tmp_path, "layer 1", "attn_q.bias")


def shrink_range(header):
    start, end = header["model.norm.weight"]["data_offsets"]
    header["model.norm.weight"]["data_offsets"] = [start, start + (end - start) // 2]


def grow_shape(header):
    header["model.norm.weight"]["shape"] = [128]


@pytest.mark.parametrize("edit", [shrink_range, grow_shape])
def test_a_shape_larger_than_its_byte_range_is_refused(model_copy, tmp_path, capsys, edit):
    edit_safetensors(model_copy / "model.safetensors", edit)
    code, err = convert(capsys, model_copy, tmp_path / "m.gguf")
    assert_refused(code, err, tmp_path, "model.safetensors", "model.norm.weight", "bytes")


@pytest.fixture(scope="module")
def moe_model(tiny_model, tmp_path_factory):
    return build_model("qwen3moe", tmp_path_factory.mktemp("moe") / "moe", tiny_model, tied=False)


@pytest.mark.parametrize("key, value", [("moe_intermediate_size", 48), ("hidden_size", 32)])
def test_moe_experts_that_disagree_with_the_config_are_refused(moe_model, tmp_path, capsys, key, value):
    import shutil

    folder = shutil.copytree(moe_model, tmp_path / "moe")
    edit_config(folder, **{key: value})
    code, err = convert(capsys, folder, tmp_path / "m.gguf")
    assert_refused(code, err, tmp_path, "config.json", key)


@pytest.fixture(scope="module")
def good_gguf(small_model, tmp_path_factory):
    from orchestrator.gguf import convert_model

    return convert_model(small_model, tmp_path_factory.mktemp("good") / "good.gguf", "f32").path


@pytest.mark.parametrize(
    "change, words",
    [
        ({"kv": {"qwen3.embedding_length": 32}}, ["qwen3.embedding_length"]),
        ({"kv": {"qwen3.attention.head_count": 8}}, ["qwen3.attention.head_count"]),
        ({"kv": {"qwen3.attention.head_count_kv": 4}}, ["qwen3.attention.head_count_kv"]),
        ({"kv": {"qwen3.feed_forward_length": 100}}, ["qwen3.feed_forward_length"]),
        ({"kv": {"qwen3.block_count": 3}}, ["blk.2", "qwen3.block_count"]),
        ({"kv": {"qwen3.attention.head_count": 0}}, ["qwen3.attention.head_count"]),
        ({"drop": ("blk.1.ffn_up.weight",)}, ["blk.1.ffn_up.weight"]),
        ({"kv": {"tokenizer.ggml.tokens": [f"t{i}" for i in range(1000)]}}, ["vocabulary"]),
    ],
)
def test_inspect_checks_tensor_shapes_against_the_metadata(good_gguf, tmp_path, capsys, change, words):
    from orchestrator.gguf import inspect_gguf

    path = rewrite_gguf(good_gguf, tmp_path / "bad.gguf", **change)
    info = inspect_gguf(path)
    assert not info["verified"]
    problems = "; ".join(info["problems"])
    for word in words:
        assert word in problems, problems
    assert main(["gguf", "inspect", str(path)]) == 1
    printed = capsys.readouterr().out
    assert "PROBLEMS" in printed and "OK" not in printed


def test_adapter_for_another_base_is_refused(tiny_model, small_model, tmp_path, capsys):
    """The tiny Qwen3's adapter (MLP of 128) on the small model (MLP of 96): lora_B cannot fit."""
    from test_gguf_adapter import write_adapter

    write_adapter(tmp_path / "adapter", tiny_model)
    argv = [str(tmp_path / "adapter"), str(tmp_path / "a.gguf"), "--adapter", "--base", str(small_model)]
    code, err = convert(capsys, *argv)
    assert_refused(code, err, tmp_path, "intermediate_size", "--base")
