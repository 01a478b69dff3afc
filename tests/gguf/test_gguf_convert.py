"""The tiny Qwen3 (real tokenizer) converted in every type and read back with gguf.GGUFReader."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from test_gguf_support import QWEN2_REGEX, field, hf_tensors, loader_spec, read_gguf

TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1")
HF_NAMES = {  # GGUF name (block part stripped) -> Hugging Face name
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
SAMPLE = (
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello, world! Привет, мир. 你好，世界。"
    " こんにちは 안녕하세요 مرحبا 12345 3.14159 I've 'll don't\t\ttabs  and   spaces\n\n🦙🚀 café naïve"
    "<|im_end|>\n<|im_start|>assistant\n<think>\nadd 2+2\n</think>\n\n4<tool_call>{}</tool_call><|endoftext|>"
)


def hf_name(gguf_name: str) -> str:
    if gguf_name.startswith("blk."):
        _, bid, rest = gguf_name.split(".", 2)
        return f"model.layers.{bid}.{HF_NAMES[rest]}"
    return HF_NAMES[gguf_name]


@pytest.fixture(scope="session")
def hf_values(tiny_model):
    return hf_tensors(tiny_model)


@pytest.fixture(scope="session")
def converted(tiny_model, tmp_path_factory):
    """Every type converted once; each file read back once with gguf.GGUFReader."""
    from orchestrator.gguf import convert_model

    out = tmp_path_factory.mktemp("gguf")
    files = {}
    for out_type in TYPES:
        result = convert_model(tiny_model, out / f"tiny-{out_type}.gguf", out_type)
        files[out_type] = (result, read_gguf(result.path))
    return files


def tiny_hparams(tiny_model) -> dict:
    config = json.loads((tiny_model / "config.json").read_text())
    return {
        "n_embd": config["hidden_size"],
        "n_vocab": config["vocab_size"],
        "head_dim": config["head_dim"],
        "n_head": config["num_attention_heads"],
        "n_head_kv": config["num_key_value_heads"],
        "n_layer": config["num_hidden_layers"],
        "n_ff": config["intermediate_size"],
    }


def expected_type(name: str, shape: tuple[int, ...], out_type: str) -> str:
    if len(shape) == 1:
        return "F32"
    if out_type in ("q4_0", "q4_1", "q5_0", "q5_1") and name == "token_embd.weight":
        return "Q8_0"  # tied embeddings: the output matrix stays at Q8_0
    return out_type.upper()


def error_bound(out_type: str, ref: np.ndarray) -> np.ndarray:
    """Per-value bound of the quantization error, from each 32-value block's range."""
    blocks = ref.reshape(-1, 32)
    amax = np.abs(blocks).max(axis=1, keepdims=True)
    lo, hi = blocks.min(axis=1, keepdims=True), blocks.max(axis=1, keepdims=True)
    bound = {
        "Q8_0": 0.57 * amax / 127,
        "Q4_0": 1.01 * amax / 8,  # the value opposite the block maximum clips at 7 steps
        "Q5_0": 1.01 * amax / 16,
        "Q4_1": 0.51 * (hi - lo) / 15 + np.abs(lo) / 1024,
        "Q5_1": 0.51 * (hi - lo) / 31 + np.abs(lo) / 1024,
    }[out_type]
    return np.broadcast_to(bound + 1e-12, blocks.shape).reshape(ref.shape)


@pytest.mark.parametrize("out_type", TYPES)
def test_tensors_match_llama_cpp_loader(converted, tiny_model, out_type):
    result, reader = converted[out_type]
    spec = loader_spec("qwen3", tiny_hparams(tiny_model))
    got = {t.name: t for t in reader.tensors}
    assert set(got) == set(spec), "tied embeddings: no output.weight, nothing extra"
    for name, shape in spec.items():
        tensor = got[name]
        assert tuple(int(d) for d in tensor.shape) == shape, name
        assert tensor.tensor_type.name == expected_type(name, shape, out_type), name
    assert result.tensor_types == dict(Counter(t.tensor_type.name for t in reader.tensors))


@pytest.mark.parametrize("out_type", TYPES)
def test_values_match_safetensors(converted, hf_values, out_type):
    import gguf

    _, reader = converted[out_type]
    for tensor in reader.tensors:
        ref = hf_values[hf_name(tensor.name)]
        got = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type).reshape(ref.shape)
        kind = tensor.tensor_type.name
        if kind in ("F32", "BF16"):
            np.testing.assert_array_equal(got, ref, err_msg=tensor.name)
        elif kind == "F16":
            np.testing.assert_array_equal(got, ref.astype(np.float16).astype(np.float32), err_msg=tensor.name)
        else:
            err = np.abs(got - ref)
            assert (err <= error_bound(kind, ref)).all(), f"{tensor.name}: max error {err.max()}"


@pytest.mark.parametrize("out_type", TYPES)
def test_metadata_for_llama_cpp_and_ollama(converted, tiny_model, out_type):
    import gguf

    result, reader = converted[out_type]
    hp = tiny_hparams(tiny_model)
    assert field(reader, "general.architecture") == "qwen3"
    assert field(reader, "general.type") == "model"
    assert (
        field(reader, "general.file_type")
        == gguf.LlamaFileType["ALL_F32" if out_type == "f32" else f"MOSTLY_{out_type.upper()}"]
    )
    assert field(reader, "general.quantization_version") == gguf.GGML_QUANT_VERSION
    assert field(reader, "general.name") and field(reader, "general.size_label")
    expected = {
        "context_length": 4096,
        "embedding_length": hp["n_embd"],
        "block_count": hp["n_layer"],
        "feed_forward_length": hp["n_ff"],
        "attention.head_count": hp["n_head"],
        "attention.head_count_kv": hp["n_head_kv"],
        "attention.key_length": hp["head_dim"],
        "attention.value_length": hp["head_dim"],
        "rope.freq_base": 1_000_000.0,
    }
    for key, value in expected.items():
        assert field(reader, f"qwen3.{key}") == value, key
    assert field(reader, "qwen3.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)
    assert result.file_type == out_type.upper() and result.bytes_written == result.path.stat().st_size


def test_vocabulary(converted, tiny_model):
    import gguf

    _, reader = converted["q8_0"]
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == 151_936
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "qwen2"
    assert field(reader, "tokenizer.ggml.eos_token_id") == 151_645
    assert field(reader, "tokenizer.ggml.padding_token_id") == 151_643
    assert field(reader, "tokenizer.ggml.bos_token_id") == 151_643
    assert field(reader, "tokenizer.ggml.add_bos_token") is False
    kinds = gguf.TokenType
    assert types[tokens.index("<|im_end|>")] == kinds.CONTROL
    assert types[tokens.index("<|fim_prefix|>")] == kinds.CONTROL  # not flagged special, but looks it
    assert types[tokens.index("<think>")] == kinds.USER_DEFINED
    assert types[tokens.index("<tool_call>")] == kinds.USER_DEFINED
    assert tokens[151_700] == "[PAD151700]" and types[151_700] == kinds.UNUSED
    assert types[tokens.index("Hello")] == kinds.NORMAL
    config = json.loads((tiny_model / "tokenizer_config.json").read_text())
    assert field(reader, "tokenizer.chat_template") == config["chat_template"]


def test_vocab_and_merges_reencode_like_hugging_face(converted, tiny_model):
    """A BPE tokenizer built only from the GGUF's tokens and merges encodes like the HF tokenizer."""
    import gguf
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    _, reader = converted["q8_0"]
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ")) for m in field(reader, "tokenizer.ggml.merges")]
    normal = {t: i for i, (t, k) in enumerate(zip(tokens, types, strict=True)) if k == gguf.TokenType.NORMAL}
    rebuilt = Tokenizer(models.BPE(normal, merges, ignore_merges=False))
    rebuilt.normalizer = normalizers.NFC()
    rebuilt.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    rebuilt.decoder = decoders.ByteLevel()
    special = (gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED)
    added = [(i, t, k) for i, (t, k) in enumerate(zip(tokens, types, strict=True)) if k in special]
    rebuilt.add_special_tokens(
        [AddedToken(t, special=k == gguf.TokenType.CONTROL, normalized=False) for _, t, k in added]
    )
    assert all(rebuilt.token_to_id(t) == i for i, t, _ in added)

    reference = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    want = reference.encode(SAMPLE, add_special_tokens=False).ids
    got = rebuilt.encode(SAMPLE, add_special_tokens=False).ids
    assert got == want
    assert 151_644 in got and 151_667 in got  # <|im_start|> and <think> stay single tokens
    assert rebuilt.decode(got, skip_special_tokens=False) == SAMPLE


def test_pre_tokenizer_regex_is_the_one_in_the_tokenizer(tiny_model):
    tok = json.loads((tiny_model / "tokenizer.json").read_text())
    assert tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] == QWEN2_REGEX
