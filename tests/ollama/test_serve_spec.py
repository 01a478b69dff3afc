"""ServeSpec: one value for the Modelfile and the registration, built by one set of rules for the
register stage and `ollama register --recipe`, with quantize taken from the gguf stage's result."""

from __future__ import annotations

import dataclasses

import pytest
from ollama_emulator import OllamaEmulator, write_gguf

from orchestrator.cli import main
from orchestrator.errors import UsageError
from orchestrator.gguf.types import TYPES
from orchestrator.ollama.modelfile import Modelfile, build_modelfile
from orchestrator.ollama.register import register_model
from orchestrator.ollama.spec import ServeSpec, quantize_for_type
from orchestrator.ollama.templates import ollama_template
from orchestrator.recipe import validate_recipe


def recipe(gguf_type: str = "q8_0", **ollama):
    return validate_recipe(
        {
            "name": "mine",
            "model": {"name_or_path": "Qwen/Qwen3-4B", "enable_thinking": False},
            "data": {"sources": [{"type": "file", "path": "data.jsonl"}]},
            "gguf": {"type": gguf_type},
            "ollama": ollama,
        }
    )


def test_from_recipe_takes_everything_the_recipe_says():
    spec = ServeSpec.from_recipe(
        recipe(name="me/mine:v1", host="gpu:1", system="Be kind.", num_ctx=2048, parameters={"top_k": 5})
    )
    assert spec == ServeSpec(
        name="me/mine:v1",
        host="gpu:1",
        template="qwen3",
        enable_thinking=False,
        system="Be kind.",
        num_ctx=2048,
        parameters={"top_k": 5},
        quantize="Q8_0",
        base_model=None,
        gguf_type="q8_0",  # the type the GGUF must be, or be made into
    )
    assert ServeSpec.from_recipe(recipe(base_model="qwen3:4b")).base_model is None  # serve: merged
    adapter = ServeSpec.from_recipe(recipe("f16", serve="adapter", base_model="qwen3:4b"))
    assert adapter.adapter_route and adapter.base_model == "qwen3:4b" and adapter.quantize is None


@pytest.mark.parametrize(
    ("details", "quantize"),
    [
        (
            {"file_type": "F16", "requested_type": "q4_k_m", "kquant_route": "ollama", "ollama_quantize": "q4_K_M"},
            "q4_K_M",
        ),
        ({"file_type": "Q4_K_M", "requested_type": "q4_k_m", "kquant_route": "llama-quantize"}, None),
        ({"file_type": "Q8_0", "requested_type": "q8_0", "kquant_route": None, "ollama_quantize": None}, None),
        ({"file_type": "F16", "requested_type": "q4_k_s", "kquant_route": "ollama"}, "q4_K_S"),
        ({}, "q4_K_M"),  # nothing recorded: the recipe's gguf.type, compared with the file at registration
    ],
)
def test_quantize_comes_from_the_gguf_stage_when_it_ran(details, quantize):
    assert ServeSpec.from_recipe(recipe("q4_k_m"), gguf_details=details).quantize == quantize


def test_without_the_gguf_stage_quantize_follows_the_type_table():
    for gguf_type in TYPES:
        asked = quantize_for_type(gguf_type.name)
        assert (asked is not None) == gguf_type.ollama_quantize, gguf_type
        assert asked is None or asked.upper() == gguf_type.name.upper()
    assert ServeSpec.from_recipe(recipe("q4_k_m")).quantize == "q4_K_M"
    assert ServeSpec.from_recipe(recipe("q5_k_m")).quantize is None  # Ollama cannot make it: registered as is


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"quantize": "q5_k_m"},
            "Ollama cannot quantize to q5_k_m \\(it offers F32, F16, BF16, Q8_0, q4_K_S, q4_K_M\\)",
        ),
        ({"template": "llama3"}, "no Ollama template for LLaMA-Factory template 'llama3'"),
        ({"base_model": "qwen3:"}, "'qwen3:' is not a valid Ollama model name"),
    ],
)
def test_spec_values_are_checked_when_made(changes, message):
    with pytest.raises(UsageError, match=message):
        dataclasses.replace(ServeSpec(name="mine"), **changes)


def test_the_cli_and_the_register_stage_send_the_same_request(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    gguf = write_gguf(tmp_path / "model-f16.gguf")
    details = {"file_type": "F16", "requested_type": "q4_k_m", "kquant_route": "ollama", "ollama_quantize": "q4_K_M"}
    with OllamaEmulator() as ollama:
        served = recipe("q4_k_m", host=ollama.url, system="Hi.", parameters={"temperature": 0.2})
        stage = register_model(
            ServeSpec.from_recipe(served, gguf_details=details), gguf=gguf, run_dir=tmp_path / "stage"
        )
        (tmp_path / "mine.yaml").write_text(served.model_dump_json())
        code = main(["ollama", "register", str(gguf), "--recipe", "mine.yaml", "--run-dir", "cli"])
        assert code == 0, capsys.readouterr().err
        stage_request, cli_request = [r.json() for r in ollama.requests_to("POST", "/api/create")]
    assert stage_request == cli_request and stage_request["quantize"] == "q4_K_M"
    assert stage_request["template"] == ollama_template("qwen3", False) and stage_request["system"] == "Hi."
    written = Modelfile.parse((tmp_path / "stage" / "Modelfile").read_text())
    assert written == build_modelfile(ServeSpec.from_recipe(served), gguf=gguf, folder=tmp_path / "stage")
    assert stage.name == "mine" and stage.modelfile == (tmp_path / "stage" / "Modelfile").resolve()
