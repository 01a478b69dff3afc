"""The one progress renderer: live bars on a terminal, plain short lines in a log."""

from __future__ import annotations

import io

from rich.console import Console

from orchestrator.context import Progress
from orchestrator.progress import ConsoleReporter


def reporter(terminal: bool) -> tuple[ConsoleReporter, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=100, color_system=None, highlight=False)
    return ConsoleReporter(console), out


def steps(rep: ConsoleReporter, total: int = 4) -> None:
    for step in range(1, total + 1):
        rep.progress(Progress(step, total, 2.0 - step / 10, f"0:00:0{step}", f"0:00:0{total - step}"))
        rep.progress(Progress(step, total, 2.0 - step / 10, f"0:00:0{step}", "0:00:00"))  # a repeat: nothing new


def test_in_a_log_each_step_and_each_quarter_of_a_transfer_is_one_line():
    rep, out = reporter(terminal=False)
    steps(rep)
    for done in range(0, 101, 5):
        rep.transfer("converting", done, 100)
    rep.info("done")
    lines = out.getvalue().splitlines()
    assert lines[:4] == [
        f"  step {i}/4  loss {2.0 - i / 10:.4f}  elapsed 0:00:0{i}  eta 0:00:0{4 - i}" for i in (1, 2, 3, 4)
    ]
    assert [line for line in lines if "converting" in line] == [
        f"  converting {n} B / 100 B ({n}%)" for n in (0, 25, 50, 75, 100)
    ]
    assert lines[-1] == "  done" and "\x1b" not in out.getvalue()


def test_on_a_terminal_steps_are_a_live_bar_with_loss_and_eta():
    rep, out = reporter(terminal=True)
    steps(rep)
    rep.info("merging")
    text = out.getvalue()
    assert "\x1b[" in text  # redrawn in place, not one line per step
    assert "4/4" in text and "loss 1.6000" in text and "eta 0:00:00" in text
    assert "  step 1/4  loss" not in text  # not the log's lines
    assert text.rstrip().endswith("merging")  # the bar was closed before the next line
