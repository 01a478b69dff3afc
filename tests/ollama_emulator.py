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
Implemented: ``GET /api/version``, ``POST /api/chat``, ``HEAD``/``POST /api/blobs/<digest>``,
``POST /api/create``, ``POST /api/show``, ``GET /api/tags`` and ``DELETE /api/delete``.

Strict where Ollama is strict: an upload's digest is recomputed and a mismatch refused; unknown blobs
and models are 404s; a create request is validated (relative file names, model name, ``from`` or
``files``, the TEMPLATE through ``template_check``); every GGUF is read with the ``gguf`` package and a
broken one refused; ``quantize`` needs a GGUF whose ``general.file_type`` is F16, BF16 or F32. Faults
can be injected: ``drop_uploads`` cuts the next uploads off mid-body, ``fail_create`` sends an error
line in the middle of the next create stream.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
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
    template: str = "{{ .Prompt }}"
    system: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    model_info: dict[str, Any] = field(default_factory=dict)
    license: list[str] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    modified_at: str = ""

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


def json_object(request: EmulatedRequest, go_type: str) -> dict[str, Any] | Response:
    """A request's JSON object body, or the 400 Ollama answers for a missing, broken or non-object body."""
    if not request.body:
        return error(400, "missing request body")
    try:
        body = json.loads(request.body)
    except ValueError as exc:
        return error(400, f"invalid character in request body: {exc}")
    if not isinstance(body, dict):
        return error(400, f"json: cannot unmarshal into Go value of type {go_type}")
    return body


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
    """The emulated server; start it with ``start()`` or ``with``, read ``url``, stop it with ``stop()``.

    ``template_check(text)`` returns an error for a TEMPLATE Ollama would refuse (default: a light check
    of the ``{{ }}`` actions; tests can plug in Go's parser). ``default_replies`` are what a created
    model answers. ``drop_uploads`` / ``drop_after`` cut that many next uploads off after that many
    bytes; ``fail_create = (after_lines, message)`` fails the next create mid-stream.
    """

    def __init__(self, version: str = "0.12.6"):
        self.version = version
        self.models: dict[str, EmulatedModel] = {}
        self.requests: list[EmulatedRequest] = []
        self.blob_dir = Path(tempfile.mkdtemp(prefix="ollama-emulator-blobs-"))
        self.uploads: list[str] = []
        self.template_check: Callable[[str], str | None] = check_template_actions
        self.default_replies: list[Reply] = [Reply("Hello! I am the tuned model.")]
        self.drop_uploads = 0
        self.drop_after = 1024
        self.fail_create: tuple[int, str] | None = None
        self.routes: dict[tuple[str, str], Callable[[EmulatedRequest], Response | Stream]] = {
            ("GET", "/api/version"): self.handle_version,
            ("POST", "/api/chat"): self.handle_chat,
            ("POST", "/api/create"): self.handle_create,
            ("POST", "/api/show"): self.handle_show,
            ("GET", "/api/tags"): self.handle_tags,
            ("DELETE", "/api/delete"): self.handle_delete,
        }
        self.prefix_routes: list[tuple[str, str, Callable[[EmulatedRequest], Response | Stream]]] = [
            ("HEAD", "/api/blobs/", self.handle_blob_head),
            ("POST", "/api/blobs/", self.handle_blob_upload),
        ]
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
        shutil.rmtree(self.blob_dir, ignore_errors=True)

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

    def blob_path(self, digest: str) -> Path:
        return self.blob_dir / digest.lower().replace(":", "-", 1)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def take_upload_fault(self, method: str, path: str) -> bool:
        """Whether this upload is to be cut off (and one fewer after it)."""
        with self._lock:
            if method == "POST" and path.startswith("/api/blobs/") and self.drop_uploads > 0:
                self.drop_uploads -= 1
                return True
        return False

    def requests_to(self, method: str, prefix: str) -> list[EmulatedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

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
        body = json_object(request, "api.ChatRequest")
        if isinstance(body, Response):
            return body
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

    # -- blobs -----------------------------------------------------------------------------------

    def handle_blob_head(self, request: EmulatedRequest) -> Response:
        digest = request.path.removeprefix("/api/blobs/")
        if not DIGEST_RE.match(digest):
            return error(400, "invalid digest format")
        return Response(200) if self.has_blob(digest) else Response(404)

    def handle_blob_upload(self, request: EmulatedRequest) -> Response:
        digest = request.path.removeprefix("/api/blobs/")
        if not DIGEST_RE.match(digest):
            return error(400, "invalid digest format")
        if self.has_blob(digest):
            return Response(200)
        got = "sha256:" + hashlib.sha256(request.body).hexdigest()
        expected = digest.lower().replace("-", ":", 1)
        if got != expected:
            return error(400, f"digest mismatch, expected {expected}, got {got}")
        tmp = self.blob_path(digest).with_suffix(".partial")
        tmp.write_bytes(request.body)
        tmp.replace(self.blob_path(digest))
        with self._lock:
            self.uploads.append(expected)
        return Response(201)

    # -- create ----------------------------------------------------------------------------------

    def handle_create(self, request: EmulatedRequest) -> Response | Stream:
        body = json_object(request, "api.CreateRequest")
        if isinstance(body, Response):
            return body
        problem = self._check_create(body)
        if problem:
            return problem
        fault, self.fail_create = self.fail_create, None
        lines = self._create_lines(body)
        return Stream(_with_fault(lines, fault) if fault else lines)

    def _check_create(self, body: dict[str, Any]) -> Response | None:
        for name, digest in (body.get("files") or {}).items():
            if not valid_relative_path(name):
                return error(400, "file path must be relative")
            if not digest or not DIGEST_RE.match(str(digest)):
                return error(400, "invalid digest format")
        adapters = body.get("adapters") or {}
        if any(not d or not DIGEST_RE.match(str(d)) for d in adapters.values()):
            return error(400, "invalid digest format")
        if not valid_model_name(body.get("model") or body.get("name") or ""):
            return error(400, "invalid model name")
        if body.get("template") is not None:
            problem = self.template_check(body["template"])
            if problem:
                return error(400, f"template error: {problem}")
        if not body.get("from") and not body.get("files"):
            return error(400, "neither 'from' or 'files' was specified")
        if len(adapters) > 1:
            return error(400, "only one adapter is currently supported")
        return None

    def _create_lines(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        name = canonical_model(body.get("model") or body.get("name"))
        if body.get("from"):
            base = self.models.get(canonical_model(body["from"]))
            if base is None:
                yield {"status": "pulling manifest"}
                yield {"error": "pull model manifest: file does not exist"}
                return
            details, info, layers = dict(base.details, parent_model=base.name), dict(base.model_info), list(base.layers)
        else:
            model = yield from self._model_layer(body)
            if model is None:
                return
            details, info, layers = model
        for digest in (body.get("adapters") or {}).values():
            ok = yield from self._adapter_layer(digest, details.get("family"))
            if not ok:
                return
            layers.append(digest)
        for key in ("template", "system", "parameters", "messages", "license"):
            if body.get(key) is not None:
                text = json.dumps(body[key], sort_keys=True).encode()
                yield {"status": f"creating new layer sha256:{hashlib.sha256(text).hexdigest()}"}
        yield {"status": "writing manifest"}
        self._register(name, body, details, info, layers)
        yield {"status": "success"}

    def _model_layer(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Yield the statuses of reading the model GGUF; return (details, model_info, layers) or None."""
        digest = next(iter(body["files"].values()))  # one GGUF (split GGUFs are not emulated)
        yield {"status": "parsing GGUF"}
        header = yield from self._read_blob(digest)
        if header is None:
            return None
        if header.get("general.type") == "adapter":
            yield {"error": "the GGUF in files is an adapter (general.type=adapter); send it in adapters"}
            return None
        problem = qwen3_loader_problem(header)
        if problem:
            yield {"error": f"failed to validate GGUF with llama-quantize: {problem}"}
            return None
        file_type = file_type_name(header.get("general.file_type"))
        quantize = str(body.get("quantize") or "").upper()
        if quantize:
            if quantize not in QUANTIZE_TYPES:
                yield {"error": f"unsupported quantization type {quantize}"}
                return None
            if file_type not in ("F16", "BF16", "F32"):
                yield {"error": "quantization is only supported for F16, BF16 and F32 models"}
                return None
            if quantize != file_type:
                size = self.blob_path(digest).stat().st_size
                for done in (0, size // 2, size):
                    yield {
                        "status": f"quantizing {file_type} model to {quantize}",
                        "digest": "0" * 19,
                        "total": size,
                        "completed": done,
                    }
                file_type = quantize
        else:
            yield {"status": "validating GGUF model"}
        yield {"status": "verifying conversion"}
        yield {"status": f"using existing layer {digest}"}
        arch = header.get("general.architecture", "")
        details = {
            "parent_model": "",
            "format": "gguf",
            "family": arch,
            "families": [arch],
            "parameter_size": human_number(header["__parameter_count__"]),
            "quantization_level": file_type,
        }
        info = {k: v for k, v in header.items() if not k.startswith("__") and not k.startswith("tokenizer.ggml.")}
        info["general.parameter_count"] = header["__parameter_count__"]
        return details, info, [digest]

    def _adapter_layer(self, digest: str, family: str | None) -> Iterator[dict[str, Any]]:
        yield {"status": "parsing GGUF"}
        header = yield from self._read_blob(digest)
        if header is None:
            return False
        if header.get("general.type") != "adapter":
            yield {"error": "the GGUF in adapters has no general.type=adapter: it is not a LoRA adapter"}
            return False
        if family and header.get("general.architecture") != family:
            yield {"error": f"adapter architecture {header.get('general.architecture')} does not match {family}"}
            return False
        yield {"status": f"using existing layer {digest}"}
        return True

    def _read_blob(self, digest: str) -> Iterator[dict[str, Any]]:
        path = self.blob_path(digest)
        if not path.is_file():
            yield {"error": f"open {path}: no such file or directory"}
            return None
        try:
            return read_gguf(path)
        except GGUFProblem as exc:
            yield {"error": str(exc)}
            return None

    def _register(self, name: str, body: dict[str, Any], details: dict, info: dict, layers: list[str]) -> None:
        template = body.get("template") or "{{ .Prompt }}"
        capabilities = {"completion"}
        if ".Tools" in template:
            capabilities.add("tools")
        if ".Thinking" in template and "<think>" in template:
            capabilities.add("thinking")
        license = body.get("license") or []
        self.models[name] = EmulatedModel(
            name,
            capabilities,
            list(self.default_replies),
            template=template,
            system=body.get("system") or "",
            parameters=dict(body.get("parameters") or {}),
            details=details,
            model_info=info,
            license=[license] if isinstance(license, str) else list(license),
            messages=list(body.get("messages") or []),
            layers=layers,
            modified_at=_timestamp(),
        )

    # -- show, tags, delete ------------------------------------------------------------------------

    def _named(self, request: EmulatedRequest) -> EmulatedModel | Response:
        """The model a show/delete request names: 400 without a name, 404 when it does not exist."""
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            return error(400, "invalid request body")
        name = (body or {}).get("model") or (body or {}).get("name") if isinstance(body, dict) else None
        if not name:
            return error(400, "model is required")
        model = self.models.get(canonical_model(name))
        return model if model is not None else error(404, f"model '{name}' not found")

    def handle_show(self, request: EmulatedRequest) -> Response:
        model = self._named(request)
        if isinstance(model, Response):
            return model
        # A session saved with /save in `ollama run` carries its MESSAGE lines; Ollama returns them here.
        saved = {"messages": model.messages} if model.messages else {}
        return Response(
            200,
            {
                **saved,
                "license": "\n".join(model.license),
                "modelfile": f'# Modelfile generated by "ollama show"\nFROM {model.name}\n',
                "parameters": parameters_text(model.parameters),
                "template": model.template,
                "system": model.system,
                "details": model.details or {"format": "gguf", "family": "", "quantization_level": ""},
                "model_info": model.model_info,
                "capabilities": sorted(model.capabilities),
                "modified_at": model.modified_at or _timestamp(),
            },
        )

    def handle_tags(self, request: EmulatedRequest) -> Response:
        models = []
        for model in self.models.values():
            size = sum(self.blob_path(d).stat().st_size for d in model.layers if self.has_blob(d))
            digest = hashlib.sha256(model.name.encode()).hexdigest()
            models.append(
                {
                    "name": model.name,
                    "model": model.name,
                    "modified_at": model.modified_at or _timestamp(),
                    "size": size,
                    "digest": digest,
                    "details": model.details,
                }
            )
        return Response(200, {"models": models})

    def handle_delete(self, request: EmulatedRequest) -> Response:
        model = self._named(request)
        if isinstance(model, Response):
            return model
        del self.models[model.name]
        return Response(200)


# -- what the create handler checks ------------------------------------------------------------------

DIGEST_RE = re.compile(r"^sha256[:-][0-9a-fA-F]{64}$")
QUANTIZE_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_K_S", "Q4_K_M")
_NAME_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_NAMESPACE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_HOST_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")
_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}", re.DOTALL)


class GGUFProblem(Exception):
    """A GGUF Ollama would refuse to read."""


def valid_model_name(name: str) -> bool:
    """Ollama's ``model.ParseName(name).IsValid()`` (types/model/name.go): ``[host/][namespace/]model[:tag]``.

    A ``:`` after the last ``/`` starts the tag; missing parts default to registry.ollama.ai, library and
    latest, but a separator followed by nothing (``model:``, ``../x`` has the namespace ``..``) is invalid.
    Every part starts with a letter, digit or ``_``, then those, ``-`` and ``.``; a namespace has no ``.``,
    only a host has ``:``; a host is at most 350 characters, the other parts 80.
    """
    missing = "!MISSING!"

    def cut(text: str, sep: str) -> tuple[str, str, bool]:
        before, found, after = text.rpartition(sep)
        if not found:
            return text, "", False
        return before or missing, after or missing, True

    host = namespace = tag = ""
    rest = name
    if rest.rfind(":") > rest.rfind("/"):
        rest, tag, _ = cut(rest, ":")
    rest, model, promised = cut(rest, "/")
    if not promised:
        model = rest
    else:
        rest, namespace, promised = cut(rest, "/")
        if not promised:
            namespace = rest
        else:
            host = rest.split("://", 1)[-1]
    parts = {
        "host": (host or "registry.ollama.ai", 350, _HOST_PART),
        "namespace": (namespace or "library", 80, _NAMESPACE_PART),
        "model": (model, 80, _NAME_PART),
        "tag": (tag or "latest", 80, _NAME_PART),
    }
    return all(len(text) <= limit and pattern.fullmatch(text) for text, limit, pattern in parts.values())


def valid_relative_path(name: str) -> bool:
    """Go's ``fs.ValidPath``: unrooted, slash-separated, no empty, ``.`` or ``..`` elements."""
    if name == ".":
        return True
    return bool(name) and not name.startswith("/") and all(p not in ("", ".", "..") for p in name.split("/"))


def check_template_actions(text: str) -> str | None:
    """A light stand-in for Go's template parser: every ``{{`` closes and block actions balance."""
    if text.count("{{") != len(_ACTION.findall(text)):
        return "unclosed action"
    depth = 0
    for action in _ACTION.findall(text):
        word = action.split(" ", 1)[0]
        if word in ("if", "range", "with", "define", "block"):
            depth += 1
        elif word == "end":
            depth -= 1
            if depth < 0:
                return "unexpected {{end}}"
    return "unexpected EOF" if depth else None


def read_gguf(path: Path) -> dict[str, Any]:
    """The GGUF's key/values (plus ``__parameter_count__``), read with the gguf package; GGUFProblem if broken."""
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise GGUFProblem("supplied file was not in GGUF format")
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
        header = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}
        count = 0
        for tensor in reader.tensors:
            if len(tensor.shape) > 4:
                raise GGUFProblem(f"tensor {tensor.name} has more than 4 dimensions")
            count += int(tensor.n_elements)
            if tensor.data.nbytes != tensor.n_bytes:
                raise GGUFProblem(f"tensor {tensor.name} runs past the end of the file")
    except GGUFProblem:
        raise
    except Exception as exc:  # any decoding failure: a refused file
        raise GGUFProblem(f"failed to decode GGUF: {exc}") from exc
    header["__parameter_count__"] = count
    return header


def qwen3_loader_problem(header: dict[str, Any]) -> str | None:
    """What llama.cpp's loader would reject in a model GGUF (the keys a qwen3 model needs)."""
    arch = header.get("general.architecture")
    if not arch:
        return "missing general.architecture"
    if arch == "qwen3":
        for key in ("context_length", "block_count", "embedding_length", "attention.head_count"):
            if f"qwen3.{key}" not in header:
                return f"key not found in model: qwen3.{key}"
    return None


def file_type_name(value: Any) -> str:
    """``general.file_type`` as Ollama names it (F16, Q8_0, Q4_K_M...); ``unknown`` when missing."""
    import gguf

    try:
        name = gguf.LlamaFileType(int(value)).name
    except (TypeError, ValueError):
        return "unknown"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def human_number(n: int) -> str:
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= limit:
            return f"{n / limit:.2f}{suffix}"
    return str(n)


def parameters_text(parameters: dict[str, Any]) -> str:
    """``show``'s parameters: one ``name value`` line per value (Go's %-30s %#v), lists repeated."""
    lines = []
    for key in sorted(parameters):
        values = parameters[key] if isinstance(parameters[key], list) else [parameters[key]]
        lines += [f"{key:<30} {json.dumps(v, ensure_ascii=False)}" for v in values]
    return "\n".join(lines)


def _with_fault(lines: Iterator[dict[str, Any]], fault: tuple[int, str]) -> Iterator[dict[str, Any]]:
    after, message = fault
    for sent, line in enumerate(lines):
        if sent >= after:
            yield {"error": message}
            return
        yield line


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
        path = self.path.split("?", 1)[0]
        if self.emulator.take_upload_fault(self.command, path):
            self._hang_up(path)
            return
        body = self._read_body() if self.command not in ("GET", "HEAD") else b""
        request = EmulatedRequest(self.command, path, dict(self.headers), body)
        self.emulator.record(request)
        answer = self.emulator.dispatch(request)
        if isinstance(answer, Stream):
            self._send_stream(answer)
        else:
            self._send(answer)

    do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = _dispatch

    def _hang_up(self, path: str) -> None:
        """Read part of an upload, then drop the connection without an answer (a server gone mid-upload)."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, self.emulator.drop_after))
        self.emulator.record(EmulatedRequest(self.command, path, dict(self.headers), body))
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

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


def write_gguf(
    path: str | Path,
    *,
    file_type: str = "MOSTLY_F16",
    arch: str = "qwen3",
    adapter: bool = False,
    size_bytes: int = 4096,
    skip_keys: tuple[str, ...] = (),
    chat_template: str | None = None,
    strings: dict[str, str] | None = None,
) -> Path:
    """A small GGUF written with gguf.GGUFWriter: a qwen3 model header (or a LoRA adapter) and tiny tensors.

    ``file_type`` names a ``gguf.LlamaFileType`` (None leaves general.file_type out); ``size_bytes`` sizes
    one f16 tensor so uploads can span several chunks; ``skip_keys`` leaves qwen3.* keys out; ``strings``
    adds string metadata keys (``{"orchestrator.quantize_to": "q4_K_M"}``).
    """
    import gguf
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type("adapter" if adapter else "model")
    writer.add_name("tiny-qwen3-test")
    if file_type is not None:
        writer.add_file_type(int(gguf.LlamaFileType[file_type]))
    for key, text in (strings or {}).items():
        writer.add_string(key, text)
    if adapter:
        writer.add_string("adapter.type", "lora")
        writer.add_float32("adapter.lora.alpha", 16.0)
        writer.add_tensor("blk.0.attn_q.weight.lora_a", np.ones((8, 64), dtype=np.float32))
        writer.add_tensor("blk.0.attn_q.weight.lora_b", np.ones((64, 8), dtype=np.float32))
    else:
        keys = {
            "context_length": lambda: writer.add_context_length(4096),
            "block_count": lambda: writer.add_block_count(2),
            "embedding_length": lambda: writer.add_embedding_length(64),
            "attention.head_count": lambda: writer.add_head_count(4),
        }
        for key, add in keys.items():
            if key not in skip_keys:
                add()
        writer.add_head_count_kv(2)
        if chat_template is not None:
            writer.add_chat_template(chat_template)
        rows = max(1, size_bytes // (64 * 2))
        writer.add_tensor("token_embd.weight", np.full((rows, 64), 0.5, dtype=np.float16))
        writer.add_tensor("output_norm.weight", np.ones((64,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
