"""Item 4 and 6: clear refusals, a disk check before writing, and no partial .gguf left behind."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple

import pytest
from test_gguf_support import edit_config, leftovers

from orchestrator.errors import OrchestratorError, UsageError


def test_unknown_architecture_names_the_supported_ones(model_copy, tmp_path):
    from orchestrator.gguf import convert_model

    edit_config(model_copy, architectures=["MistralForCausalLM"])
    with pytest.raises(UsageError) as err:
        convert_model(model_copy, tmp_path / "out.gguf")
    message = str(err.value)
    assert "MistralForCausalLM" in message and "Qwen3ForCausalLM" in message and "LlamaForCausalLM" in message
    assert "\n" not in message


@pytest.mark.parametrize("missing", ["tokenizer.json", "tokenizer_config.json"])
def test_missing_tokenizer_files(model_copy, tmp_path, missing):
    from orchestrator.gguf import convert_model

    (model_copy / missing).unlink()
    with pytest.raises(UsageError, match=f"{missing} missing; copy the tokenizer files"):
        convert_model(model_copy, tmp_path / "out.gguf")


@pytest.mark.parametrize("rope", [{"rope_type": "dynamic", "factor": 2.0}, {"rope_type": "longrope", "factor": 2.0}])
def test_unsupported_rope_scaling(model_copy, tmp_path, rope):
    from orchestrator.gguf import convert_model

    edit_config(model_copy, rope_parameters={"rope_theta": 1e6, **rope})
    with pytest.raises(UsageError, match=f"rope scaling '{rope['rope_type']}' is not supported"):
        convert_model(model_copy, tmp_path / "out.gguf")


def test_not_a_model_folder(tmp_path):
    from orchestrator.gguf import convert_model

    with pytest.raises(UsageError, match="no such folder"):
        convert_model(tmp_path / "nope", tmp_path / "out.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no config.json"):
        convert_model(tmp_path / "empty", tmp_path / "out.gguf")


def test_missing_shard_is_named(small_model, tmp_path):
    from orchestrator.gguf import convert_model

    folder = shutil.copytree(small_model, tmp_path / "sharded")
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    weight_map = {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}
    weight_map["model.norm.weight"] = "model-00002-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(UsageError, match="shard model-00002-of-00002.safetensors is missing"):
        convert_model(folder, tmp_path / "out.gguf")


def test_bad_type(small_model, tmp_path):
    from orchestrator.gguf import convert_model

    with pytest.raises(UsageError, match="unknown GGUF type 'q3_x'"):
        convert_model(small_model, tmp_path / "out.gguf", "q3_x")


def test_not_enough_disk_refuses_before_writing(small_model, tmp_path, monkeypatch):
    import orchestrator.gguf.stream as stream
    from orchestrator.gguf import convert_model

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(stream.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(OrchestratorError, match="not enough disk space") as err:
        convert_model(small_model, tmp_path / "out.gguf")
    assert err.value.exit_code == 1
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupted_conversion_leaves_no_partial_file(small_model, tmp_path, exc):
    from orchestrator.gguf import convert_model

    out = tmp_path / "out.gguf"
    out.write_bytes(b"previous")

    def stop(done, total):
        if done > total // 3:
            raise exc("stop")

    with pytest.raises(exc):
        convert_model(small_model, out, "q8_0", on_progress=stop)
    assert leftovers(tmp_path) == ["out.gguf"] and out.read_bytes() == b"previous"


def test_progress_reports_bytes_up_to_the_total(small_model, tmp_path):
    from orchestrator.gguf import convert_model

    seen = []
    result = convert_model(small_model, tmp_path / "out.gguf", "bf16", on_progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1] and all(a[0] <= b[0] for a, b in zip(seen, seen[1:], strict=False))
    assert seen[-1][1] < result.bytes_written  # tensor bytes, without the header


def test_kquant_without_llama_quantize(small_model, tmp_path, monkeypatch):
    """No llama-quantize: q4_k_m is left to Ollama (a 16-bit file), other K-quants are refused."""
    from orchestrator.gguf import convert_model, inspect_gguf

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    result = convert_model(small_model, tmp_path / "m.gguf", "q4_k_m")
    assert (result.kquant_route, result.ollama_quantize, result.file_type) == ("ollama", "q4_K_M", "BF16")
    assert inspect_gguf(result.path)["file_type"] == "BF16"  # Ollama quantizes only F16/BF16/F32 sources
    assert any("Ollama" in line for line in result.lines())
    with pytest.raises(UsageError, match="q6_k needs llama.cpp's llama-quantize.*q4_k_m or q4_k_s"):
        convert_model(small_model, tmp_path / "x.gguf", "q6_k")
    assert leftovers(tmp_path) == ["m.gguf"]
