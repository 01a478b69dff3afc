"""Counts in the converter's messages agree with their nouns: "1 byte", never "1 bytes"."""

from __future__ import annotations

import pytest

from orchestrator.errors import UsageError


def test_a_safetensors_file_one_byte_short(model_copy, tmp_path):
    from orchestrator.gguf import convert_model

    weights = model_copy / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size - 1)
    with pytest.raises(UsageError, match="ends 1 byte past the end of the file"):
        convert_model(model_copy, tmp_path / "out.gguf", "f16")


def test_a_gguf_one_byte_short(small_model, tmp_path):
    from orchestrator.gguf import convert_model, inspect_gguf, read_gguf_header

    path = convert_model(small_model, tmp_path / "t.gguf", "f16").path
    end = max(t.offset + t.n_bytes for t in read_gguf_header(path).tensors)
    with open(path, "r+b") as handle:
        handle.truncate(end - 1)
    assert "tensor data runs 1 byte past the end of the file" in inspect_gguf(path)["problems"]
