"""The converter's own Q8_0 path is bit-for-bit gguf.quants.quantize (ggml's reference), on hard inputs."""

from __future__ import annotations

import numpy as np
import pytest


def hard_values(rng: np.random.Generator, n_blocks: int = 4096) -> np.ndarray:
    """Random blocks, plus blocks full of exact .5 ties, zeros, signed zeros, huge and tiny magnitudes."""
    x = (rng.standard_normal((n_blocks, 32)) * 0.05).astype(np.float32)
    x[:64] = rng.integers(-254, 255, (64, 32)).astype(np.float32) * np.float32(0.5)  # x/d lands on .5 ties
    x[64] = 0.0
    x[65] = -0.0
    x[66] = np.float32(3e38) * np.sign(rng.standard_normal(32)).astype(np.float32)
    x[67] = np.float32(1e-30) * rng.standard_normal(32).astype(np.float32)
    x[68, 0] = 127.0  # the 1/d product lands exactly on integers and just below .5
    x[68, 1:] = np.nextafter(np.float32(0.5), np.float32(0)) * np.arange(1, 32, dtype=np.float32)
    x[69] = np.float32(np.nextafter(np.float32(0.5), np.float32(0)))
    return x


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("src_dtype", ["BF16", "F16", "F32"])
def test_q8_0_is_bit_exact_with_gguf_quants(src_dtype):
    import gguf

    from orchestrator.gguf.quant import encode, to_f32

    x = hard_values(np.random.default_rng(7))
    if src_dtype == "BF16":
        raw = gguf.quants.quantize(x, gguf.GGMLQuantizationType.BF16).view(np.uint16).reshape(x.shape)
    elif src_dtype == "F16":
        raw = np.clip(x, -6e4, 6e4).astype(np.float16)
    else:
        raw = x
    rows = raw.reshape(-1, 256)
    want = gguf.quants.quantize(to_f32(rows, src_dtype), gguf.GGMLQuantizationType.Q8_0)
    got = encode(rows, src_dtype, "Q8_0")
    assert got.dtype == np.uint8 and got.reshape(-1).tobytes() == want.reshape(-1).tobytes()


@pytest.mark.parametrize("qtype", ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_other_types_are_gguf_quants(qtype):
    import gguf

    from orchestrator.gguf.quant import encode, to_f32

    x = hard_values(np.random.default_rng(3))[70:]
    raw = gguf.quants.quantize(x, gguf.GGMLQuantizationType.BF16).view(np.uint16).reshape(-1, 64)
    got = encode(raw, "BF16", qtype)
    want = gguf.quants.quantize(to_f32(raw, "BF16"), gguf.GGMLQuantizationType[qtype])
    assert np.asarray(got).reshape(-1).view(np.uint8).tobytes() == np.asarray(want).reshape(-1).view(np.uint8).tobytes()


def test_bf16_to_f16_matches_numpy_for_every_bit_pattern():
    from orchestrator.gguf.quant import encode, to_f32

    bits = np.arange(0, 1 << 16, dtype=np.uint16).reshape(-1, 256)
    with np.errstate(over="ignore"):
        want = to_f32(bits, "BF16").astype(np.float16)
    got = encode(bits, "BF16", "F16")
    assert got.dtype == np.float16 and np.array_equal(got.view(np.uint16), want.view(np.uint16))


def test_bf16_widens_exactly():
    from orchestrator.gguf.quant import to_f32

    bits = np.arange(0, 1 << 16, dtype=np.uint16)
    bits = bits[(bits & 0x7F80) != 0x7F80]  # leave out inf/nan
    want = (bits.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(to_f32(bits.reshape(-1, 2), "BF16").reshape(-1), want)
