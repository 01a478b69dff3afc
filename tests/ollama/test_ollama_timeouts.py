"""Timeouts and deadlines: quick requests give up quickly, long ones wait long, and no answer that
trickles in holds the client past its deadline. Loopback servers from conftest.py; small limits."""

from __future__ import annotations

import time

import pytest
from ollama_emulator import write_gguf

from orchestrator.cli import main
from orchestrator.errors import OllamaError
from orchestrator.ollama.client import OllamaClient

DIGEST = "sha256:" + "a" * 64
QUICK_CALLS = {
    "version": (lambda client: client.version(), "GET /api/version"),
    "show": (lambda client: client.show("m"), "POST /api/show"),
    "tags": (lambda client: client.tags(), "GET /api/tags"),
    "head": (lambda client: client.blob_exists(DIGEST), f"HEAD /api/blobs/{DIGEST}"),
    "delete": (lambda client: client.delete("m"), "DELETE /api/delete"),
}
LONG_CALLS = {
    "create": (lambda client: client.create("m", files={"m.gguf": DIGEST}), "POST /api/create"),
    "chat": (lambda client: list(client.chat("m", [{"role": "user", "content": "hi"}])), "POST /api/chat"),
}


def timed(call, client) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(OllamaError) as info:
        call(client)
    return str(info.value), time.monotonic() - started


@pytest.mark.parametrize("call", QUICK_CALLS.values(), ids=QUICK_CALLS.keys())
def test_quick_requests_to_a_silent_server_give_up_after_the_short_timeout(silent_server, call):
    client = OllamaClient(silent_server, short_timeout=0.3, read_timeout=60, retries=0)
    message, elapsed = timed(call[0], client)
    assert f"did not answer {call[1]} within 0.3 s" in message and "\n" not in message
    assert elapsed < 2


@pytest.mark.parametrize("call", LONG_CALLS.values(), ids=LONG_CALLS.keys())
def test_create_and_chat_wait_the_long_read_timeout(silent_server, call):
    client = OllamaClient(silent_server, short_timeout=0.1, read_timeout=0.6, retries=0)
    message, elapsed = timed(call[0], client)
    assert f"did not answer {call[1]} within 0.6 s" in message
    assert 0.5 < elapsed < 2.5


def test_an_upload_to_a_silent_server_waits_the_long_read_timeout(silent_server, tmp_path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"x" * 1000)
    client = OllamaClient(silent_server, short_timeout=0.1, read_timeout=0.6, retries=0)
    message, elapsed = timed(lambda c: c._upload(blob, DIGEST, None), client)
    assert f"did not answer POST /api/blobs/{DIGEST} within 0.6 s" in message
    assert elapsed < 2.5


def test_a_body_that_trickles_in_is_cut_at_the_deadline(trickling_server):
    # Every read gets a byte well within the read timeout: only the deadline ends this.
    client = OllamaClient(trickling_server, short_timeout=1.0, short_deadline=0.8, retries=0)
    message, elapsed = timed(lambda c: c.version(), client)
    assert f"Ollama at {trickling_server} did not finish answering GET /api/version within 0.8 s" in message
    assert elapsed < 2.5


@pytest.mark.parametrize("call", LONG_CALLS.values(), ids=LONG_CALLS.keys())
def test_a_stream_that_never_ends_is_cut_at_the_long_deadline(trickling_stream_server, call):
    client = OllamaClient(trickling_stream_server, read_timeout=1.0, long_deadline=0.8, retries=0)
    message, elapsed = timed(call[0], client)
    assert f"did not finish answering {call[1]} within 0.8 s" in message
    assert elapsed < 2.5


def test_register_against_a_silent_server_fails_fast_in_one_line(silent_server, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(OllamaClient.__init__.__kwdefaults__, "short_timeout", 0.3)
    gguf = write_gguf(tmp_path / "model.gguf")
    started = time.monotonic()
    code = main(["ollama", "register", str(gguf), "--name", "mine", "--host", silent_server])
    err = capsys.readouterr().err
    assert code == 1 and time.monotonic() - started < 2.5
    assert "did not answer GET /api/version within 0.3 s" in err
    assert f"to register later: ollama create mine -f {tmp_path / 'Modelfile'}" in err
    assert "[hash]" not in err and len(err.strip().splitlines()) == 1
