"""``orchestrator chat``: talk to a model served by Ollama; every turn is recorded in the memory store."""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, Any

from orchestrator.memory import DEFAULT_DB

DESCRIPTION = """\
Chat with a model served by Ollama. The answer streams to stdout as it arrives, and every turn (your
message, the model's thinking and answer, its tool calls) is recorded in the memory database, ready to
become training data. Lines come from stdin (prompt `>>> ` on a terminal); /bye or end of input (Ctrl-D)
ends the chat, /retry asks again after an error. --message sends one message and exits.

Thinking is shown when stdout is a terminal (dimmed) and hidden when it is piped, so
`orchestrator chat --message ... > answer.txt` captures only the answer; --show-thinking and
--no-show-thinking override that. Thinking is recorded either way."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="chat with an Ollama model and record the conversation",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", "-m", help="Ollama model, e.g. qwen3:4b (default: the resumed session's model)")
    parser.add_argument("--session", "-s", metavar="ID", help="session to resume or start (default: a new id)")
    parser.add_argument("--host", help="Ollama server URL (default: $OLLAMA_HOST, else 127.0.0.1:11434)")
    parser.add_argument("--db", metavar="PATH", default=str(DEFAULT_DB), help="memory database (default: %(default)s)")
    parser.add_argument("--system", metavar="TEXT", help="system prompt, recorded as the first turn of a new session")
    parser.add_argument(
        "--think",
        nargs="?",
        const=True,
        default=None,
        type=think_value,
        metavar="LEVEL",
        help="ask the model to think first: true (the same as --think alone), false, or a level: high, "
        "medium, low (default: the model decides)",
    )
    parser.add_argument(
        "--no-think", dest="think", action="store_const", const=False, help="answer directly (--think false)"
    )
    parser.add_argument(
        "--show-thinking",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print the model's thinking (default: only when stdout is a terminal)",
    )
    parser.add_argument("--message", metavar="TEXT", help="send this one message, print the answer and exit")
    parser.set_defaults(handler=run)


def think_value(text: str) -> bool | str:
    """``--think`` LEVEL as Ollama's ``think`` takes it: a bool for true/false, else the level's name."""
    from orchestrator.chat import THINK_LEVELS

    value = text.strip().lower()
    if value in ("true", "false"):
        return value == "true"
    if value in THINK_LEVELS:
        return value
    raise argparse.ArgumentTypeError(f"{text!r} is not a thinking level; use true, false, high, medium or low")


def run(args: argparse.Namespace) -> int:
    from orchestrator.chat import OllamaChat

    show = sys.stdout.isatty() if args.show_thinking is None else args.show_thinking
    printer = _Printer(sys.stdout, show_thinking=show, color=_use_color(sys.stdout))
    with OllamaChat(args.model, args.session, host=args.host, db=args.db, system=args.system, think=args.think) as chat:
        turns = len(chat.history)
        state = f"resumed, {turns} turn{'' if turns == 1 else 's'}" if chat.resumed else "new"
        print(f"session {chat.session_id} ({state}) · {chat.model} · {chat.client.base_url}", file=sys.stderr)
        if args.message is not None:
            _turn(chat, args.message, printer)
            return 0
        return _repl(chat, printer)


def _repl(chat: Any, printer: _Printer) -> int:
    from orchestrator.errors import OrchestratorError

    interactive = sys.stdin.isatty()
    if interactive:
        chat.client.version()  # fail now, not after the user has typed a message
        print("type /bye or Ctrl-D to leave, /retry to ask again after an error", file=sys.stderr)
    while (line := _read_line(interactive)) is not None:
        text: str | None = line.strip()
        if not text:
            continue
        if text == "/bye":
            break
        if text == "/retry":
            text = None
        elif text.startswith("/") and " " not in text:
            print(f"unknown command {text}: /bye leaves, /retry asks again", file=sys.stderr)
            continue
        try:
            _turn(chat, text, printer)
        except OrchestratorError as exc:
            if not interactive:
                raise
            printer.abort()
            print(f"error: {exc}", file=sys.stderr)
        except KeyboardInterrupt:
            if not interactive:
                raise
            printer.abort()
            print("\n(interrupted: the answer is discarded, your message is kept; /retry asks again)", file=sys.stderr)
    return 0


def _read_line(interactive: bool) -> str | None:
    if interactive:
        try:
            return input(">>> ")
        except EOFError:
            print()
            return None
    line = sys.stdin.readline()
    return line.rstrip("\n") if line else None


def _turn(chat: Any, text: str | None, printer: _Printer) -> None:
    printer.start()
    reply = chat.chat(text, on_content=printer.content, on_thinking=printer.thinking)
    printer.finish(reply)


def _use_color(stream: IO[str]) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


class _Printer:
    """Writes an answer as it streams: thinking dimmed (or between Ollama's markers), then the content."""

    DIM, RESET = "\x1b[2m", "\x1b[0m"

    def __init__(self, out: IO[str], *, show_thinking: bool, color: bool):
        self.out, self.show_thinking, self.color = out, show_thinking, color
        self._thinking = False
        self._last = "\n"

    def _write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
            self._last = text[-1]

    def start(self) -> None:
        self._thinking = False
        self._last = "\n"

    def thinking(self, delta: str) -> None:
        if not self.show_thinking:
            return
        if not self._thinking:
            self._thinking = True
            self._write(self.DIM if self.color else "Thinking...\n")
        self._write(delta)

    def _end_thinking(self) -> None:
        if self._thinking:
            self._thinking = False
            self._write(self.RESET + "\n\n" if self.color else "\n...done thinking.\n\n")

    def content(self, delta: str) -> None:
        self._end_thinking()
        self._write(delta)

    def finish(self, reply: Any) -> None:
        self._end_thinking()
        for call in reply.tool_calls:
            self._write(("" if self._last == "\n" else "\n") + f"→ {format_call(call.name, call.arguments)}\n")
        if self._last != "\n":
            self._write("\n")

    def abort(self) -> None:
        """End a half-written answer cleanly (reset the dim style, end the line)."""
        if self._thinking and self.color:
            self._write(self.RESET)
        self._thinking = False
        if self._last != "\n":
            self._write("\n")


def format_call(name: str, arguments: dict[str, Any]) -> str:
    """A tool call as ``name(key=value, ...)``, values in JSON."""
    import json

    args = ", ".join(f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in arguments.items())
    return f"{name}({args})"
