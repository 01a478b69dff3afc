"""A wall-clock limit on one HTTP answer.

requests' read timeout applies to each read from the socket, so a server that sends one byte every few
seconds never trips it and holds the caller as long as it likes. ``Deadline`` keeps the per-read
timeout within the time left, and ``Deadline.watch`` shuts the answer's connection when the time is up
while its body is read; the read then fails and ``expired`` tells why.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

_SHORTEST_READ = 0.001  # a timeout of 0 would make the socket non-blocking, not impatient


class Deadline:
    """``seconds`` from now (None: no limit)."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self._end = None if seconds is None else time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()

    def remaining(self) -> float | None:
        return None if self._end is None else self._end - time.monotonic()

    def read_timeout(self, per_read: float | None) -> float | None:
        """``per_read``, shortened to the time that is left."""
        left = self.remaining()
        if left is None:
            return per_read
        bounded = left if per_read is None else min(per_read, left)
        return max(bounded, _SHORTEST_READ)

    @contextlib.contextmanager
    def watch(self, response: Any) -> Iterator[None]:
        """While the block reads ``response`` (a ``requests.Response``), cut its connection at the deadline."""
        left = self.remaining()
        if left is None:
            yield
            return
        finished = threading.Event()
        timer = threading.Timer(max(left, 0.0), self._cut, args=(response, finished))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            with self._lock:
                finished.set()
            timer.cancel()

    def _cut(self, response: Any, finished: threading.Event) -> None:
        with self._lock:
            if finished.is_set():
                return
            self.expired = True
            connection = getattr(response.raw, "connection", None)  # urllib3's HTTPConnection, while streaming
            sock = getattr(connection, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked read, unlike close()
