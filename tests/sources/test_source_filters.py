"""The filters every source takes, on the project's own memory store and plain files, and `data sources`
for export files given explicitly."""

import json

from orchestrator.cli import main
from orchestrator.conversations import Message
from orchestrator.memory import MemoryStore


def test_memory_store_filters(tmp_path, export):
    db = tmp_path / "memory.db"
    with MemoryStore(db) as store:
        store.add_messages("s1", [Message("user", "q"), Message("assistant", "a")], model="qwen3:4b")
        store.add_messages("s2", [Message("user", "q2"), Message("assistant", "a2")], model="llama3:8b")

    kept = export("--db", str(db), "--model", "qwen3:*", "--since", "2000-01-01")
    assert kept.rc == 0 and kept.turns(0) == [("human", "q"), ("gpt", "a")]
    assert kept.skipped("filtered: model not in models") == 1

    none = export("--db", str(db), "--until", "2000-01-01")
    assert none.rc == 2 and "2 filtered: started after until" in none.err and len(none.err.strip().splitlines()) == 1


def test_file_source_min_turns_and_bad_options(tmp_path, export):
    path = tmp_path / "chats.jsonl"
    one = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    two = {"messages": one["messages"] * 2}
    path.write_text("\n".join(json.dumps(r) for r in (one, two)) + "\n")

    result = export("--source", f"file:{path}", "--min-turns", "2")
    assert result.rc == 0 and len(result.records) == 1 and len(result.records[0]["conversations"]) == 4
    assert result.skipped("filtered: fewer than 2 assistant replies") == 1

    for args, expected in (
        (["--source", "nothing:x"], "--source nothing:x: give TYPE:PATH"),
        (["--source", "chatgpt:"], "chatgpt needs a path"),
        (["--source", f"file:{path}", "--since", "yesterday"], "--since:"),
    ):
        bad = export(*args)
        assert bad.rc == 2 and expected in bad.err and len(bad.err.strip().splitlines()) == 1


def test_data_sources_counts_export_files(tmp_path, monkeypatch, capsys):
    from orchestrator.sources import discover

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(discover, "OPEN_WEBUI_DIRS", ())
    webui = tmp_path / "chat-export.json"
    webui.write_text(json.dumps([{"id": str(i), "chat": {"messages": []}} for i in range(3)]))
    chatgpt = tmp_path / "conversations.json"
    chatgpt.write_text(json.dumps([{"mapping": {}, "current_node": None}]))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "webui.db").write_bytes(b"\x01" * 1024)

    rc = main(["data", "sources", "--open-webui", str(webui), "--chatgpt", str(chatgpt), "--open-webui", str(broken)])

    out = capsys.readouterr().out
    assert rc == 0
    assert f"open_webui  {webui}  3 chats" in out and f"chatgpt     {chatgpt}  1 chat " in out
    assert f"open_webui  {broken / 'webui.db'}  neither a SQLite database nor a JSON export" in out
    assert "ollama_app" not in out  # no app database under this HOME


def test_recipe_sources_name_their_key(tmp_path):
    import pytest

    from orchestrator.errors import UsageError
    from orchestrator.recipe import ChatGPTSource, OpenWebUISource
    from orchestrator.sources import read_sources

    specs = [
        OpenWebUISource(type="open_webui", path=str(tmp_path / "chat-export.json")),
        ChatGPTSource(type="chatgpt", path=str(tmp_path / "missing.json")),
    ]
    (tmp_path / "chat-export.json").write_text(json.dumps([{"id": "1", "chat": {"messages": []}}]))
    with pytest.raises(UsageError, match=r"^data\.sources\[1\]\.path: .*missing\.json: no such file"):
        list(read_sources(specs))
