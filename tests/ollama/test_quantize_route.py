"""The K-quant Ollama makes at registration: asked for by the GGUF's own header (``orchestrator.quantize_to``)
or by a recipe, sent as create's ``quantize``, and spelled out for ``ollama create -f`` (a Modelfile cannot
carry it); a type nobody can make is refused."""

from __future__ import annotations

import shlex

import pytest
from ollama_emulator import OllamaEmulator, write_gguf

from orchestrator.cli import main
from orchestrator.ollama.modelfile import Modelfile

TARGET = {"orchestrator.quantize_to": "q4_K_M"}


@pytest.fixture
def ollama():
    with OllamaEmulator() as emulator:
        yield emulator


@pytest.fixture
def no_llama_quantize(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)


def write_recipe(folder, gguf_type: str) -> str:
    recipe = folder / "mine.yaml"
    recipe.write_text(
        "name: mine\n"
        "model: {name_or_path: Qwen/Qwen3-4B-Instruct-2507}\n"
        "data: {sources: [{type: file, path: data.jsonl}]}\n"
        f"gguf: {{type: {gguf_type}}}\n"
        "ollama: {name: 'me/mine:v1'}\n"
    )
    return str(recipe)


def created(ollama) -> dict:
    return [r.json() for r in ollama.requests_to("POST", "/api/create")][-1]


def test_register_without_a_recipe_quantizes_to_what_the_header_asks(ollama, tmp_path, capsys):
    gguf = write_gguf(tmp_path / "gguf" / "m-bf16.gguf", file_type="MOSTLY_BF16", strings=TARGET)
    base = ["ollama", "register", str(gguf), "--name", "mine", "--host", ollama.url, "--no-chat"]
    assert main(base) == 0
    assert created(ollama)["quantize"] == "q4_K_M" and "family qwen3, Q4_K_M" in capsys.readouterr().out

    assert main([*base, "--quantize", "bf16"]) == 0  # --quantize wins over the header
    assert "quantize" not in created(ollama) and "family qwen3, BF16" in capsys.readouterr().out
    q8 = write_gguf(tmp_path / "gguf" / "m-q8_0.gguf", file_type="MOSTLY_Q8_0", strings=TARGET)
    assert main(["ollama", "register", str(q8), "--name", "q8", "--host", ollama.url, "--no-chat"]) == 0
    assert "quantize" not in created(ollama)  # the header's target is only for a 16/32-bit file
    assert "family qwen3, Q8_0" in capsys.readouterr().out


def test_modelfile_prints_the_create_command_with_quantize(tmp_path, capsys):
    gguf = write_gguf(tmp_path / "gguf" / "m-bf16.gguf", file_type="MOSTLY_BF16", strings=TARGET)
    target = tmp_path / "serve" / "Modelfile"
    assert main(["ollama", "modelfile", str(gguf), "-o", str(target)]) == 0
    err = capsys.readouterr().err
    assert shlex.join(["ollama", "create", "NAME", "-f", str(target), "--quantize", "q4_K_M"]) in err
    assert "a Modelfile cannot carry quantize" in err
    assert Modelfile.parse(target.read_text()).from_ == "../gguf/m-bf16.gguf"

    assert main(["ollama", "modelfile", str(gguf)]) == 0
    printed = capsys.readouterr()
    assert Modelfile.parse(printed.out).from_ == str(gguf.resolve())
    assert "--quantize q4_K_M" in printed.err and "--quantize" not in printed.out


def test_modelfile_with_a_recipe_names_the_model_and_the_quantize(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    gguf = write_gguf(tmp_path / "gguf" / "m-f16.gguf")  # F16, no target in its header: the recipe asks
    target = tmp_path / "Modelfile"
    assert (
        main(["ollama", "modelfile", str(gguf), "--recipe", write_recipe(tmp_path, "q4_k_m"), "-o", str(target)]) == 0
    )
    err = capsys.readouterr().err
    assert shlex.join(["ollama", "create", "me/mine:v1", "-f", str(target), "--quantize", "q4_K_M"]) in err


@pytest.mark.parametrize("action", ["modelfile", "register"])
def test_a_recipe_type_nobody_can_make_is_refused_with_the_fix(
    tmp_path, monkeypatch, capsys, no_llama_quantize, action
):
    monkeypatch.chdir(tmp_path)
    gguf = write_gguf(tmp_path / "gguf" / "m-f16.gguf")
    argv = ["ollama", action, str(gguf), "--recipe", write_recipe(tmp_path, "q6_k")]
    assert main(argv + (["--host", "127.0.0.1:9"] if action == "register" else [])) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "gguf.type q6_k" in err and "m-f16.gguf is F16" in err and "Ollama cannot quantize to q6_k" in err
    assert "llama-quantize" in err and "orchestrator gguf convert" in err and "q4_k_m" in err
    assert captured.out == "" and not (tmp_path / "llama_factory_data").exists()


def test_a_recipe_type_the_gguf_already_has_is_served_as_it_is(tmp_path, monkeypatch, capsys, no_llama_quantize):
    monkeypatch.chdir(tmp_path)
    gguf = write_gguf(tmp_path / "gguf" / "m-q6_k.gguf", file_type="MOSTLY_Q6_K")  # made by llama-quantize
    assert main(["ollama", "modelfile", str(gguf), "--recipe", write_recipe(tmp_path, "q6_k")]) == 0
    captured = capsys.readouterr()
    assert "--quantize" not in captured.err and "registered as it is" not in captured.err
    assert Modelfile.parse(captured.out).from_ == str(gguf.resolve())
