"""Open WebUI: an "Export Chats" file with edits and regenerations, old export shapes, and a webui.db."""

import json

from source_helpers import build_webui_db, file_states

from orchestrator.cli import main


def msg(mid, parent, role, content, children=(), **extra):
    return {
        "id": mid,
        "parentId": parent,
        "childrenIds": list(children),
        "role": role,
        "content": content,
        "timestamp": 1_740_000_000,
        **extra,
    }


def tree_chat():
    """u1 -> (a1 | a1b regenerated) ; a1b -> (u2 | u2b edited) ; u2b -> a2b. Kept: u1, a1b, u2b, a2b."""
    messages = [
        msg("u1", None, "user", "Name a colour.", ["a1", "a1b"]),
        msg("a1", "u1", "assistant", "Red.", model="llama3:8b", done=True),
        msg("a1b", "u1", "assistant", "Blue.", ["u2", "u2b"], model="qwen3:4b", done=True),
        msg("u2", "a1b", "user", "Another?", ["a2"]),
        msg("a2", "u2", "assistant", "Green.", model="qwen3:4b"),
        msg("u2b", "a1b", "user", "Another one, please.", ["a2b"], files=[{"type": "image", "url": "data:..."}]),
        msg(
            "a2b",
            "u2b",
            "assistant",
            '<details type="reasoning" done="true" duration="2">\n<summary>Thought for 2 seconds</summary>\n'
            "> Pick one.\n</details>\nYellow.",
            model="qwen3:4b",
        ),
    ]
    return {
        "id": "t1",
        "title": "colours",
        "models": ["qwen3:4b"],
        "system": "Answer in one word.",
        "params": {},
        "history": {"currentId": "a2b", "messages": {m["id"]: m for m in messages}},
        "messages": messages,
        "tags": [],
        "timestamp": 1_740_000_000_000,
    }


def export_item(chat, chat_id, created_at=1_740_000_000):
    return {
        "id": chat_id,
        "user_id": "u",
        "title": chat.get("title", ""),
        "chat": chat,
        "created_at": created_at,
        "updated_at": created_at,
        "share_id": None,
        "archived": False,
        "pinned": False,
        "meta": {"tags": []},
        "folder_id": None,
    }


def test_export_file(tmp_path, export):
    dangling = {
        "history": {
            "currentId": "b",
            "messages": {"b": msg("b", "gone", "assistant", "Orphan answer."), "q": msg("q", None, "user", "Q")},
        }
    }
    cycle = {
        "history": {"currentId": "x", "messages": {"x": msg("x", "y", "user", "X"), "y": msg("y", "x", "user", "Y")}}
    }
    legacy = {"id": "old", "title": "old", "messages": [msg("1", None, "user", "Hi"), msg("2", "1", "assistant", "Yo")]}
    items = [
        export_item(tree_chat(), "t1"),
        export_item(dangling, "d1"),
        export_item(cycle, "c1"),
        export_item({"history": {"currentId": None, "messages": {}}, "messages": []}, "e1"),
        legacy,  # an old export item: the chat itself, no wrapper
    ]
    path = tmp_path / "chat-export-1740000000000.json"
    path.write_text(json.dumps(items))
    before = file_states(path)

    result = export("--source", f"open_webui:{path}")

    assert result.rc == 0, result.err
    assert result.records[0]["system"] == "Answer in one word."
    assert result.turns(0) == [
        ("human", "Name a colour."),
        ("gpt", "Blue."),
        ("human", "Another one, please."),
        ("gpt", "<think>\nPick one.\n</think>\n\nYellow."),
    ]
    assert result.turns(1) == [("human", "Hi"), ("gpt", "Yo")]
    assert len(result.records) == 2
    assert result.skipped("message tree has a cycle") == 1
    assert result.skipped("missing parent message (kept the branch below it)") == 1
    assert result.skipped("empty chat") == 1
    assert result.skipped("attachment (not text)") == 1
    assert result.skipped("no assistant reply") == 1  # the dangling chat kept an answer without its question
    assert file_states(path) == before

    kept = export("--source", f"open_webui:{path}", "--model", "qwen3:*")
    assert len(kept.records) == 1 and kept.skipped("filtered: answering model unknown") == 2  # legacy, dangling


def test_webui_db(tmp_path, export):
    # t2's JSON has no timestamp: only the row's created_at dates it (the filters need it)
    untimed = {"id": "t2", "messages": [msg("1", None, "user", "When?"), msg("2", "1", "assistant", "Now.")]}
    rows = [
        ("t1", json.dumps(tree_chat()), 1_740_000_000),
        ("bad", "{not json", 1_740_000_100),
        ("t2", json.dumps(untimed), 1_740_000_050),
    ]
    path = build_webui_db(tmp_path / "webui.db", rows)
    before = file_states(path)

    result = export("--source", f"open_webui:{path}", "--since", "2025-02-19", "--until", "2025-02-20")

    assert result.rc == 0, result.err
    assert result.turns(0)[-1] == ("gpt", "<think>\nPick one.\n</think>\n\nYellow.")
    assert result.turns(1) == [("human", "When?"), ("gpt", "Now.")] and len(result.records) == 2
    assert result.skipped("invalid JSON in the chat column") == 1
    assert file_states(path) == before


def test_wrong_files_are_one_line(tmp_path, capsys):
    encrypted = tmp_path / "webui.db"
    encrypted.write_bytes(bytes(range(256)) * 16)  # SQLCipher: no SQLite header, random-looking bytes
    chatgpt = tmp_path / "conversations.json"
    chatgpt.write_text(json.dumps([{"title": "x", "mapping": {}, "current_node": None}]))
    for path, expected in ((encrypted, "encrypted"), (chatgpt, "a ChatGPT export")):
        rc = main(["data", "export", "--name", "x", "--dataset-dir", str(tmp_path), "--source", f"open_webui:{path}"])
        err = capsys.readouterr().err
        assert rc == 2 and expected in err and str(path) in err and len(err.strip().splitlines()) == 1
