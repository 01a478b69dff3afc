"""A small HTTP client for the Ollama server API.

``resolve_host`` finds the server the way Ollama's own CLI does (``envconfig.Host()``); ``OllamaClient``
sends requests through one ``requests.Session`` and turns connection failures, HTTP errors and
``{"error": ...}`` lines inside a 200 stream into ``OllamaError`` messages that say what to do next.
Endpoints: version, tags, show, delete, chat (streamed), blobs (HEAD and upload) and create (streamed).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from orchestrator.conversations import Message
from orchestrator.errors import OllamaError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = "11434"
HOST_ENV = "OLLAMA_HOST"
_PORT_RE = re.compile(r"[+-]?[0-9]+")
DIGEST_RE = re.compile(r"^sha256[:-][0-9a-fA-F]{64}$")
CHUNK_SIZE = 1 << 20  # bytes read from disk at a time, for hashing and uploading
ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes in all)


class OllamaResponseError(OllamaError):
    """The server answered with an error: an HTTP 4xx/5xx, or an ``error`` line inside a stream."""

    def __init__(self, message: str, *, status: int | None = None, error: str = ""):
        super().__init__(message)
        self.status = status
        self.error = error


class OllamaConnectionError(OllamaError):
    """The request never got an answer: nothing listens at the address, or the connection broke."""


@dataclass
class BlobUpload:
    """One file pushed as a blob: its digest, its size, and whether bytes were sent (False: Ollama had it)."""

    path: Path
    digest: str
    size: int
    uploaded: bool


def file_digest(path: str | os.PathLike, on_progress: ProgressCallback | None = None) -> str:
    """``sha256:<hex>`` of a file, read in chunks (never the whole file in memory)."""
    path = Path(path)
    total = path.stat().st_size
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
            done += len(chunk)
            if on_progress:
                on_progress(done, total)
    if on_progress and total == 0:
        on_progress(0, 0)
    return f"sha256:{digest.hexdigest()}"


class _HashingReader:
    """A file opened for upload: hashes what is sent and reports progress; ``len()`` gives Content-Length."""

    def __init__(self, path: Path, on_progress: ProgressCallback | None):
        self.handle = open(path, "rb")  # closed by close(), once the request is sent
        self.size = path.stat().st_size
        self.sent = 0
        self.sha256 = hashlib.sha256()
        self.on_progress = on_progress
        self._reported = -1

    def __len__(self) -> int:
        return self.size

    def read(self, size: int = -1) -> bytes:
        """At most ``size`` bytes (never more than CHUNK_SIZE: the sender asks again until EOF)."""
        data = self.handle.read(CHUNK_SIZE if size is None or size < 0 else min(size, CHUNK_SIZE))
        self.sha256.update(data)
        self.sent += len(data)
        if self.on_progress and (self.sent - self._reported >= CHUNK_SIZE or self.sent == self.size):
            if self.sent != self._reported:
                self._reported = self.sent
                self.on_progress(self.sent, self.size)
        return data

    def close(self) -> None:
        self.handle.close()


def resolve_host(host: str | None = None) -> str:
    """The server's base URL, following Ollama's ``envconfig.Host()`` rules exactly.

    The value comes from ``host``, else ``$OLLAMA_HOST``, else ``127.0.0.1:11434``. Spaces and quotes
    around it are dropped. Without a scheme it is ``http`` and the default port 11434; ``http://`` and
    ``https://`` default to ports 80 and 443. A bare IP or hostname gets the default port, an invalid
    port is replaced by the default one, and a path after the host is kept (a proxy prefix).
    """
    raw = host if host is not None and host.strip() else os.environ.get(HOST_ENV, "")
    value = raw.strip().strip("\"'").strip()
    default_port = DEFAULT_PORT
    scheme, sep, hostport = value.partition("://")
    if not sep:
        scheme, hostport = "http", value
        if value == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme == "http":
        default_port = "80"
    elif scheme == "https":
        default_port = "443"

    hostport, _, path = hostport.partition("/")
    split = _split_host_port(hostport)
    if split is None:
        name, port = DEFAULT_HOST, default_port
        ip = _parse_ip(hostport.strip("[]"))
        if ip is not None:
            name = ip
        elif hostport:
            name = hostport
    else:
        name, port = split
    if not _valid_port(port):
        log.warning("invalid port %r in the Ollama host, using %s", port, default_port)
        port = default_port
    url = f"{scheme}://{_join_host_port(name, port)}"
    if path:
        url += "/" + quote(path, safe="/$&+,:;=@")
    return url


def connectable_url(url: str) -> str:
    """``url`` with a host a client can dial: unspecified or empty addresses become loopback ones.

    Ollama's ``ConnectableHost()`` does the first part; an empty host (``OLLAMA_HOST=:1234``) is dialed
    as the local machine by Go, which ``requests`` cannot do, so it becomes 127.0.0.1 here.
    """
    scheme, _, rest = url.partition("://")
    hostport, slash, path = rest.partition("/")
    split = _split_host_port(hostport)
    if split is None:
        return url
    name, port = split
    ip = _parse_ip(name)
    if not name or ip == "0.0.0.0":
        name = DEFAULT_HOST
    elif ip == "::":
        name = "::1"
    return f"{scheme}://{_join_host_port(name, port)}{slash}{path}"


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort``: ``(host, port)``, or None where Go returns an error."""
    i = hostport.rfind(":")
    if i < 0:
        return None
    start, end = 0, 0
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0 or close + 1 != i:
            return None
        host = hostport[1:close]
        start, end = 1, close + 1
    else:
        host = hostport[:i]
        if ":" in host:
            return None
    if "[" in hostport[start:] or "]" in hostport[end:]:
        return None
    return host, hostport[i + 1 :]


def _join_host_port(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_ip(text: str) -> str | None:
    """Go's ``net.ParseIP(text).String()``, or None when ``text`` is not an IP address."""
    if "%" in text:  # Go's ParseIP takes no IPv6 zone
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _valid_port(port: str) -> bool:
    """Go's ``strconv.ParseInt(port, 10, 32)`` succeeding with a value in 0..65535."""
    return bool(_PORT_RE.fullmatch(port)) and 0 <= int(port) <= 65535


class OllamaClient:
    """One Ollama server: a base URL, a ``requests.Session``, timeouts and bounded retries.

    Args:
        host: the server, as ``--host`` or ``OLLAMA_HOST`` would give it (see ``resolve_host``).
        connect_timeout: seconds to wait for a connection.
        read_timeout: seconds to wait between bytes of an answer (a model may take a while to load).
        retries: extra attempts after a connection error (the request never reached the server).
        backoff: seconds before the first retry, doubled for each next one.
        session: a ``requests.Session`` to use instead of a new one.
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float | None = 600.0,
        retries: int = 2,
        backoff: float = 0.5,
        session: requests.Session | None = None,
    ):
        self.host = resolve_host(host)
        self.base_url = connectable_url(self.host).rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
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

    def _request(
        self, method: str, path: str, *, stream: bool = False, retry: bool = True, **kwargs: Any
    ) -> requests.Response:
        """Send one request and return a 2xx response; everything else becomes an ``OllamaError``.

        A connection error is retried ``retries`` times when ``retry`` is true: pass ``retry=False``
        for bodies that cannot be sent twice (an open file, a generator).
        """
        kwargs.setdefault("timeout", self.timeout)
        attempts = self.retries + 1 if retry else 1
        for attempt in range(attempts):
            try:
                response = self.session.request(method, self._url(path), stream=stream, **kwargs)
                break
            except requests.ConnectionError as exc:
                log.debug("%s %s: attempt %d failed: %s", method, path, attempt + 1, exc)
                if attempt + 1 >= attempts:
                    raise OllamaConnectionError(
                        f"cannot reach Ollama at {self.base_url}: is `ollama serve` running? set --host or {HOST_ENV}"
                    ) from exc
                time.sleep(self.backoff * 2**attempt)
            except requests.Timeout as exc:
                raise OllamaError(
                    f"Ollama at {self.base_url} did not answer {method} {path} within {self.timeout[1]} s"
                ) from exc
            except requests.RequestException as exc:
                raise OllamaError(f"request to Ollama at {self.base_url} failed: {exc}") from exc
        if response.status_code >= 400:
            with response:
                raise self._status_error(method, path, response)
        return response

    def _status_error(self, method: str, path: str, response: requests.Response) -> OllamaResponseError:
        text = response.text.strip()
        try:
            error = str(json.loads(text).get("error") or text)
        except (ValueError, AttributeError):
            error = text
        error = error or response.reason or "no details"
        return OllamaResponseError(
            f"Ollama at {self.base_url} refused {method} {path}: {error} (HTTP {response.status_code})",
            status=response.status_code,
            error=error,
        )

    def _ndjson(self, response: requests.Response, path: str) -> Iterator[dict[str, Any]]:
        """Yield each JSON line of a streamed answer; an ``error`` line raises ``OllamaResponseError``."""
        with response:
            try:
                for line in _split_lines(response.iter_content(chunk_size=None)):
                    yield self._parse_line(line, path, response.status_code)
            except requests.RequestException as exc:
                raise OllamaConnectionError(
                    f"the connection to Ollama at {self.base_url} broke during {path}: {exc}; check it and rerun"
                ) from exc

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
        with self._request("GET", "/api/version") as response:
            try:
                return str(response.json()["version"])
            except (ValueError, KeyError, TypeError) as exc:
                raise OllamaError(f"{self.base_url} answered /api/version without a version: is it Ollama?") from exc

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
        response = self._request("POST", "/api/chat", json=payload, stream=True)
        yield from self._ndjson(response, "/api/chat")

    def tags(self) -> list[dict[str, Any]]:
        """The local models (``GET /api/tags``)."""
        with self._request("GET", "/api/tags") as response:
            return list(_json_body(response, self.base_url, "/api/tags").get("models") or [])

    def show(self, model: str) -> dict[str, Any]:
        """A model's modelfile, parameters, template, system, details and capabilities (``POST /api/show``)."""
        with self._request("POST", "/api/show", json={"model": model}) as response:
            return _json_body(response, self.base_url, "/api/show")

    def delete(self, model: str) -> None:
        """Remove a model (``DELETE /api/delete``); a missing one is a 404 ``OllamaResponseError``."""
        self._request("DELETE", "/api/delete", json={"model": model}).close()

    def blob_exists(self, digest: str) -> bool:
        """Whether the server holds this blob (``HEAD /api/blobs/<digest>``: 200 or 404)."""
        _check_digest(digest)
        try:
            self._request("HEAD", f"/api/blobs/{digest}").close()
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
                        f"uploading {path.name} to Ollama at {self.base_url} broke off {failures} times; "
                        "check the server (its disk space, its logs) and rerun: the upload starts again"
                    ) from exc
                log.info("upload of %s broke off; starting again (attempt %d)", path.name, failures + 1)
                time.sleep(self.backoff * 2 ** (failures - 1))
        log.info("blob %s already on %s: upload skipped", digest, self.base_url)
        return BlobUpload(path, digest, size, uploaded=False)

    def _upload(self, path: Path, digest: str, on_progress: ProgressCallback | None) -> None:
        reader = _HashingReader(path, on_progress)
        try:
            headers = {"Content-Type": "application/octet-stream"}
            self._request("POST", f"/api/blobs/{digest}", data=reader, headers=headers, retry=False).close()
        finally:
            reader.close()
        sent = f"sha256:{reader.sha256.hexdigest()}"
        if reader.sent == reader.size and sent != digest.replace("-", ":", 1).lower():
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
        response = self._request("POST", "/api/create", json=payload, stream=True)
        lines = []
        for line in self._ndjson(response, "/api/create"):
            lines.append(line)
            if on_progress:
                on_progress(line)
        if not lines or lines[-1].get("status") != "success":
            last = lines[-1].get("status") if lines else "nothing"
            raise OllamaError(
                f"Ollama at {self.base_url} ended /api/create for {model} before success (last status: {last}); rerun"
            )
        return lines


def _json_body(response: requests.Response, base_url: str, path: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as exc:
        raise OllamaError(f"{base_url} answered {path} with something that is not JSON: is it Ollama?") from exc
    if not isinstance(data, dict):
        raise OllamaError(f"{base_url} answered {path} with unexpected JSON: is it Ollama?")
    return data


def _check_digest(digest: str) -> None:
    if not DIGEST_RE.match(digest):
        raise OllamaError(f"'{digest}' is not a blob digest (sha256:<64 hex digits>)")


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
