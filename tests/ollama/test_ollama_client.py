"""The Ollama HTTP client: host resolution as Ollama's envconfig does it, and /api/chat against the emulator."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests
from ollama_emulator import OllamaEmulator, Reply

from orchestrator.conversations import Message
from orchestrator.errors import OllamaError
from orchestrator.ollama.client import OllamaClient, OllamaConnectionError, OllamaResponseError
from orchestrator.ollama.hosts import connectable_url, resolve_host

# Ollama's own table (envconfig/config_test.go, TestHost): OLLAMA_HOST value -> Host().String()
OLLAMA_HOST_CASES = {
    "": "http://127.0.0.1:11434",
    "1.2.3.4": "http://1.2.3.4:11434",
    ":1234": "http://:1234",
    "1.2.3.4:1234": "http://1.2.3.4:1234",
    "example.com": "http://example.com:11434",
    "example.com:1234": "http://example.com:1234",
    ":0": "http://:0",
    ":66000": "http://:11434",
    ":-1": "http://:11434",
    "[::1]": "http://[::1]:11434",
    "[::]": "http://[::]:11434",
    "::1": "http://[::1]:11434",
    "[::1]:1337": "http://[::1]:1337",
    " 1.2.3.4 ": "http://1.2.3.4:11434",
    '"1.2.3.4"': "http://1.2.3.4:11434",
    ' " 1.2.3.4 " ': "http://1.2.3.4:11434",
    "'1.2.3.4'": "http://1.2.3.4:11434",
    "http://1.2.3.4": "http://1.2.3.4:80",
    "http://1.2.3.4:4321": "http://1.2.3.4:4321",
    "https://1.2.3.4": "https://1.2.3.4:443",
    "https://1.2.3.4:4321": "https://1.2.3.4:4321",
    "https://example.com/ollama": "https://example.com:443/ollama",
    "ollama.com": "https://ollama.com:443",
    # beyond Ollama's table
    "localhost": "http://localhost:11434",
    "gpu-box:8080/": "http://gpu-box:8080",
    "http://gpu-box/proxy/ollama/": "http://gpu-box:80/proxy/ollama/",
    "1.2.3.4:abc": "http://1.2.3.4:11434",
}


@pytest.mark.parametrize(("value", "expected"), OLLAMA_HOST_CASES.items())
def test_resolve_host_from_env_follows_ollama(monkeypatch, value, expected):
    monkeypatch.setenv("OLLAMA_HOST", value)
    assert resolve_host(None) == expected


def test_resolve_host_argument_wins_over_env(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "10.0.0.1:1111")
    assert resolve_host("https://box") == "https://box:443"
    assert resolve_host("") == "http://10.0.0.1:1111"  # an empty argument counts as not given
    monkeypatch.delenv("OLLAMA_HOST")
    assert resolve_host(None) == "http://127.0.0.1:11434"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("[::]:1234", "http://[::1]:1234"),
        (":1234", "http://127.0.0.1:1234"),
        ("https://0.0.0.0:4321/x", "https://127.0.0.1:4321/x"),
        ("192.168.1.5", "http://192.168.1.5:11434"),
    ],
)
def test_client_dials_a_connectable_address(value, expected):
    assert connectable_url(resolve_host(value)) == expected
    assert OllamaClient(value).base_url == expected.rstrip("/")


def test_urls_keep_a_proxy_path():
    client = OllamaClient("https://example.com/ollama/")
    assert client._url("/api/chat") == "https://example.com:443/ollama/api/chat"


@pytest.fixture
def ollama():
    with OllamaEmulator() as emulator:
        yield emulator


def test_version(ollama):
    with OllamaClient(ollama.url) as client:
        assert client.version() == "0.12.6"


def test_chat_streams_deltas_and_a_final_line(ollama):
    ollama.add_model("qwen3:4b", thinking=True, replies=[Reply("Grüß dich! 👋", thinking="A greeting.", chunk_chars=3)])
    client = OllamaClient(ollama.url)
    history = [Message("system", "Be kind."), Message("user", "hallo"), Message("assistant", "hi", thinking="t")]
    chunks = list(client.chat("qwen3:4b", history + [{"role": "user", "content": "wie geht's?"}], options={"seed": 1}))
    assert len(chunks) > 3
    assert "".join(c["message"].get("thinking", "") for c in chunks) == "A greeting."
    assert "".join(c["message"]["content"] for c in chunks) == "Grüß dich! 👋"
    assert [c["done"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    final = chunks[-1]
    assert final["done_reason"] == "stop" and final["eval_count"] > 0 and final["total_duration"] > 0
    sent = ollama.chat_requests()[0]
    assert sent["stream"] is True and sent["options"] == {"seed": 1}
    assert "think" not in sent and "tools" not in sent  # None means: leave it to the server
    assert sent["messages"][2] == {"role": "assistant", "content": "hi", "thinking": "t"}
    assert sent["messages"][3]["content"] == "wie geht's?"


def test_chat_yields_chunks_as_they_arrive(ollama):
    gate = threading.Event()
    ollama.add_model("m", replies=[Reply("one two three", chunk_chars=4, gate=gate, gate_timeout=5)])
    stream = OllamaClient(ollama.url).chat("m", [Message("user", "go")])
    started = time.monotonic()
    first = next(stream)  # the server holds the rest of the answer until the gate opens
    assert time.monotonic() - started < 3
    assert first["message"]["content"] == "one "
    gate.set()
    assert "".join(c["message"]["content"] for c in stream) == "two three"


def test_chat_without_streaming_returns_one_object(ollama):
    ollama.add_model("m", replies=[Reply("whole answer")])
    (answer,) = OllamaClient(ollama.url).chat("m", [Message("user", "x")], stream=False)
    assert answer["message"]["content"] == "whole answer" and answer["done"] is True


def test_error_line_mid_stream_raises_after_the_first_chunks(ollama):
    ollama.add_model("m", replies=[Reply("abcdefgh", chunk_chars=2, fail_after=2, error="llama runner crashed")])
    received = []
    with pytest.raises(OllamaResponseError, match="llama runner crashed") as info:
        for chunk in OllamaClient(ollama.url).chat("m", [Message("user", "x")]):
            received.append(chunk["message"]["content"])
    assert received == ["ab", "cd"]
    assert info.value.status == 200 and info.value.error == "llama runner crashed"


def test_unknown_model_is_a_404_with_the_server_text(ollama):
    with pytest.raises(OllamaResponseError, match="model 'nope:1b' not found") as info:
        list(OllamaClient(ollama.url).chat("nope:1b", [Message("user", "x")]))
    assert info.value.status == 404 and ollama.url.split("//")[1] in str(info.value)


def test_think_on_a_model_without_thinking_is_refused(ollama):
    ollama.add_model("plain")
    with pytest.raises(OllamaError, match='"plain" does not support thinking.*HTTP 400'):
        list(OllamaClient(ollama.url).chat("plain", [Message("user", "x")], think=True))
    assert list(OllamaClient(ollama.url).chat("plain", [Message("user", "x")], think=False))[-1]["done"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_host_names_the_host_and_the_fix():
    port = _closed_port()
    client = OllamaClient(f"127.0.0.1:{port}", retries=0)
    with pytest.raises(OllamaError) as info:
        client.version()
    message = str(info.value)
    assert f"http://127.0.0.1:{port}" in message
    assert "ollama serve" in message and "OLLAMA_HOST" in message and "--host" in message


class FlakySession(requests.Session):
    """A session whose first ``failures`` requests fail to connect."""

    def __init__(self, failures: int):
        super().__init__()
        self.failures, self.calls = failures, 0

    def request(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise requests.ConnectionError("connection refused")
        return super().request(*args, **kwargs)


def test_connection_errors_are_retried_a_bounded_number_of_times(ollama):
    flaky = FlakySession(failures=2)
    assert OllamaClient(ollama.url, retries=2, backoff=0, session=flaky).version() == "0.12.6"
    assert flaky.calls == 3
    hopeless = FlakySession(failures=10)
    with pytest.raises(OllamaError, match="cannot reach Ollama"):
        OllamaClient(ollama.url, retries=2, backoff=0, session=hopeless).version()
    assert hopeless.calls == 3


def test_http_errors_are_not_retried(ollama):
    counting = FlakySession(failures=0)
    with pytest.raises(OllamaError, match="404 page not found"):
        OllamaClient(ollama.url, retries=3, backoff=0, session=counting)._send("GET", "/api/nothing")
    assert counting.calls == 1


def test_an_upload_that_broke_off_once_says_once(tmp_path):
    from ollama_emulator import OllamaEmulator, write_gguf

    gguf = write_gguf(tmp_path / "m.gguf")
    with OllamaEmulator() as ollama:
        ollama.drop_uploads = 1
        with pytest.raises(OllamaConnectionError, match="broke off 1 time; check the server"):
            OllamaClient(ollama.url, retries=0).push_blob(gguf)
