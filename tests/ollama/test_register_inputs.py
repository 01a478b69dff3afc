"""What `ollama register` refuses before it sends anything: hosts with credentials or impossible names,
model names Ollama would refuse, a folder instead of a GGUF; and that it reads only the GGUF's header."""

from __future__ import annotations

import socket

import gguf
import pytest
from ollama_emulator import OllamaEmulator, write_gguf

from orchestrator.cli import main
from orchestrator.errors import OllamaError, UsageError
from orchestrator.ollama.client import OllamaClient, OllamaResponseError
from orchestrator.ollama.register import register_model
from orchestrator.ollama.spec import ServeSpec

PASSWORD = "s3cret-Pa55"


@pytest.fixture
def ollama():
    with OllamaEmulator() as emulator:
        yield emulator


@pytest.fixture
def model_gguf(tmp_path):
    return write_gguf(tmp_path / "run" / "gguf" / "model-f16.gguf")


def dead_host() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ---- hosts -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [f"http://alice:{PASSWORD}@127.0.0.1:1", f"alice:{PASSWORD}@gpu-box:11434", f"https://alice:{PASSWORD}/x@box/"],
)
@pytest.mark.parametrize("source", ["env", "option"])
def test_credentials_in_the_host_are_refused_without_printing_them(model_gguf, capsys, monkeypatch, host, source):
    args = ["ollama", "register", str(model_gguf), "--name", "mine"]
    if source == "env":
        monkeypatch.setenv("OLLAMA_HOST", host)
    else:
        args += ["--host", host]
    assert main(args) == 2
    line = one_error_line(capsys)
    assert PASSWORD not in line and "alice" not in line
    assert ("OLLAMA_HOST" in line) == (source == "env") and "user:password@" in line
    assert not (model_gguf.parent / "Modelfile").exists()
    with pytest.raises(UsageError) as info:
        OllamaClient(host)
    assert PASSWORD not in str(info.value) and PASSWORD not in repr(info.value)


@pytest.mark.parametrize(
    "host", ["a" * 300, "http://" + "b" * 300 + ":11434", "x" * 64 + ".example.com", f"{'c' * 60}." * 5 + "org"]
)
@pytest.mark.parametrize("source", ["env", "option"])
def test_an_impossible_host_name_is_one_error_line(model_gguf, capsys, monkeypatch, host, source):
    args = ["ollama", "register", str(model_gguf), "--name", "mine"]
    if source == "env":
        monkeypatch.setenv("OLLAMA_HOST", host)
    else:
        args += ["--host", host]
    assert main(args) == 2
    line = one_error_line(capsys)
    assert "longer than a host name can be" in line and len(line) < 300


# ---- model names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../evil", "model:", "./x", "my.team/model", "me/mine:"])
def test_names_ollama_refuses_are_refused_before_anything_is_sent(ollama, model_gguf, capsys, name):
    assert main(["ollama", "register", str(model_gguf), "--name", name, "--host", ollama.url]) == 2
    assert f"'{name}' is not a valid Ollama model name" in one_error_line(capsys)
    assert ollama.requests == [] and not (model_gguf.parent / "Modelfile").exists()
    with pytest.raises(OllamaResponseError, match="invalid model name") as info:  # as Ollama itself answers
        OllamaClient(ollama.url).create(name, files={"model.gguf": "sha256:" + "0" * 64})
    assert info.value.status == 400


# ---- the GGUF ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["register", "modelfile"])
def test_a_folder_given_as_the_gguf_is_called_a_folder(model_gguf, capsys, action):
    args = ["ollama", action, str(model_gguf.parent)]
    if action == "register":
        args += ["--name", "x", "--host", dead_host()]
    assert main(args) == 2
    line = one_error_line(capsys)
    assert f"{model_gguf.parent} is a folder, not a GGUF file (it holds model-f16.gguf)" in line
    assert "not found" not in line


def test_only_the_header_is_read_and_ollama_is_reached_before_hashing(model_gguf, monkeypatch):
    def whole_file_reader(*args, **kwargs):
        raise AssertionError("gguf.GGUFReader maps the whole file; registration needs only the header")

    monkeypatch.setattr(gguf, "GGUFReader", whole_file_reader)
    events = []
    spec = ServeSpec(name="mine", host=dead_host(), quantize="q4_k_m")
    with pytest.raises(OllamaError, match="cannot reach Ollama at .*connection refused"):
        register_model(spec, gguf=model_gguf, run_dir=model_gguf.parent, on_progress=events.append)
    assert events == []  # nothing hashed, nothing uploaded
    assert "FROM ./model-f16.gguf" in (model_gguf.parent / "Modelfile").read_text()
