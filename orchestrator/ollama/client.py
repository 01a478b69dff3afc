"""A small HTTP client for the Ollama server API.

``OllamaClient`` sends requests through one ``requests.Session`` and turns connection failures, HTTP
errors, stalled answers and ``{"error": ...}`` lines inside a 200 stream into ``OllamaError`` messages
that say what to do next. Endpoints: version, tags, show, delete, chat (streamed), blobs (HEAD and
upload) and create (streamed). The host is found as Ollama's CLI finds it (``hosts.resolve_host``).

Timeouts: version, tags, show, delete and HEAD answer at once on a working server, so they get a short
read timeout and a short deadline for the whole answer; create, blob uploads and chat may wait for a
model to load or a quantization to finish, so they get the long ones. The deadline also covers a
server that keeps sending a byte now and then (see ``deadline.Deadline``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from orchestrator.conversations import Message
from orchestrator.errors import OllamaError
from orchestrator.ollama.blobs import BlobUpload, HashingReader, ProgressCallback, check_digest, file_digest
from orchestrator.ollama.deadline import Deadline
from orchestrator.ollama.hosts import HOST_ENV, connectable_url, resolve_host
from orchestrator.text import counted

log = logging.getLogger(__name__)


class OllamaResponseError(OllamaError):
    """The server answered with an error: an HTTP 4xx/5xx, or an ``error`` line inside a stream."""

    def __init__(self, message: str, *, status: int | None = None, error: str = ""):
        super().__init__(message)
        self.status = status
        self.error = error


class OllamaConnectionError(OllamaError):
    """The request never got an answer: nothing listens at the address, or the connection broke."""


@dataclass
class _Answer:
    """A response whose headers arrived; its body is read within ``deadline``."""

    response: requests.Response
    deadline: Deadline
    method: str
    path: str
    read_timeout: float | None


class OllamaClient:
    """One Ollama server: a base URL, a ``requests.Session``, timeouts and bounded retries.

    Args:
        host: the server, as ``--host`` or ``OLLAMA_HOST`` would give it (see ``hosts.resolve_host``).
        connect_timeout: seconds to wait for a connection.
        short_timeout, short_deadline: seconds to wait for each read, and for the whole answer, of
            version, tags, show, delete and blob HEAD requests.
        read_timeout, long_deadline: the same for create, blob uploads and chat (a model may take a
            while to load; None: no limit).
        retries: extra attempts after a connection error (the request never reached the server).
        backoff: seconds before the first retry, doubled for each next one.
        session: a ``requests.Session`` to use instead of a new one.
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        connect_timeout: float = 5.0,
        short_timeout: float = 5.0,
        short_deadline: float = 20.0,
        read_timeout: float | None = 600.0,
        long_deadline: float | None = 6 * 3600.0,
        retries: int = 2,
        backoff: float = 0.5,
        session: requests.Session | None = None,
    ):
        self.host = resolve_host(host)
        self.base_url = connectable_url(self.host).rstrip("/")
        self.connect_timeout = connect_timeout
        self.short = (short_timeout, short_deadline)
        self.long = (read_timeout, long_deadline)
        self.retries = max(0, retries)
        self.backoff = backoff
        self.session = session or requests.Session()

    def __repr__(self) -> str:
        return f"OllamaClient({self.base_url!r})"

    def __enter__(self) -> OllamaClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    # -- plumbing --------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _send(self, method: str, path: str, *, long: bool = False, retry: bool = True, **kwargs: Any) -> _Answer:
        """Send one request and return its 2xx answer, body unread; everything else becomes an ``OllamaError``.

        A connection error is retried ``retries`` times when ``retry`` is true: pass ``retry=False``
        for bodies that cannot be sent twice (an open file, a generator).
        """
        per_read, seconds = self.long if long else self.short
        deadline = Deadline(seconds)
        attempts = self.retries + 1 if retry else 1
        for attempt in range(attempts):
            timeout = (self.connect_timeout, deadline.read_timeout(per_read))
            try:
                response = self.session.request(method, self._url(path), stream=True, timeout=timeout, **kwargs)
                break
            except requests.ConnectionError as exc:  # ConnectTimeout included: nothing was sent
                log.debug("%s %s: attempt %d failed: %s", method, path, attempt + 1, exc)
                if attempt + 1 >= attempts:
                    raise OllamaConnectionError(
                        f"cannot reach Ollama at {self.base_url}: is `ollama serve` running? set --host or {HOST_ENV}"
                    ) from exc
                time.sleep(self.backoff * 2**attempt)
            except requests.Timeout as exc:
                raise OllamaError(
                    f"Ollama at {self.base_url} did not answer {method} {path} within {timeout[1]:g} s: is it Ollama, "
                    f"and is it stuck? check its log, or point --host / {HOST_ENV} at the right server"
                ) from exc
            except requests.RequestException as exc:
                raise OllamaError(f"request to Ollama at {self.base_url} failed: {exc}") from exc
            except ValueError as exc:  # urllib3's LocationValueError: an address the socket layer refuses
                raise OllamaError(f"cannot connect to {self.base_url}: {exc}; check --host / {HOST_ENV}") from exc
        answer = _Answer(response, deadline, method, path, per_read)
        if response.status_code >= 400:
            raise self._status_error(answer, self._body(answer))
        return answer

    @contextlib.contextmanager
    def _reading(self, answer: _Answer) -> Iterator[requests.Response]:
        """The answer's response, to read within its deadline; a stalled or broken body is an OllamaError."""
        with answer.response as response:
            try:
                with answer.deadline.watch(response):
                    yield response
            except requests.RequestException as exc:
                raise self._body_error(answer, exc) from exc

    def _body(self, answer: _Answer) -> bytes:
        with self._reading(answer) as response:
            return response.content

    def _json(self, answer: _Answer) -> dict[str, Any]:
        body = self._body(answer)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise OllamaError(
                f"{self.base_url} answered {answer.path} with something that is not JSON: is it Ollama?"
            ) from exc
        if not isinstance(data, dict):
            raise OllamaError(f"{self.base_url} answered {answer.path} with unexpected JSON: is it Ollama?")
        return data

    def _body_error(self, answer: _Answer, exc: requests.RequestException) -> OllamaError:
        what = f"{answer.method} {answer.path}"
        if answer.deadline.expired:
            return OllamaError(
                f"Ollama at {self.base_url} did not finish answering {what} within {answer.deadline.seconds:g} s "
                "(it sends too slowly or never ends); check the server and its log, then rerun"
            )
        if _timed_out(exc):
            return OllamaError(
                f"Ollama at {self.base_url} stopped answering {what} for {answer.read_timeout:g} s; "
                "check the server and its log, then rerun"
            )
        return OllamaConnectionError(
            f"the connection to Ollama at {self.base_url} broke during {answer.path}: {exc}; check it and rerun"
        )

    def _status_error(self, answer: _Answer, body: bytes) -> OllamaResponseError:
        response = answer.response
        text = body.decode("utf-8", "replace").strip()
        try:
            error = str(json.loads(text).get("error") or text)
        except (ValueError, AttributeError):
            error = text
        error = error or response.reason or "no details"
        return OllamaResponseError(
            f"Ollama at {self.base_url} refused {answer.method} {answer.path}: {error} (HTTP {response.status_code})",
            status=response.status_code,
            error=error,
        )

    def _ndjson(self, answer: _Answer) -> Iterator[dict[str, Any]]:
        """Yield each JSON line of a streamed answer; an ``error`` line raises ``OllamaResponseError``."""
        with self._reading(answer) as response:
            for line in _split_lines(response.iter_content(chunk_size=None)):
                yield self._parse_line(line, answer.path, response.status_code)

    def _parse_line(self, line: bytes, path: str, status: int) -> dict[str, Any]:
        try:
            data = json.loads(line)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            text = line.decode("utf-8", "replace")[:200]
            raise OllamaError(f"unexpected answer from Ollama at {self.base_url} to {path}: {text}")
        if data.get("error"):
            error = str(data["error"])
            raise OllamaResponseError(
                f"Ollama at {self.base_url} failed during {path}: {error}", status=status, error=error
            )
        return data

    # -- endpoints -------------------------------------------------------------------------------

    def version(self) -> str:
        """The server's version (``GET /api/version``)."""
        data = self._json(self._send("GET", "/api/version"))
        if "version" not in data:
            raise OllamaError(f"{self.base_url} answered /api/version without a version: is it Ollama?")
        return str(data["version"])

    def chat(
        self,
        model: str,
        messages: Iterable[Message | dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        think: bool | str | None = None,
        options: dict[str, Any] | None = None,
        stream: bool = True,
        keep_alive: str | int | None = None,
    ) -> Generator[dict[str, Any], None, None]:
        """``POST /api/chat``: yield the answer's chunks as they arrive (one dict when ``stream`` is false).

        The request is sent when iteration starts. Each chunk carries ``message.content`` and
        ``message.thinking`` deltas (and whole ``tool_calls``); the last has ``done: true``,
        ``done_reason`` and the counters. An error, even one arriving mid-stream, raises ``OllamaError``.
        """
        payload: dict[str, Any] = {
            "model": model,
            "messages": [m.to_ollama() if isinstance(m, Message) else m for m in messages],
            "stream": stream,
        }
        extras = {"tools": tools, "think": think, "options": options, "keep_alive": keep_alive}
        payload.update({key: value for key, value in extras.items() if value is not None})
        log.debug("POST /api/chat model=%s messages=%d", model, len(payload["messages"]))
        yield from self._ndjson(self._send("POST", "/api/chat", long=True, json=payload))

    def tags(self) -> list[dict[str, Any]]:
        """The local models (``GET /api/tags``)."""
        return list(self._json(self._send("GET", "/api/tags")).get("models") or [])

    def show(self, model: str) -> dict[str, Any]:
        """A model's modelfile, parameters, template, system, details and capabilities (``POST /api/show``)."""
        return self._json(self._send("POST", "/api/show", json={"model": model}))

    def delete(self, model: str) -> None:
        """Remove a model (``DELETE /api/delete``); a missing one is a 404 ``OllamaResponseError``."""
        self._body(self._send("DELETE", "/api/delete", json={"model": model}))

    def blob_exists(self, digest: str) -> bool:
        """Whether the server holds this blob (``HEAD /api/blobs/<digest>``: 200 or 404)."""
        check_digest(digest)
        try:
            self._body(self._send("HEAD", f"/api/blobs/{digest}"))
        except OllamaResponseError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def push_blob(
        self,
        path: str | os.PathLike,
        *,
        digest: str | None = None,
        on_progress: ProgressCallback | None = None,
        on_hash_progress: ProgressCallback | None = None,
    ) -> BlobUpload:
        """Upload a file as a blob unless the server already has it; returns what happened.

        The digest is computed by streaming the file (unless given); ``HEAD`` asks first; the upload
        streams the file from disk with a Content-Length, re-hashing what it sends. A connection error
        restarts the upload (``retries`` times); the server re-checks the digest and keeps nothing partial.
        """
        path = Path(path)
        digest = digest or file_digest(path, on_hash_progress)
        size = path.stat().st_size
        failures = 0
        while not self.blob_exists(digest):
            try:
                self._upload(path, digest, on_progress)
                return BlobUpload(path, digest, size, uploaded=True)
            except OllamaConnectionError as exc:
                failures += 1
                if failures > self.retries:
                    raise OllamaConnectionError(
                        f"uploading {path.name} to Ollama at {self.base_url} broke off {counted(failures, 'time')}; "
                        "check the server (its disk space, its logs) and rerun: the upload starts again"
                    ) from exc
                log.info("upload of %s broke off; starting again (attempt %d)", path.name, failures + 1)
                time.sleep(self.backoff * 2 ** (failures - 1))
        log.info("blob %s already on %s: upload skipped", digest, self.base_url)
        return BlobUpload(path, digest, size, uploaded=False)

    def _upload(self, path: Path, digest: str, on_progress: ProgressCallback | None) -> None:
        reader = HashingReader(path, on_progress)
        try:
            headers = {"Content-Type": "application/octet-stream"}
            answer = self._send("POST", f"/api/blobs/{digest}", long=True, data=reader, headers=headers, retry=False)
            self._body(answer)
        finally:
            reader.close()
        if reader.changed(digest):
            raise OllamaError(
                f"{path} changed while it was uploaded to {self.base_url}; rerun when it no longer changes"
            )

    def create(
        self,
        model: str,
        *,
        files: dict[str, str] | None = None,
        adapters: dict[str, str] | None = None,
        from_: str | None = None,
        template: str | None = None,
        system: str | None = None,
        parameters: dict[str, Any] | None = None,
        messages: Iterable[Message | dict[str, Any]] | None = None,
        license: str | list[str] | None = None,
        quantize: str | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """``POST /api/create``: build a model from uploaded blobs (``files``, ``adapters``) or ``from_``.

        Reads the NDJSON progress stream, passing each line to ``on_progress``, and returns the lines.
        An ``error`` line anywhere (even after HTTP 200) raises ``OllamaResponseError``; a stream that
        ends without ``success`` raises ``OllamaError``.
        """
        fields = {
            "files": files,
            "adapters": adapters,
            "from": from_,
            "template": template,
            "system": system,
            "parameters": parameters,
            "license": license,
            "quantize": quantize,
        }
        payload: dict[str, Any] = {"model": model, "stream": True}
        payload.update({key: value for key, value in fields.items() if value is not None})
        if messages is not None:
            payload["messages"] = [m.to_ollama() if isinstance(m, Message) else m for m in messages]
        log.debug("POST /api/create model=%s keys=%s", model, sorted(payload))
        lines = []
        for line in self._ndjson(self._send("POST", "/api/create", long=True, json=payload)):
            lines.append(line)
            if on_progress:
                on_progress(line)
        if not lines or lines[-1].get("status") != "success":
            last = lines[-1].get("status") if lines else "nothing"
            raise OllamaError(
                f"Ollama at {self.base_url} ended /api/create for {model} before success (last status: {last}); rerun"
            )
        return lines


def _timed_out(exc: requests.RequestException) -> bool:
    """Whether a failed body read was a read timeout (requests wraps urllib3's in a ConnectionError)."""
    from urllib3.exceptions import ReadTimeoutError

    return isinstance(exc, requests.Timeout) or any(isinstance(arg, ReadTimeoutError) for arg in exc.args)


def _split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Re-cut a byte stream into its non-empty lines (NDJSON), whatever the network chunking."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if pending.strip():
        yield pending
