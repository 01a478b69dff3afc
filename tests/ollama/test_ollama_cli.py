"""`orchestrator ollama register` and `orchestrator ollama modelfile` through main(), against the emulator."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from ollama_emulator import OllamaEmulator, write_gguf

from orchestrator.cli import main
from orchestrator.ollama.modelfile import Modelfile
from orchestrator.ollama.templates import ollama_template


@pytest.fixture
def ollama():
    with OllamaEmulator() as emulator:
        yield emulator


@pytest.fixture
def gguf(tmp_path):
    return write_gguf(tmp_path / "run" / "gguf" / "model-f16.gguf", size_bytes=2 << 20)


def test_help_lists_both_actions_and_stays_light():
    probe = (
        "import sys; from orchestrator.cli import main\n"
        "try:\n    main(['ollama', 'register', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('LOADED', [m for m in ('requests', 'gguf', 'numpy', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "--name" in out and "--host" in out and "ollama create" in out
    assert "LOADED []" in out
    help_text = subprocess.run(
        [sys.executable, "-m", "orchestrator", "ollama", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "register" in help_text and "modelfile" in help_text


def test_register_prints_what_it_did(ollama, gguf, capsys):
    code = main(["ollama", "register", str(gguf), "--name", "mine", "--host", ollama.url, "--system", "Be kind."])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"registered mine on {ollama.url} (api)" in captured.out
    assert "uploaded 2.0 MiB" in captured.out and "family qwen3, F16" in captured.out
    assert "'Hello! I am the tuned model.' (done: stop)" in captured.out
    assert "[create] success" in captured.err
    assert "uploading model-f16.gguf 2.0 MiB / 2.0 MiB (100%)" in captured.err
    assert "hashing model-f16.gguf 2.0 MiB / 2.0 MiB (100%)" in captured.err
    modelfile = Modelfile.parse((gguf.parent / "Modelfile").read_text())
    assert modelfile.from_ == "./model-f16.gguf" and modelfile.system == "Be kind."

    assert main(["ollama", "register", str(gguf), "--name", "mine", "--host", ollama.url, "--no-chat"]) == 0
    assert "already in Ollama, not uploaded again" in capsys.readouterr().out
    assert len(ollama.chat_requests()) == 1


def test_register_without_ollama_prints_the_command_and_exits_1(gguf, capsys, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{sock.getsockname()[1]}"
    run_dir = tmp_path / "elsewhere"
    code = main(["ollama", "register", str(gguf), "--name", "mine", "--host", host, "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot reach Ollama at http://{host}" in err
    assert f"ollama create mine -f {run_dir.resolve() / 'Modelfile'}" in err
    assert Modelfile.parse((run_dir / "Modelfile").read_text()).from_ == "../run/gguf/model-f16.gguf"


def test_register_takes_its_settings_from_a_recipe(ollama, gguf, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(
        "name: mine\n"
        "model: {name_or_path: Qwen/Qwen3-4B-Instruct-2507}\n"
        "data: {sources: [{type: file, path: data.jsonl}]}\n"
        "gguf: {type: q4_k_m}\n"
        f"ollama: {{name: 'me/mine:v1', host: '{ollama.url}', system: From the recipe., num_ctx: 2048,"
        " parameters: {temperature: 0.3}}\n"
    )
    assert main(["ollama", "register", str(gguf), "--recipe", str(recipe), "--param", "top_k=10"]) == 0
    out = capsys.readouterr().out
    assert "registered me/mine:v1" in out and "Q4_K_M" in out
    (sent,) = [r.json() for r in ollama.requests_to("POST", "/api/create")]
    assert sent["template"] == ollama_template("qwen3_nothink", False)  # the template the recipe resolves to
    assert sent["system"] == "From the recipe." and sent["quantize"] == "q4_K_M"
    assert sent["parameters"]["num_ctx"] == 2048 and sent["parameters"]["temperature"] == 0.3
    assert sent["parameters"]["top_k"] == 10
    assert (tmp_path / "llama_factory_data" / "runs" / "mine" / "Modelfile").is_file()


def test_modelfile_printed_to_stdout_has_the_absolute_gguf_path(gguf, monkeypatch, capsys):
    monkeypatch.chdir(gguf.parent.parent)  # the printed Modelfile may be saved anywhere: FROM cannot be relative
    args = ["ollama", "modelfile", "gguf/model-f16.gguf", "--no-thinking", "--num-ctx", "8192", "--param", "stop=END"]
    assert main(args) == 0
    modelfile = Modelfile.parse(capsys.readouterr().out)
    assert modelfile.from_ == str(gguf.resolve())
    assert modelfile.template == ollama_template("qwen3", False)
    assert modelfile.parameters["stop"] == ["<|im_end|>", "<|im_start|>", "END"]
    assert modelfile.parameters["num_ctx"] == 8192 and modelfile.parameters["temperature"] == 0.7


def test_modelfile_help_says_where_from_points(capsys):
    with pytest.raises(SystemExit):
        main(["ollama", "modelfile", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "printed to stdout, FROM is the GGUF's absolute path" in text
    assert "with -o PATH, FROM is relative to PATH's folder" in text


def test_modelfile_writes_the_adapter_route(tmp_path, capsys):
    adapter = write_gguf(tmp_path / "gguf" / "adapter.gguf", adapter=True)
    target = tmp_path / "out" / "Modelfile"
    assert main(["ollama", "modelfile", str(adapter), "--base", "qwen3:4b", "-o", str(target)]) == 0
    assert "wrote" in capsys.readouterr().err
    modelfile = Modelfile.parse(target.read_text())
    assert (modelfile.from_, modelfile.adapters) == ("qwen3:4b", ["../gguf/adapter.gguf"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "temperature"], "use KEY=VALUE"),
        (["--system", 'has """ inside'], 'SYSTEM value contains """'),
        (["--param", "temprature=1"], "unknown PARAMETER 'temprature'"),
    ],
)
def test_modelfile_usage_errors_exit_2(gguf, capsys, args, message):
    assert main(["ollama", "modelfile", str(gguf), *args]) == 2
    assert message in capsys.readouterr().err


def test_a_file_that_is_not_a_gguf_is_bad_input_for_every_command(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# A project\n\nNot a model at all.\n")
    errors = []
    for argv in (
        ["gguf", "inspect", str(readme)],
        ["ollama", "register", str(readme), "--name", "mine", "--host", "127.0.0.1:9"],
        ["ollama", "modelfile", str(readme)],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        errors.append(err)
    assert errors[0] == errors[1] == errors[2]
    assert errors[0] == f"error: {readme}: not a GGUF file (it does not start with the GGUF magic); give a .gguf file\n"
    assert not (tmp_path / "Modelfile").exists()


def test_register_needs_a_name(gguf, capsys):
    assert main(["ollama", "register", str(gguf)]) == 2
    assert "needs --name" in capsys.readouterr().err
