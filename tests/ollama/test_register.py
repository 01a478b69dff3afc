"""The register stage against the strict Ollama emulator: blobs, create, show, chat, and every failure."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import sys
from pathlib import Path

import pytest
from gotemplate.runner import build
from ollama_emulator import OllamaEmulator, Reply, write_gguf

from orchestrator.errors import OllamaError, StageError, UsageError
from orchestrator.ollama.blobs import file_digest
from orchestrator.ollama.client import OllamaClient, OllamaResponseError
from orchestrator.ollama.modelfile import Modelfile
from orchestrator.ollama.register import register_model
from orchestrator.ollama.results import RegisterProgress
from orchestrator.ollama.spec import ServeSpec
from orchestrator.ollama.templates import ollama_template
from orchestrator.ollama.verify import parse_show_parameters

MIB = 1 << 20


@pytest.fixture(scope="module")
def go(tmp_path_factory):
    try:
        return build(tmp_path_factory.mktemp("gotemplate"))
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def ollama(go):
    with OllamaEmulator() as emulator:
        emulator.template_check = lambda text: go.parse(text).get("error")  # Go's own parser, as Ollama's
        yield emulator


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return tmp_path / "runs" / "demo"


@pytest.fixture
def gguf_f16(run_dir) -> Path:
    return write_gguf(run_dir / "gguf" / "model-f16.gguf", size_bytes=3 * MIB + 123)


def dead_host() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def register(ollama, run_dir, gguf, **kwargs):
    """register_model with a ServeSpec made of ``kwargs`` (the calling options go to register_model)."""
    calling = {key: kwargs.pop(key) for key in ("on_progress", "use_cli", "verify_chat") if key in kwargs}
    spec = ServeSpec(**{"name": "demo-tuned", "host": ollama.url, **kwargs})
    return register_model(spec, gguf=gguf, run_dir=run_dir, **calling)


def create_requests(ollama) -> list[dict]:
    return [r.json() for r in ollama.requests_to("POST", "/api/create")]


# ---- the merged route -----------------------------------------------------------------------------------


def test_register_uploads_creates_and_verifies(ollama, run_dir, gguf_f16):
    events: list[RegisterProgress] = []
    result = register(
        ollama, run_dir, gguf_f16, system="Be kind.", num_ctx=4096, parameters={"top_k": 40}, on_progress=events.append
    )
    digest = "sha256:" + hashlib.sha256(gguf_f16.read_bytes()).hexdigest()

    modelfile = Modelfile.parse((run_dir / "Modelfile").read_text())
    assert modelfile.from_ == "./gguf/model-f16.gguf"
    assert modelfile.template == ollama_template("qwen3", True) and modelfile.system == "Be kind."
    assert modelfile.parameters == {
        "stop": ["<|im_end|>", "<|im_start|>"],
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 40,
        "num_ctx": 4096,
    }
    assert result.command == f"ollama create demo-tuned -f {run_dir.resolve() / 'Modelfile'}"

    (blob,) = result.blobs
    assert blob.digest == digest and blob.uploaded and result.skipped == []
    assert ollama.uploads == [digest] and ollama.has_blob(digest)
    (sent,) = create_requests(ollama)
    assert sent["model"] == "demo-tuned" and sent["files"] == {"model-f16.gguf": digest}
    assert sent["template"] == modelfile.template and sent["system"] == "Be kind."
    assert sent["parameters"] == modelfile.parameters and "quantize" not in sent and sent["stream"] is True

    uploads = [e.completed for e in events if e.phase == "upload" and e.total]
    assert len(uploads) >= 4 and uploads == sorted(uploads) and uploads[-1] == gguf_f16.stat().st_size
    assert [e for e in events if e.phase == "hash"][-1].completed == gguf_f16.stat().st_size
    assert result.statuses[0] == "parsing GGUF" and result.statuses[-1] == "success"

    assert result.details["family"] == "qwen3" and result.details["quantization_level"] == "F16"
    assert set(result.capabilities) == {"completion", "tools", "thinking"}
    assert result.parameters["stop"] == ["<|im_end|>", "<|im_start|>"] and result.parameters["num_ctx"] == 4096
    assert result.answer == "Hello! I am the tuned model." and result.done_reason == "stop"
    chat = ollama.chat_requests()[-1]
    assert chat["model"] == "demo-tuned" and chat["think"] is False
    recorded = json.loads(json.dumps(result.to_dict()))  # what a manifest can keep
    assert recorded["blobs"][0]["digest"] == digest and recorded["modelfile"] == str(run_dir.resolve() / "Modelfile")
    assert result.digests == {str(gguf_f16): digest}


def test_a_rerun_skips_the_upload_ollama_already_has(ollama, run_dir, gguf_f16):
    register(ollama, run_dir, gguf_f16)
    second = register(ollama, run_dir, gguf_f16)
    assert second.skipped == [second.blobs[0].digest]
    assert len(ollama.requests_to("POST", "/api/blobs/")) == 1
    assert len(ollama.requests_to("HEAD", "/api/blobs/")) == 2
    assert len(create_requests(ollama)) == 2


@pytest.mark.parametrize(("template", "thinking", "capabilities"), [("qwen3", False, 2), ("qwen3_nothink", False, 2)])
def test_formats_without_thinking_register_without_the_thinking_capability(
    ollama, run_dir, gguf_f16, template, thinking, capabilities
):
    result = register(ollama, run_dir, gguf_f16, template=template, enable_thinking=thinking)
    assert set(result.capabilities) == {"completion", "tools"}
    assert result.parameters["temperature"] == 0.7 and result.parameters["top_p"] == 0.8


def test_quantize_is_asked_of_ollama_when_the_gguf_is_f16(ollama, run_dir, gguf_f16):
    result = register(ollama, run_dir, gguf_f16, quantize="q4_k_m")
    (sent,) = create_requests(ollama)
    assert sent["quantize"] == "q4_K_M"  # Ollama's own spelling (gguf.types.ollama_quantize_name)
    assert any(s == "quantizing F16 model to Q4_K_M" for s in result.statuses)
    assert result.details["quantization_level"] == "Q4_K_M"
    assert result.command.endswith("/Modelfile --quantize q4_K_M")


def test_quantize_is_not_sent_when_the_gguf_already_has_that_type(ollama, run_dir):
    gguf = write_gguf(run_dir / "gguf" / "model-q8_0.gguf", file_type="MOSTLY_Q8_0")
    result = register(ollama, run_dir, gguf, quantize="q8_0")
    assert "quantize" not in create_requests(ollama)[0]
    assert result.details["quantization_level"] == "Q8_0"


@pytest.mark.parametrize(
    ("file_type", "quantize", "message"),
    [
        ("MOSTLY_Q8_0", "q4_k_m", "Ollama quantizes only F16, BF16 or F32"),
        ("MOSTLY_F16", "q5_k_m", "cannot quantize to q5_k_m.*llama-quantize"),
    ],
)
def test_quantize_requests_ollama_cannot_do_fail_before_anything_is_sent(ollama, run_dir, file_type, quantize, message):
    gguf = write_gguf(run_dir / "gguf" / "model.gguf", file_type=file_type)
    with pytest.raises(UsageError, match=message):
        register(ollama, run_dir, gguf, quantize=quantize)
    assert ollama.requests == [] and not (run_dir / "Modelfile").exists()


# ---- the adapter route ---------------------------------------------------------------------------------


def test_adapter_route_creates_from_the_base_model_with_the_adapter(ollama, run_dir):
    base = ollama.add_model("qwen3:0.6b", thinking=True)
    base.details = {"format": "gguf", "family": "qwen3", "families": ["qwen3"], "quantization_level": "Q4_K_M"}
    adapter = write_gguf(run_dir / "gguf" / "adapter.gguf", adapter=True)
    # quantize is a merged-route setting: the base model stays as it is
    result = register(ollama, run_dir, adapter, name="demo-lora", base_model="qwen3:0.6b", quantize="q8_0")
    assert (run_dir / "Modelfile").read_text().startswith("FROM qwen3:0.6b\nADAPTER ./gguf/adapter.gguf\nTEMPLATE ")
    (sent,) = create_requests(ollama)
    assert sent["from"] == "qwen3:0.6b" and sent["adapters"] == {"adapter.gguf": result.blobs[0].digest}
    assert "files" not in sent and "quantize" not in sent
    assert result.details["family"] == "qwen3" and result.details["parent_model"] == "qwen3:0.6b"
    assert result.answer


def test_adapter_route_needs_the_base_model_in_ollama(ollama, run_dir):
    adapter = write_gguf(run_dir / "gguf" / "adapter.gguf", adapter=True)
    with pytest.raises(OllamaError, match="pull model manifest: file does not exist.*ollama create demo-lora"):
        register(ollama, run_dir, adapter, name="demo-lora", base_model="qwen3:missing")


def test_adapter_and_model_ggufs_are_not_mixed_up(ollama, run_dir, gguf_f16):
    adapter = write_gguf(run_dir / "gguf" / "adapter.gguf", adapter=True)
    with pytest.raises(UsageError, match="is a LoRA adapter GGUF"):
        register(ollama, run_dir, adapter)
    with pytest.raises(UsageError, match="not a LoRA adapter GGUF"):
        register(ollama, run_dir, gguf_f16, name="x", base_model="qwen3:0.6b")


# ---- failures --------------------------------------------------------------------------------------------


def test_unreachable_ollama_ends_with_the_create_command(run_dir, gguf_f16):
    host = dead_host()
    with pytest.raises(OllamaError) as info:
        register_model(ServeSpec(name="demo-tuned", host=host), gguf=gguf_f16, run_dir=run_dir)
    message = str(info.value)
    assert info.value.exit_code == 1 and "\n" not in message
    assert f"cannot reach Ollama at http://{host} (connection refused)" in message
    assert "ollama serve" in message and "OLLAMA_HOST" in message
    assert message.endswith(f"to register later: ollama create demo-tuned -f {run_dir.resolve() / 'Modelfile'}")
    assert Modelfile.parse((run_dir / "Modelfile").read_text()).from_ == "./gguf/model-f16.gguf"


def test_an_interrupted_upload_is_retried(ollama, run_dir, gguf_f16):
    ollama.drop_uploads = 1
    result = register(ollama, run_dir, gguf_f16)
    assert result.blobs[0].uploaded and len(ollama.requests_to("POST", "/api/blobs/")) == 2


def test_a_rerun_after_an_interrupted_upload_registers(ollama, run_dir, gguf_f16):
    ollama.drop_uploads = 3  # more than the client's retries
    with pytest.raises(OllamaError, match="broke.*to register later: ollama create demo-tuned -f"):
        register(ollama, run_dir, gguf_f16)
    assert ollama.uploads == [] and create_requests(ollama) == []  # nothing partial kept, nothing created
    result = register(ollama, run_dir, gguf_f16)
    assert result.blobs[0].uploaded and result.answer


def test_an_error_line_in_the_create_stream_fails_and_a_rerun_recovers(ollama, run_dir, gguf_f16):
    ollama.fail_create = (2, "an error was encountered while creating the model: unexpected EOF")
    with pytest.raises(OllamaError, match="unexpected EOF; to register later: ollama create demo-tuned"):
        register(ollama, run_dir, gguf_f16)
    assert "demo-tuned:latest" not in ollama.models
    result = register(ollama, run_dir, gguf_f16)
    assert result.skipped == [result.blobs[0].digest] and result.statuses[-1] == "success"


def test_a_gguf_llama_cpp_would_reject_fails_the_create(ollama, run_dir):
    gguf = write_gguf(run_dir / "gguf" / "model.gguf", skip_keys=("block_count",))
    with pytest.raises(OllamaError, match="failed to validate GGUF with llama-quantize.*qwen3.block_count"):
        register(ollama, run_dir, gguf)


def test_a_broken_gguf_is_refused_before_upload(ollama, run_dir, gguf_f16):
    data = gguf_f16.read_bytes()
    gguf_f16.write_bytes(data[: len(data) // 2])
    with pytest.raises(StageError, match="not a readable GGUF.*rerun the gguf stage"):
        register(ollama, run_dir, gguf_f16)
    assert ollama.requests == []


def test_bad_names_and_missing_files_are_usage_errors(ollama, run_dir, gguf_f16):
    with pytest.raises(UsageError, match="not a valid Ollama model name") as info:
        register(ollama, run_dir, gguf_f16, name="bad name!")
    assert info.value.exit_code == 2
    for name in ("me/mine:v1", "registry.local:5000/team/model_2:q8.0", "_x:1"):  # names Ollama takes
        assert register(ollama, run_dir, gguf_f16, name=name, verify_chat=False).name == name
    ollama.requests.clear()
    with pytest.raises(UsageError, match="GGUF not found"):
        register(ollama, run_dir, run_dir / "gguf" / "missing.gguf")
    assert ollama.requests == []


def test_a_value_the_modelfile_cannot_hold_is_refused(ollama, run_dir, gguf_f16):
    with pytest.raises(UsageError, match='SYSTEM value contains """'):
        register(ollama, run_dir, gguf_f16, system='quote """ this')
    assert ollama.requests == []


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(""), "answered nothing"),
        (Reply("on and on", done_reason="length"), "did not stop \\(done_reason length"),
    ],
)
def test_a_model_that_does_not_answer_properly_fails_verification(ollama, run_dir, gguf_f16, reply, message):
    ollama.default_replies = [reply]
    with pytest.raises(StageError, match=message):
        register(ollama, run_dir, gguf_f16)


def test_a_model_that_kept_another_template_fails_verification(ollama, run_dir, gguf_f16):
    show = ollama.routes["POST", "/api/show"]

    def other_template(request):
        answer = show(request)
        answer.body["template"] = "{{ .Prompt }}"
        return answer

    ollama.routes["POST", "/api/show"] = other_template
    with pytest.raises(StageError, match="does not use the TEMPLATE sent"):
        register(ollama, run_dir, gguf_f16)


def test_verification_checks_the_parameters(ollama, run_dir, gguf_f16):
    show = ollama.routes["POST", "/api/show"]

    def without_stop(request):
        answer = show(request)
        answer.body["parameters"] = "temperature                    0.6"
        return answer

    ollama.routes["POST", "/api/show"] = without_stop
    with pytest.raises(StageError, match="parameter stop = None"):
        register(ollama, run_dir, gguf_f16)


# ---- the emulator is as strict as Ollama, and the client reports it ------------------------------------------


def test_the_server_recomputes_every_digest(ollama, gguf_f16, tmp_path):
    client = OllamaClient(ollama.url)
    wrong = "sha256:" + "0" * 64
    with pytest.raises(OllamaResponseError, match="digest mismatch, expected sha256:0+, got sha256:") as info:
        client.push_blob(gguf_f16, digest=wrong)
    assert info.value.status == 400 and not ollama.has_blob(wrong)
    assert client.blob_exists(file_digest(gguf_f16)) is False


def test_create_requests_are_validated(ollama, gguf_f16):
    client = OllamaClient(ollama.url)
    digest = client.push_blob(gguf_f16).digest
    cases = [
        ({"files": {"/abs/model.gguf": digest}}, "file path must be relative"),
        ({"files": {"../model.gguf": digest}}, "file path must be relative"),
        ({"files": {"model.gguf": "sha256:12"}}, "invalid digest format"),
        ({}, "neither 'from' or 'files' was specified"),
        ({"files": {"model.gguf": digest}, "template": "{{ if .Messages }}"}, "template error"),
    ]
    for fields, message in cases:
        with pytest.raises(OllamaResponseError, match=message) as info:
            client.create("ok-name", **fields)
        assert info.value.status == 400
    with pytest.raises(OllamaResponseError, match="invalid model name"):
        client.create("no spaces allowed", files={"model.gguf": digest})


def test_errors_inside_a_200_create_stream_are_failures(ollama, run_dir):
    client = OllamaClient(ollama.url)
    q8 = client.push_blob(write_gguf(run_dir / "q8.gguf", file_type="MOSTLY_Q8_0")).digest
    with pytest.raises(OllamaResponseError, match="quantization is only supported for F16, BF16 and F32") as info:
        client.create("m", files={"model.gguf": q8}, quantize="Q4_K_M")
    assert info.value.status == 200
    unknown = "sha256:" + "1" * 64
    with pytest.raises(OllamaResponseError, match="no such file or directory"):
        client.create("m", files={"model.gguf": unknown})
    broken = run_dir / "broken.gguf"
    broken.write_bytes(b"GGUF" + os.urandom(64))
    with pytest.raises(OllamaResponseError, match="failed to decode GGUF"):
        client.create("m", files={"model.gguf": client.push_blob(broken).digest})
    not_gguf = run_dir / "notes.txt"
    not_gguf.write_text("hello")
    with pytest.raises(OllamaResponseError, match="not in GGUF format"):
        client.create("m", files={"model.gguf": client.push_blob(not_gguf).digest})
    assert "m:latest" not in ollama.models


def test_unknown_blobs_and_models_are_404s(ollama, run_dir, gguf_f16):
    client = OllamaClient(ollama.url)
    assert client.blob_exists("sha256:" + "2" * 64) is False
    with pytest.raises(OllamaResponseError, match="model 'ghost' not found") as info:
        client.show("ghost")
    assert info.value.status == 404
    register(ollama, run_dir, gguf_f16)
    assert [m["name"] for m in client.tags()] == ["demo-tuned:latest"]
    client.delete("demo-tuned")
    assert client.tags() == []
    with pytest.raises(OllamaResponseError, match="not found"):
        client.delete("demo-tuned")


def test_show_parameters_are_read_back():
    text = "\n".join(
        [f"{'num_ctx':<30} 4096", f'{"stop":<30} "<|im_end|>"', f'{"stop":<30} "a b"', f"{'temperature':<30} 0.6"]
    )
    assert parse_show_parameters(text) == {"num_ctx": 4096, "stop": ["<|im_end|>", "a b"], "temperature": 0.6}


# ---- ollama create -f through a local binary -------------------------------------------------------------

FAKE_OLLAMA = """#!{python}
# A stand-in for the ollama CLI's `create NAME -f Modelfile [--quantize Q]`: read the Modelfile, push the
# files it names and create the model over the HTTP API at $OLLAMA_HOST, as the real CLI does.
import sys
from pathlib import Path
from orchestrator.ollama.client import OllamaClient
from orchestrator.ollama.modelfile import Modelfile

args = sys.argv[1:]
assert args[0] == "create" and args[2] == "-f", args
name, path = args[1], Path(args[3])
quantize = args[args.index("--quantize") + 1] if "--quantize" in args else None
mf = Modelfile.parse(path.read_text())
client = OllamaClient()
gguf = (path.parent / mf.from_).resolve()
digest = client.push_blob(gguf).digest
for line in client.create(name, files={{gguf.name: digest}}, template=mf.template, system=mf.system,
                          parameters=mf.parameters, quantize=quantize):
    print(line.get("status"))
"""


@pytest.fixture
def fake_ollama_on_path(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "ollama"
    script.write_text(FAKE_OLLAMA.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    return script


def test_register_with_the_local_ollama_binary(ollama, run_dir, gguf_f16, fake_ollama_on_path):
    result = register(ollama, run_dir, gguf_f16, use_cli=True, quantize="q4_K_M")
    assert result.method == "cli" and result.details["quantization_level"] == "Q4_K_M"
    assert "success" in (run_dir / "logs" / "ollama-create.log").read_text()
    assert result.answer


def test_the_local_binary_is_only_for_a_local_host(run_dir, gguf_f16, fake_ollama_on_path, monkeypatch):
    with pytest.raises(UsageError, match="not local"):
        register_model(
            ServeSpec(name="x", host="http://gpu-box.example:11434"), gguf=gguf_f16, run_dir=run_dir, use_cli=True
        )
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UsageError, match="not on PATH"):
        register_model(ServeSpec(name="x", host="127.0.0.1:1"), gguf=gguf_f16, run_dir=run_dir, use_cli=True)
