"""A local emulation of the Ollama HTTP server, faithful to reference/ollama-api.md, for tests.

It runs a ``ThreadingHTTPServer`` on 127.0.0.1, port 0, in a thread::

    with OllamaEmulator() as ollama:
        ollama.add_model("qwen3:4b", thinking=True, replies=[Reply("Hi!", thinking="greet")])
        client = OllamaClient(ollama.url)
        ...
        assert ollama.chat_requests()[0]["messages"][-1]["content"] == "hello"

Endpoints live in a dispatch table, ``OllamaEmulator.routes`` (exact paths) and ``prefix_routes``
(paths such as ``/api/blobs/<digest>``); a handler takes an ``EmulatedRequest`` and returns a
``Response`` (one JSON body) or a ``Stream`` (NDJSON lines, chunked, as Ollama sends them).
Implemented so far: ``GET /api/version`` and ``POST /api/chat``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

THINK_LEVELS = ("high", "medium", "low", "max")


@dataclass
class Reply:
    """What a model answers to one /api/chat request.

    ``chunk_chars`` cuts content and thinking into deltas of that many characters. ``fail_after``
    sends an ``{"error": error}`` line (on HTTP 200) after that many chunks instead of finishing.
    ``gate``: after the first chunk the server waits (at most ``gate_timeout`` s) for this event.
    ``hang_up_after`` ends the answer after that many chunks with neither an error nor ``done``.
    """

    content: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    done_reason: str = "stop"
    chunk_chars: int = 4
    fail_after: int | None = None
    error: str = "an error was encountered while running the model: unexpected EOF"
    gate: threading.Event | None = None
    gate_timeout: float = 5.0
    hang_up_after: int | None = None


@dataclass
class EmulatedModel:
    """A model the emulator serves: its capabilities and scripted replies.

    ``replies`` are used in order, the last one repeating; ``responder`` (given the request body)
    overrides them when set.
    """

    name: str
    capabilities: set[str] = field(default_factory=lambda: {"completion", "tools"})
    replies: list[Reply] = field(default_factory=lambda: [Reply("Hello!")])
    responder: Callable[[dict[str, Any]], Reply] | None = None

    def next_reply(self, body: dict[str, Any]) -> Reply:
        if self.responder is not None:
            return self.responder(body)
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


@dataclass
class EmulatedRequest:
    """A request as the emulator received it (kept in ``OllamaEmulator.requests``)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes or str
    content_type: str = "application/json; charset=utf-8"


@dataclass
class Stream:
    """An NDJSON answer sent with chunked transfer encoding, one line per item, flushed as it goes."""

    lines: Iterable[dict[str, Any]]
    status: int = 200


def error(status: int, message: str) -> Response:
    return Response(status, {"error": message})


def canonical_model(name: str) -> str:
    """Ollama's name completion: a model without a tag is ``:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def full_model_name(name: str) -> str:
    """The fully qualified name Ollama prints in capability errors: ``registry.ollama.ai/library/x:latest``."""
    parts = canonical_model(name).split("/")
    defaults = ["registry.ollama.ai", "library"]
    return "/".join(defaults[: max(0, 3 - len(parts))] + parts)


def _timestamp() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class OllamaEmulator:
    """The emulated server; start it with ``start()`` or ``with``, read ``url``, stop it with ``stop()``."""

    def __init__(self, version: str = "0.12.6"):
        self.version = version
        self.models: dict[str, EmulatedModel] = {}
        self.requests: list[EmulatedRequest] = []
        self.routes: dict[tuple[str, str], Callable[[EmulatedRequest], Response | Stream]] = {
            ("GET", "/api/version"): self.handle_version,
            ("POST", "/api/chat"): self.handle_chat,
        }
        self.prefix_routes: list[tuple[str, str, Callable[[EmulatedRequest], Response | Stream]]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> OllamaEmulator:
        handler = type("Handler", (_Handler,), {"emulator": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="ollama-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OllamaEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running: call start()")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- state -----------------------------------------------------------------------------------

    def add_model(
        self,
        name: str,
        *,
        replies: list[Reply] | None = None,
        thinking: bool = False,
        tools: bool = True,
        responder: Callable[[dict[str, Any]], Reply] | None = None,
    ) -> EmulatedModel:
        capabilities = {"completion"} | ({"thinking"} if thinking else set()) | ({"tools"} if tools else set())
        model = EmulatedModel(canonical_model(name), capabilities, replies or [Reply("Hello!")], responder)
        self.models[model.name] = model
        return model

    def record(self, request: EmulatedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def chat_requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of every ``POST /api/chat`` received, in order."""
        with self._lock:
            return [r.json() for r in self.requests if r.method == "POST" and r.path == "/api/chat"]

    def dispatch(self, request: EmulatedRequest) -> Response | Stream:
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            for method, prefix, candidate in self.prefix_routes:
                if method == request.method and request.path.startswith(prefix):
                    handler = candidate
                    break
        if handler is None:  # gin's answer to an unknown route
            return Response(404, "404 page not found", "text/plain")
        return handler(request)

    # -- handlers --------------------------------------------------------------------------------

    def handle_version(self, request: EmulatedRequest) -> Response:
        return Response(200, {"version": self.version})

    def handle_chat(self, request: EmulatedRequest) -> Response | Stream:
        if not request.body:
            return error(400, "missing request body")
        try:
            body = json.loads(request.body)
        except ValueError as exc:
            return error(400, f"invalid character in request body: {exc}")
        if not isinstance(body, dict):
            return error(400, "json: cannot unmarshal into Go value of type api.ChatRequest")
        problem = _check_chat_request(body)
        if problem:
            return problem
        name = body.get("model") or ""
        model = self.models.get(canonical_model(name))
        if model is None:
            return error(404, f"model '{name}' not found")
        think = body.get("think")
        if body.get("tools") and "tools" not in model.capabilities:
            return error(400, f"{full_model_name(name)} does not support tools")
        if "thinking" in model.capabilities:
            think = True if think is None else think
        elif think is True or think in THINK_LEVELS:
            return error(400, f'"{name}" does not support thinking')
        if not body.get("messages"):  # an empty chat only loads the model
            return Response(
                200,
                {
                    "model": name,
                    "created_at": _timestamp(),
                    "message": {"role": "assistant", "content": ""},
                    "done": True,
                    "done_reason": "load",
                },
            )
        reply = model.next_reply(body)
        if reply.fail_after == 0:  # nothing written yet: Ollama sends the error as the HTTP answer
            return error(500, reply.error)
        lines = _chat_lines(name, body, reply, thinking=bool(think) and "thinking" in model.capabilities)
        if body.get("stream", True) is False:
            return _collapse(list(lines))
        return Stream(lines)


def _check_chat_request(body: dict[str, Any]) -> Response | None:
    if not body.get("model"):
        return error(400, "model is required")
    think = body.get("think")
    if think is not None and not isinstance(think, bool) and think not in THINK_LEVELS:
        return error(400, f'invalid think value: "{think}" (must be "high", "medium", "low", "max", true, or false)')
    messages = body.get("messages") or []
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return error(400, "json: cannot unmarshal messages into Go struct field ChatRequest.messages")
    return None


def _pieces(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _chat_lines(model: str, body: dict[str, Any], reply: Reply, *, thinking: bool) -> Iterator[dict[str, Any]]:
    """The NDJSON lines of one streamed answer: thinking deltas, content deltas, tool calls, done."""
    started = time.monotonic_ns()
    deltas: list[dict[str, Any]] = []
    if thinking:
        deltas += [
            {"role": "assistant", "content": "", "thinking": t} for t in _pieces(reply.thinking, reply.chunk_chars)
        ]
    deltas += [{"role": "assistant", "content": c} for c in _pieces(reply.content, reply.chunk_chars)]
    if reply.tool_calls and body.get("tools"):  # Ollama parses tool calls only when tools were offered
        calls = [{"id": f"call_{i}", "function": {"index": i, **call}} for i, call in enumerate(reply.tool_calls)]
        deltas.append({"role": "assistant", "content": "", "tool_calls": calls})
    for sent, message in enumerate(deltas):
        if reply.fail_after is not None and sent >= reply.fail_after:
            yield {"error": reply.error}
            return
        if reply.hang_up_after is not None and sent >= reply.hang_up_after:
            return
        yield {"model": model, "created_at": _timestamp(), "message": message, "done": False}
        if sent == 0 and reply.gate is not None:
            reply.gate.wait(reply.gate_timeout)
    if reply.fail_after is not None:
        yield {"error": reply.error}
        return
    prompt_words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    elapsed = max(1, time.monotonic_ns() - started)
    yield {
        "model": model,
        "created_at": _timestamp(),
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": reply.done_reason,
        "total_duration": elapsed + 1000,
        "load_duration": 1000,
        "prompt_eval_count": prompt_words,
        "prompt_eval_duration": 500,
        "eval_count": len(deltas),
        "eval_duration": elapsed,
    }


def _collapse(lines: list[dict[str, Any]]) -> Response:
    """A non-streamed answer: the deltas joined into the final object (or the error, with HTTP 500)."""
    for line in lines:
        if "error" in line:
            return error(500, line["error"])
    final = dict(lines[-1])
    message: dict[str, Any] = {"role": "assistant", "content": "".join(m["message"]["content"] for m in lines)}
    thinking = "".join(m["message"].get("thinking", "") for m in lines)
    calls = [c for m in lines for c in m["message"].get("tool_calls", [])]
    if thinking:
        message["thinking"] = thinking
    if calls:
        message["tool_calls"] = calls
    final["message"] = message
    return Response(200, final)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked answers, keep-alive, as Ollama's Go server
    emulator: OllamaEmulator

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        body = self._read_body() if self.command not in ("GET", "HEAD") else b""
        request = EmulatedRequest(self.command, self.path.split("?", 1)[0], dict(self.headers), body)
        self.emulator.record(request)
        answer = self.emulator.dispatch(request)
        if isinstance(answer, Stream):
            self._send_stream(answer)
        else:
            self._send(answer)

    do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = _dispatch

    def _send(self, answer: Response) -> None:
        if answer.body is None:
            data = b""
        elif isinstance(answer.body, bytes):
            data = answer.body
        elif isinstance(answer.body, str):
            data = answer.body.encode()
        else:
            data = json.dumps(answer.body, ensure_ascii=False).encode()
        self.send_response(answer.status)
        if data:
            self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_stream(self, answer: Stream) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for line in answer.lines:
                data = json.dumps(line, ensure_ascii=False).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client hung up mid-answer
            self.close_connection = True
