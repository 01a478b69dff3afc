"""The one progress renderer of the command line, on stderr: stage lines, training steps, and bytes
converted, hashed or uploaded. On a terminal steps and bytes are live bars (rich), with the loss and
LLaMA-Factory's ETA beside the steps; in a log (CI, nohup, Colab) every step and every quarter of a
transfer is one plain line, so logs stay short and readable.

It implements the ``orchestrator.context.Reporter`` protocol; the library never prints by itself.
"""

from __future__ import annotations

from typing import Any

from orchestrator.text import human_size


class ConsoleReporter:
    def __init__(self, console: Any = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self._last_step = -1
        self._transfer: tuple[str, int] | None = None
        self._quarter = -1
        self._bar: Any = None
        self._task: Any = None
        self._batch_seen: dict[str, tuple] = {}

    # -- the Reporter protocol -------------------------------------------------------------------------

    def stage(self, name: str, status: str, message: str = "") -> None:
        self.close()
        self._last_step = -1  # each stage, and each launch within one, counts its steps anew
        style = {"done": "green", "failed": "red", "skipped": "dim"}.get(status, "bold")
        self.console.print(f"[{style}]{name:<6} {status}[/{style}] {message}".rstrip())

    def progress(self, p: Any) -> None:
        if p.step == self._last_step:
            return
        self._last_step = p.step
        loss = f"{p.loss:.4f}" if p.loss is not None else "-"
        if self.console.is_terminal and p.total:
            self._live_steps(p.step, p.total, f"loss {loss}  elapsed {p.elapsed}  eta {p.remaining}")
            return
        self.console.print(f"  step {p.step}/{p.total}  loss {loss}  elapsed {p.elapsed}  eta {p.remaining}")

    def transfer(self, label: str, done: int, total: int) -> None:
        if total <= 0:
            return
        if self.console.is_terminal:
            self._live(label, done, total)
            return
        if (label, total) != self._transfer:
            self._transfer, self._quarter = (label, total), -1
        quarter = 4 * done // total
        if quarter > self._quarter:
            self._quarter = quarter
            self.console.print(f"  {label} {human_size(done)} / {human_size(total)} ({100 * done / total:.0f}%)")

    def info(self, message: str) -> None:
        self.close()
        self._last_step = -1
        self.console.print(f"  {message}", markup=False)

    # -- Ollama registration events (orchestrator.ollama.register.RegisterProgress) ---------------------

    def register_event(self, event: Any) -> None:
        if event.total and event.completed is not None:
            self.transfer(event.message or event.phase, event.completed, event.total)
        elif event.message:
            self.info(f"[{event.phase}] {event.message}")

    # -- a batch of runs (orchestrator.batch.live_row) -------------------------------------------------

    def batch(self, rows: list[dict[str, Any]]) -> None:
        """Which run is where (GPU, CPU or Ray node), its status, and while it trains its step and loss: one
        live table on a terminal; in a log, one line each time a run's status, stage or step changes."""
        if self.console.is_terminal:
            self._live_table(rows)
            return
        for row in rows:
            key = (row["status"], row["where"], row["stage"], row["step"])
            if self._batch_seen.get(row["run"]) != key:
                self._batch_seen[row["run"]] = key
                cells = [row["run"], row["where"] or "-", row["status"], row["stage"], _step(row)]
                self.console.print("  " + "  ".join(c for c in cells if c), markup=False)

    def _live_table(self, rows: list[dict[str, Any]]) -> None:
        from rich.live import Live
        from rich.table import Table

        table = Table("run", "on", "status", "stage", "step", "loss", box=None, pad_edge=False)
        for row in rows:
            loss = f"{row['loss']:.4f}" if isinstance(row["loss"], (int, float)) else ""
            step = f"{row['step']}/{row['total'] or '?'}" if row["step"] is not None else ""
            table.add_row(row["run"], row["where"] or "-", row["status"], row["stage"], step, loss)
        if self._transfer != ("batch", 0):
            self.close()
            self._transfer = ("batch", 0)
            self._bar = Live(table, console=self.console, refresh_per_second=4, transient=False)
            self._bar.start()
        self._bar.update(table)

    def close(self) -> None:
        """End a live bar (the next line starts clean)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = self._task = None
            self._transfer = None

    def _live_steps(self, step: int, total: int, status: str) -> None:
        """Training steps as one live bar, its status the latest loss and LLaMA-Factory's own ETA."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        if self._transfer != ("steps", total):
            self.close()
            self._transfer = ("steps", total)
            self._bar = Progress(
                TextColumn("  step"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("{task.fields[status]}"),
                console=self.console,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("steps", total=total, status=status)
        self._bar.update(self._task, completed=step, status=status)
        if step >= total:
            self.close()

    def _live(self, label: str, done: int, total: int) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        if (label, total) != self._transfer:
            self.close()
            self._transfer = (label, total)
            self._bar = Progress(
                TextColumn(f"  {label}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                console=self.console,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(label, total=total)
        self._bar.update(self._task, completed=done)
        if done >= total:
            self.close()


def _step(row: dict[str, Any]) -> str:
    if row["step"] is None:
        return ""
    loss = f"  loss {row['loss']:.4f}" if isinstance(row["loss"], (int, float)) else ""
    return f"step {row['step']}/{row['total'] or '?'}{loss}"
