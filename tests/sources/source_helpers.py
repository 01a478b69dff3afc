"""What the source tests share besides fixtures."""

import json
import os
import sqlite3
from pathlib import Path

# open_webui/migrations: the chat table as the current version has it
WEBUI_CHAT_TABLE = (
    "CREATE TABLE chat (id VARCHAR(255) NOT NULL PRIMARY KEY, user_id VARCHAR(255) NOT NULL, title TEXT NOT NULL,"
    " share_id VARCHAR(255) UNIQUE, archived BOOLEAN NOT NULL, created_at BIGINT NOT NULL,"
    " updated_at BIGINT NOT NULL, chat JSON, pinned BOOLEAN, meta JSON DEFAULT '{}' NOT NULL, folder_id TEXT)"
)
# open_webui/models/feedbacks.py (migration af906e964978): a thumbs up or down is a row of type "rating",
# data {"rating": 1 | -1, "model_id", ...}, meta {"chat_id", "message_id", ...}
WEBUI_FEEDBACK_TABLE = (
    "CREATE TABLE feedback (id TEXT NOT NULL PRIMARY KEY, user_id TEXT, version BIGINT, type TEXT, data JSON,"
    " meta JSON, snapshot JSON, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)"
)


def file_states(*paths: Path) -> dict[str, tuple[bool, int, bytes]]:
    """Existence, mtime and bytes of each path (and of its -wal/-shm), to prove a read changed nothing."""
    states = {}
    for path in paths:
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            states[str(p)] = (True, os.stat(p).st_mtime_ns, p.read_bytes()) if p.exists() else (False, 0, b"")
    return states


def build_webui_db(path: Path, chats: list[tuple[str, str, int]], feedback: list[dict] | None = None) -> Path:
    """An Open WebUI webui.db holding ``chats`` as (id, chat JSON text, created_at) rows and, when given,
    a feedback table of ``feedback`` rows (each a dict of data, meta and optionally type/id/updated_at)."""
    db = sqlite3.connect(path)
    db.execute(WEBUI_CHAT_TABLE)
    for chat_id, chat, created in chats:
        db.execute(
            "INSERT INTO chat (id, user_id, title, archived, created_at, updated_at, chat)"
            " VALUES (?, 'u', 't', 0, ?, ?, ?)",
            (chat_id, created, created, chat),
        )
    if feedback is not None:
        db.execute(WEBUI_FEEDBACK_TABLE)
        for n, row in enumerate(feedback):
            data, meta = (v if isinstance(v, str) else json.dumps(v) for v in (row["data"], row["meta"]))
            db.execute(
                "INSERT INTO feedback (id, user_id, version, type, data, meta, snapshot, created_at, updated_at)"
                " VALUES (?, 'u', 0, ?, ?, ?, NULL, ?, ?)",
                (
                    row.get("id", f"fb-{n}"),
                    row.get("type", "rating"),
                    data,
                    meta,
                    1_740_000_000 + n,
                    row.get("updated_at", 1_740_000_000 + n),
                ),
            )
    db.commit()
    db.close()
    return path
