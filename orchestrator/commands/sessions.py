"""``orchestrator sessions``: list the recorded chat sessions; ``sessions show ID`` prints one and
``sessions delete ID`` deletes one. Listing and showing read the store read-only."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.commands.chat import format_call
from orchestrator.memory import DEFAULT_DB


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sessions",
        help="list recorded chat sessions (`sessions show ID` prints one, `sessions delete ID` deletes one)",
        description="List the chat sessions recorded in the memory database, the most recent first.",
    )
    db_help = f"memory database (default: {DEFAULT_DB})"
    parser.add_argument("--db", metavar="PATH", default=str(DEFAULT_DB), help=db_help)
    actions = parser.add_subparsers(dest="sessions_action", metavar="ACTION")
    show = actions.add_parser(
        "show", help="print every turn of one session", description="Print every turn of a session."
    )
    show.add_argument("session_id", metavar="ID", help="the session (see `orchestrator sessions`)")
    show.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help=db_help)
    delete = actions.add_parser(
        "delete",
        help="delete one session and its turns",
        description="Delete a session and every turn of it, without asking (a failed chat, a test).",
    )
    delete.add_argument("session_id", metavar="ID", help="the session (see `orchestrator sessions`)")
    delete.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help=db_help)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from orchestrator.memory import MemoryStore

    console = Console(highlight=False)
    db = Path(args.db)
    if not db.exists() and args.sessions_action is None:  # nothing recorded yet: not an error for a listing
        console.print(f"no sessions yet: {db} does not exist (start one with `orchestrator chat --model qwen3:4b`)")
        return 0
    if args.sessions_action == "delete":
        return _delete(console, db, args.session_id)
    with MemoryStore(db, readonly=True) as store:
        if args.sessions_action == "show":
            _show(console, store, args.session_id)
        else:
            _list(console, store)
    return 0


def _list(console: Any, store: Any) -> None:
    from rich.table import Table

    sessions = store.sessions()
    if not sessions:
        console.print(f"no sessions yet in {store.path}")
        return
    headers = ("ID", "MODEL", "TURNS", "UPDATED", "STATUS")
    rows = [
        (i.id, i.model or "-", str(i.turns), _local_time(i.updated_at), "failed" if i.failed else "", i.title or "")
        for i in sessions
    ]
    widths = [max(len(header), *(len(row[n]) for row in rows)) for n, header in enumerate(headers)]
    # never squeeze an id or a model name: the title gets what is left, at least 20 columns
    fixed = sum(widths) + 2 * len(widths)
    console.width = max(console.width, fixed + 20)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for header, width in zip(headers, widths, strict=True):
        table.add_column(header, no_wrap=True, min_width=width, justify="right" if header == "TURNS" else "left")
    table.add_column("TITLE", no_wrap=True, overflow="ellipsis", max_width=console.width - fixed)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _show(console: Any, store: Any, session_id: str) -> None:
    from rich.text import Text

    conversation = store.conversation(session_id)  # UsageError naming the id when unknown
    console.print(Text(f"session {conversation.id} · {conversation.model or '-'}", style="bold"))
    for message in conversation.messages:
        header = message.role if not message.tool_name else f"{message.role} ({message.tool_name})"
        console.print()
        console.print(Text(f"── {header}", style="bold cyan"))
        if message.thinking:
            console.print(Text(message.thinking, style="dim"), soft_wrap=True)
        if message.content:
            console.print(Text(message.content), soft_wrap=True)
        for call in message.tool_calls:
            console.print(Text(f"→ {format_call(call.name, call.arguments)}", style="yellow"), soft_wrap=True)
    failed = store.session(session_id).failed
    if failed:
        console.print()
        console.print(Text(f"(no reply: {failed})", style="red"), soft_wrap=True)


def _delete(console: Any, db: Path, session_id: str) -> int:
    from orchestrator.memory import MemoryStore

    MemoryStore(db, readonly=True).close()  # a missing file or one that is no store: an error, nothing created
    with MemoryStore(db) as store:
        turns = store.delete_session(session_id)  # a UsageError naming the id when unknown
    console.print(f"deleted session {session_id} ({turns} turn{'' if turns == 1 else 's'}) from {db}")
    return 0


def _local_time(stamp: str) -> str:
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return stamp
