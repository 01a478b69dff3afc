"""Loopback servers that misbehave the ways a wrong or stuck server does: one that never answers, and
ones that answer a byte or a line at a time, forever. Each runs on 127.0.0.1, port 0, in threads."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

TRICKLE_EVERY = 0.1  # seconds between two pieces of a trickled answer


class Loopback:
    """Accepts connections and hands each to ``serve(connection, stop)`` in its own thread."""

    def __init__(self, serve: Callable[[socket.socket, threading.Event], None]):
        self.serve = serve
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            connection.settimeout(5)
            _read_request_head(connection)
            self.serve(connection, self.stop)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.listener.close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.close()


def _read_request_head(connection: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return
        data += chunk


def _silent(connection: socket.socket, stop: threading.Event) -> None:
    stop.wait()


def _trickle_body(connection: socket.socket, stop: threading.Event) -> None:
    """A JSON answer whose body comes one space (JSON whitespace) at a time and never ends."""
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    while not stop.wait(TRICKLE_EVERY):
        connection.sendall(b" ")


def _trickle_stream(connection: socket.socket, stop: threading.Event) -> None:
    """An NDJSON stream (chunked, as Ollama sends it) that sends a status line now and then and never ends."""
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n")
    line = b'{"status":"pulling manifest"}\n'
    while not stop.wait(TRICKLE_EVERY):
        connection.sendall(b"%x\r\n%s\r\n" % (len(line), line))


def _serving(serve: Callable[[socket.socket, threading.Event], None]) -> Iterator[str]:
    server = Loopback(serve)
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """The URL of a server that accepts connections and reads requests but never answers."""
    yield from _serving(_silent)


@pytest.fixture
def trickling_server() -> Iterator[str]:
    """The URL of a server that answers 200 with a body that trickles in forever."""
    yield from _serving(_trickle_body)


@pytest.fixture
def trickling_stream_server() -> Iterator[str]:
    """The URL of a server that answers 200 with an NDJSON stream that never ends."""
    yield from _serving(_trickle_stream)
