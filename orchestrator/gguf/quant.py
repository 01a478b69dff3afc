"""Encoding rows of source values into GGUF tensor bytes.

Float types and Q4_0/Q4_1/Q5_0/Q5_1 go through the gguf package (``gguf.quants.quantize``), chunk by
chunk. Q8_0, the default, has a vectorised path of its own that is bit-for-bit what
``gguf.quants.quantize`` (and ggml's reference ``quantize_row_q8_0``) produce, only quicker: the block
maximum is taken on the raw bfloat16 bits, and round-half-away-from-zero is one add and a truncation.
Both paths are checked against each other in the tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# The largest float32 below 0.5: trunc(|y| + HALF_DOWN) == roundf(|y|) for every float32 |y| <= 127.5.
HALF_DOWN = np.nextafter(np.float32(0.5), np.float32(0))
Q8_BLOCK = 32


def to_f32(rows: np.ndarray, src_dtype: str) -> np.ndarray:
    """Source rows (BF16 held as raw uint16, F16 or F32) as float32; BF16 widens exactly."""
    if src_dtype == "BF16":
        out = np.zeros(rows.shape, dtype=np.float32)
        out.view(np.uint16)[..., 1::2] = rows  # little-endian: the bf16 bits are the high half
        return out
    return rows.astype(np.float32, copy=False)


def encode(rows: np.ndarray, src_dtype: str, qtype: str) -> np.ndarray:
    """Rows of the source tensor -> the bytes of the same rows in ``qtype`` (a contiguous array)."""
    import gguf

    if qtype == src_dtype:  # BF16->BF16, F16->F16, F32->F32: the bytes as they are
        return np.ascontiguousarray(rows)
    if qtype == "Q8_0":
        return q8_0(rows, src_dtype)
    if qtype == "F16" and src_dtype == "BF16":
        return bf16_to_f16(rows)
    x = to_f32(rows, src_dtype)
    if qtype == "F32":
        return x
    return gguf.quants.quantize(x, gguf.GGMLQuantizationType[qtype])


def bf16_to_f16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 -> float16, as ``astype(float16)`` rounds it, mostly with integer operations.

    Inside float16's normal range (2**-14 <= |x| < 2**16) the conversion is exact: the 7 mantissa bits
    move into the 10 of float16 and the exponent is rebased. Only the rest (tiny values, zeros, overflow,
    nan) goes through numpy's float conversion.
    """
    exponent = (bits >> np.uint16(7)) & np.uint16(0xFF)
    rebased = (bits & np.uint16(0x8000)) | ((exponent - np.uint16(112)) << np.uint16(10))
    rebased |= (bits & np.uint16(0x7F)) << np.uint16(3)
    outside = np.flatnonzero((exponent < 113) | (exponent > 142))
    if outside.size:
        flat = rebased.reshape(-1)
        with np.errstate(over="ignore"):  # beyond float16's range is inf, as numpy makes it
            flat[outside] = to_f32(bits.reshape(-1)[outside], "BF16").astype(np.float16).view(np.uint16)
    return rebased.view(np.float16)


def q8_0(rows: np.ndarray, src_dtype: str) -> np.ndarray:
    """Q8_0 blocks: per 32 values one float16 scale ``d = max|x| / 127`` and 32 int8 ``roundf(x / d)``."""
    n_blocks = rows.size // Q8_BLOCK
    if src_dtype == "BF16":
        bits = rows.reshape(n_blocks, Q8_BLOCK)
        abs_bits = bits & np.uint16(0x7FFF)
        # |x| in bfloat16 orders like its bits, so the block maximum is an integer maximum
        amax = to_f32(abs_bits.max(axis=1), "BF16")
        mag = to_f32(abs_bits, "BF16")
        neg = (bits >> np.uint16(15)).astype(np.uint8)
    else:
        x = to_f32(rows, src_dtype).reshape(n_blocks, Q8_BLOCK)
        mag = np.abs(x)
        amax = mag.max(axis=1)
        neg = np.signbit(x).view(np.uint8)
    return q8_0_blocks(mag, amax, neg)


def q8_0_blocks(mag: np.ndarray, amax: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Assemble Q8_0 blocks from magnitudes, block maxima and sign flags (all per 32-value block)."""
    d = amax / np.float32(127)
    inv = np.zeros_like(d)
    np.divide(np.float32(1), d, out=inv, where=d != 0)
    mag *= inv[:, None]  # |x| * (1/d), the same float32 product ggml forms, sign aside
    mag += HALF_DOWN
    q = mag.astype(np.uint8)  # truncation: round half away from zero on the magnitude
    q ^= np.uint8(0) - neg  # two's complement negation where the value was negative
    q += neg
    out = np.empty((d.size, 2 + Q8_BLOCK), dtype=np.uint8)
    with np.errstate(over="ignore"):  # a scale past float16 range becomes inf, exactly as in ggml
        out[:, :2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q
    return out


def chunk_rows(row_len: int, qtype: str) -> int:
    """Rows per work item: about 256K values, a size that stays in cache and keeps both cores busy."""
    target = 1 << 18 if qtype == "Q8_0" else 1 << 20
    return max(1, target // max(1, row_len))


def apply_perm(rows: np.ndarray, perm: Any) -> np.ndarray:
    return rows if perm is None else rows[perm]
