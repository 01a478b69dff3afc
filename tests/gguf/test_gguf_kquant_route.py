"""A K-quant left to Ollama (no llama-quantize): the 16-bit file is named for what it holds, records the
asked-for type in its header, and the summary says where the quantization happens."""

from __future__ import annotations

import json

import pytest
from test_gguf_support import leftovers

from orchestrator.cli import main


@pytest.fixture
def no_llama_quantize(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)


@pytest.mark.parametrize(
    ("asked", "out_type", "written"),
    [
        ("m-q4_k_m.gguf", "q4_k_m", "m-bf16.gguf"),
        ("m.Q4_K_S.gguf", "q4_k_s", "m.BF16.gguf"),
        ("q4_k_m.gguf", "q4_k_m", "bf16.gguf"),
        ("model.gguf", "q4_k_m", "model.gguf"),  # a name that claims no type keeps it
    ],
)
def test_the_file_is_named_for_its_type_and_records_the_target(
    small_model, tmp_path, no_llama_quantize, asked, out_type, written
):
    from orchestrator.gguf import convert_model, inspect_gguf, read_gguf_header
    from orchestrator.gguf.types import QUANTIZE_TO_KEY, ollama_quantize_name

    result = convert_model(small_model, tmp_path / asked, out_type)
    assert result.path == tmp_path / written and result.path.is_file()
    assert leftovers(tmp_path) == [written]
    assert (result.requested_type, result.file_type, result.kquant_route) == (out_type, "BF16", "ollama")
    target = ollama_quantize_name(out_type)
    assert QUANTIZE_TO_KEY == "orchestrator.quantize_to"
    assert read_gguf_header(result.path).kv[QUANTIZE_TO_KEY] == target
    assert inspect_gguf(result.path)["quantize_to"] == target
    assert (
        f"{out_type}: llama-quantize not found; wrote BF16 to {result.path}; "
        f"Ollama quantizes it to {target} when it is registered"
    ) in result.lines()


def test_cli_prints_where_it_wrote_and_who_quantizes(small_model, tmp_path, capsys, no_llama_quantize):
    asked = tmp_path / "run" / "mine-q4_k_m.gguf"
    assert main(["gguf", "convert", str(small_model), str(asked), "--type", "q4_k_m"]) == 0
    out = capsys.readouterr().out
    written = tmp_path / "run" / "mine-bf16.gguf"
    assert f"wrote {written} " in out and str(asked) not in out.replace(str(written), "")
    assert "Ollama quantizes it to q4_K_M when it is registered" in out
    assert main(["gguf", "inspect", str(written), "--quick"]) == 0
    assert "quantize to:     q4_K_M (by Ollama, when registered)" in capsys.readouterr().out

    assert main(["gguf", "convert", str(small_model), str(asked), "--type", "q4_k_m", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["path"] == str(written) and data["requested_type"] == "q4_k_m" and data["file_type"] == "BF16"
    assert not asked.exists()


def test_the_renamed_file_is_checked_against_the_inputs(model_copy, tmp_path, capsys, no_llama_quantize):
    link = tmp_path / "m-bf16.gguf"
    link.symlink_to(model_copy / "model.safetensors")
    before = (model_copy / "model.safetensors").read_bytes()
    assert main(["gguf", "convert", str(model_copy), str(tmp_path / "m-q4_k_m.gguf"), "--type", "q4_k_m"]) == 2
    err = capsys.readouterr().err
    assert "is the input" in err and str(link) in err and err.count("\n") == 1
    assert (model_copy / "model.safetensors").read_bytes() == before
    assert not (tmp_path / "m-q4_k_m.gguf").exists()


def test_a_file_made_by_the_converter_at_its_type_records_no_target(small_model, tmp_path):
    from orchestrator.gguf import convert_model, inspect_gguf, read_gguf_header
    from orchestrator.gguf.types import QUANTIZE_TO_KEY

    result = convert_model(small_model, tmp_path / "m-q8_0.gguf", "q8_0")
    assert result.path == tmp_path / "m-q8_0.gguf"
    assert QUANTIZE_TO_KEY not in read_gguf_header(result.path).kv
    assert inspect_gguf(result.path)["quantize_to"] is None
