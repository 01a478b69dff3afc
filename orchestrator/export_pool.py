"""Worker processes for a large export: each reads parts of the JSONL sources and prepares them
(``prepare.prepare_chunk``: parse, filter, repair, redact, serialize, near-duplicate signatures); the
parent takes the prepared chunks in input order and deduplicates, splits and writes them, so the
output is the same file a single process writes.

A worker is ``python -c _WORKER PARENT_PID`` (``_serve`` of this module): a fresh interpreter that imports only the
orchestrator (so the caller's script is never run again, as multiprocessing's spawn would, and no
``if __name__ == "__main__"`` guard is needed), taking pickled tasks on stdin and answering on stdout,
one length-prefixed frame each. Parts go to the workers in turn and their answers are read back in the
same order, a few in flight per worker, so memory stays bounded however large the file. Workers ignore
Ctrl-C (the parent stops them), die with the parent, ``kill -9`` included (``PR_SET_PDEATHSIG`` on
Linux; elsewhere their stdin closes), and write nothing to disk.
"""

from __future__ import annotations

import gc
import itertools
import os
import pickle
import signal
import site
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from orchestrator.errors import OrchestratorError

MAX_WORKERS = 8
PART_BYTES = 4 << 20  # a part of a JSONL file: a few thousand conversations
PARALLEL_BYTES = 64 << 20  # JSONL sources smaller than this are read in the parent: starting workers costs more
IN_FLIGHT = 2  # parts queued per worker
_LENGTH = struct.Struct("<Q")
_WORKER = (
    "import sys\nif sys.path[:1] == ['']: del sys.path[0]\n"
    "from orchestrator.export_pool import _serve\nsys.exit(_serve(int(sys.argv[1])))"
)


def worker_count() -> int:
    """How many workers an export starts: one per CPU this process may use, at most MAX_WORKERS."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return min(cpus, MAX_WORKERS)


class PreparePool:
    """A pool of export workers; use it with ``with`` so they are stopped however the export ends."""

    def __init__(self, workers: int) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])  # the workers import this same orchestrator
        if root not in {str(Path(p).resolve()) for p in site.getsitepackages() + [site.getusersitepackages()]}:
            # a source checkout: put it first (an installed package is found anyway, and putting
            # site-packages before the standard library could shadow a module of it)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        # not ``-m``, which puts the working folder first on sys.path: an ``orchestrator`` folder there
        # (another checkout) would be imported instead of this one (Python 3.11's -P, by hand)
        command = [sys.executable, "-c", _WORKER, str(os.getpid())]
        self._workers: list[subprocess.Popen] = []
        try:
            for _ in range(workers):
                self._workers.append(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env))
        except OSError as exc:
            self.close(kill=True)
            raise OrchestratorError(f"cannot start an export worker ({exc.strerror or exc})") from None

    def __enter__(self) -> PreparePool:
        return self

    def __exit__(self, exc_type: Any, *_: object) -> None:
        self.close(kill=exc_type is not None)

    def close(self, *, kill: bool) -> None:
        """Stop the workers: at the end of their input, or at once (``kill``: they hold nothing to save)."""
        for worker in self._workers:
            if kill:
                worker.kill()
            for stream in (worker.stdin, worker.stdout):
                try:
                    stream.close()  # type: ignore[union-attr]
                except OSError:
                    pass  # a worker that died: its pipe is broken
        for worker in self._workers:
            worker.wait()

    def prepare(
        self, parts: Iterable[Any], options: Any, bound: Callable[[], int | None], queued_first: Callable[[], None]
    ) -> Iterator[Any]:
        """The prepared chunks of ``parts`` (``sources.SourcePart``), in order. ``bound`` gives the token
        sample's bound when a part is queued (it only falls, so a part queued early is merely generous);
        ``queued_first`` is called once the first parts are queued, for work to do while they are read."""
        from orchestrator.prepare import prepare_part

        queued = iter(enumerate(parts))
        in_flight: deque[subprocess.Popen] = deque()

        def queue_one() -> None:
            entry = next(queued, None)
            if entry is not None:
                worker = self._workers[entry[0] % len(self._workers)]
                self._send(worker, (prepare_part, (entry[1], options, bound())))
                in_flight.append(worker)

        for _ in range(IN_FLIGHT * len(self._workers)):
            queue_one()
        queued_first()
        while in_flight:
            status, value = self._receive(in_flight.popleft())
            if status == "error":
                raise value
            queue_one()
            yield from value

    def _send(self, worker: subprocess.Popen, task: Any) -> None:
        try:
            _write_frame(worker.stdin, task)  # type: ignore[arg-type]
        except (BrokenPipeError, OSError):
            raise _died(worker) from None

    def _receive(self, worker: subprocess.Popen) -> tuple[str, Any]:
        answer = _read_frame(worker.stdout)  # type: ignore[arg-type]
        if answer is None:
            raise _died(worker)
        return answer


def _died(worker: subprocess.Popen) -> OrchestratorError:
    code = worker.wait()
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    return OrchestratorError(
        f"an export worker process {how} (out of memory?); free memory and run again, or export a smaller source"
    )


def _write_frame(stream: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> Any:
    """The next frame's value, or None at the end of the stream (or a frame cut short: its writer died)."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    data = stream.read(size)
    return pickle.loads(data) if len(data) == size else None


def _serve(parent: int) -> int:
    """A worker's life: run each task from stdin and answer it on stdout, until stdin ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    if sys.platform.startswith("linux"):
        from orchestrator._guard import die_with_parent

        die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above took effect
        return 1
    tasks, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the frames
    # A task makes many objects and no reference cycles: the cyclic collector would only walk them over
    # and over (it doubles the time to read a part), so it is off. Only a failed task leaves cycles (its
    # traceback's frames): it runs after one.
    gc.disable()
    while (task := _read_frame(tasks)) is not None:
        function, args = task
        try:
            answer: tuple[str, Any] = ("ok", function(*args))
        except Exception as exc:  # handed to the parent, which raises it
            answer = ("error", exc)
            gc.collect()
        try:
            _write_frame(answers, answer)
        except (pickle.PicklingError, TypeError, AttributeError):
            _write_frame(answers, ("error", OrchestratorError(f"an export worker failed: {answer[1]!r}")))
        except BrokenPipeError:
            return 1
    return 0


def batched(items: Any, size: int) -> Iterator[list[Any]]:
    items = iter(items)
    while chunk := list(itertools.islice(items, size)):
        yield chunk
