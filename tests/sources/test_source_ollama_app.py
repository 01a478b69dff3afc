"""The Ollama desktop app's db.sqlite, at schema 18 and at an older schema, read through `data export`."""

import json
import sqlite3

from source_helpers import file_states

from orchestrator.cli import main

# app/store/database.go, schema version 18
SCHEMA_18 = """
CREATE TABLE settings (id INTEGER PRIMARY KEY CHECK (id = 1), device_id TEXT NOT NULL DEFAULT '',
    has_completed_first_run BOOLEAN NOT NULL DEFAULT 0, expose BOOLEAN NOT NULL DEFAULT 0,
    browser BOOLEAN NOT NULL DEFAULT 0, models TEXT NOT NULL DEFAULT '', agent BOOLEAN NOT NULL DEFAULT 0,
    tools BOOLEAN NOT NULL DEFAULT 0, working_dir TEXT NOT NULL DEFAULT '',
    context_length INTEGER NOT NULL DEFAULT 4096,
    window_width INTEGER NOT NULL DEFAULT 0, window_height INTEGER NOT NULL DEFAULT 0,
    config_migrated BOOLEAN NOT NULL DEFAULT 0, airplane_mode BOOLEAN NOT NULL DEFAULT 0,
    turbo_enabled BOOLEAN NOT NULL DEFAULT 0, websearch_enabled BOOLEAN NOT NULL DEFAULT 0,
    selected_model TEXT NOT NULL DEFAULT '', sidebar_open BOOLEAN NOT NULL DEFAULT 0,
    think_enabled BOOLEAN NOT NULL DEFAULT 0, think_level TEXT NOT NULL DEFAULT '',
    schema_version INTEGER NOT NULL DEFAULT 18);
CREATE TABLE chats (id TEXT PRIMARY KEY, title TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, browser_state TEXT);
CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, chat_id TEXT NOT NULL, role TEXT NOT NULL,
    content TEXT NOT NULL DEFAULT '', thinking TEXT NOT NULL DEFAULT '', stream BOOLEAN NOT NULL DEFAULT 0,
    model_name TEXT, model_cloud BOOLEAN, model_ollama_host BOOLEAN,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    thinking_time_start TIMESTAMP, thinking_time_end TIMESTAMP, tool_result TEXT,
    FOREIGN KEY (chat_id) REFERENCES chats(id) ON DELETE CASCADE);
CREATE TABLE tool_calls (id INTEGER PRIMARY KEY AUTOINCREMENT, message_id INTEGER NOT NULL, type TEXT NOT NULL,
    function_name TEXT NOT NULL, function_arguments TEXT NOT NULL, function_result TEXT,
    FOREIGN KEY (message_id) REFERENCES messages(id) ON DELETE CASCADE);
CREATE TABLE attachments (id INTEGER PRIMARY KEY AUTOINCREMENT, message_id INTEGER NOT NULL,
    filename TEXT NOT NULL, data BLOB NOT NULL, FOREIGN KEY (message_id) REFERENCES messages(id) ON DELETE CASCADE);
"""

# app/store/schema.sql, the first released schema: no thinking, tool_result, model_cloud, tool_calls
SCHEMA_OLD = """
CREATE TABLE settings (id INTEGER PRIMARY KEY CHECK (id = 1), device_id TEXT NOT NULL DEFAULT '',
    schema_version INTEGER NOT NULL DEFAULT 1);
CREATE TABLE chats (id TEXT PRIMARY KEY, title TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, chat_id TEXT NOT NULL, role TEXT NOT NULL,
    content TEXT NOT NULL DEFAULT '', model_name TEXT, created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE attachments (id INTEGER PRIMARY KEY AUTOINCREMENT, message_id INTEGER NOT NULL,
    filename TEXT NOT NULL, data BLOB NOT NULL);
"""


def build_v18(path):
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_18)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("INSERT INTO settings (id) VALUES (1)")
    db.execute("INSERT INTO chats (id, title, created_at) VALUES ('c1', 'weather', '2025-03-01 10:00:00')")
    rows = [
        ("c1", "user", "What is the weather in Paris?", "", None, None),
        ("c1", "assistant", "", "Use the tool.", "qwen3:8b", None),
        ("c1", "tool", "", "", None, '{"temp": 21}'),
        ("c1", "assistant", "It is 21 degrees.", "", "qwen3:8b", None),
    ]
    for chat, role, content, thinking, model, result in rows:
        db.execute(
            "INSERT INTO messages (chat_id, role, content, thinking, model_name, tool_result)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (chat, role, content, thinking, model, result),
        )
    db.execute(
        "INSERT INTO tool_calls (message_id, type, function_name, function_arguments, function_result)"
        " VALUES (2, 'function', 'get_weather', '{\"city\": \"Paris\"}', '{\"temp\": 21}')"
    )
    db.execute("INSERT INTO chats (id, title, created_at) VALUES ('c2', 'picture', '2025-04-02 09:00:00')")
    db.execute("INSERT INTO messages (chat_id, role, content) VALUES ('c2', 'user', 'Describe this picture.')")
    db.execute("INSERT INTO attachments (message_id, filename, data) VALUES (5, 'cat.png', x'89504e47')")
    db.execute(
        "INSERT INTO messages (chat_id, role, content, model_name) VALUES ('c2', 'assistant', 'A cat.', 'gemma3:4b')"
    )
    db.commit()
    return db


def test_schema_18_with_a_live_wal(tmp_path, export):
    path = tmp_path / "db.sqlite"
    writer = build_v18(path)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    # the app is running: its latest chat sits in db.sqlite-wal only
    writer.execute("INSERT INTO chats (id, title, created_at) VALUES ('c3', 'late', '2025-05-03 08:00:00')")
    writer.execute("INSERT INTO messages (chat_id, role, content) VALUES ('c3', 'user', 'Hello')")
    writer.execute("INSERT INTO messages (chat_id, role, content, model_name) VALUES ('c3', 'assistant', 'Hi', 'x:1')")
    writer.commit()
    assert path.with_name("db.sqlite-wal").stat().st_size > 0
    before = file_states(path)

    result = export("--source", f"ollama_app:{path}")

    assert result.rc == 0, result.err
    assert file_states(path) == before
    assert result.turns(0) == [
        ("human", "What is the weather in Paris?"),
        (
            "function_call",
            '<think>\nUse the tool.\n</think>\n\n<tool_call>[{"name": "get_weather", "arguments": '
            '{"city": "Paris"}}]</tool_call>',
        ),
        ("observation", '{"temp": 21}'),
        ("gpt", "It is 21 degrees."),
    ]
    assert result.turns(1) == [("human", "Describe this picture."), ("gpt", "A cat.")]
    assert result.turns(2) == [("human", "Hello"), ("gpt", "Hi")]
    assert "3 written" in result.out and result.skipped("attachment (not text)") == 1
    writer.close()


def test_older_schema_without_thinking_and_tool_result(tmp_path, export):
    path = tmp_path / "db.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_OLD)
    db.execute("INSERT INTO chats (id, title) VALUES ('a', 'old')")
    db.execute("INSERT INTO messages (chat_id, role, content) VALUES ('a', 'user', 'Hi there')")
    db.execute("INSERT INTO messages (chat_id, role, content, model_name) VALUES ('a', 'assistant', 'Hello', 'llama3')")
    db.execute("INSERT INTO chats (id, title) VALUES ('empty', 'nothing')")
    db.commit()
    db.close()
    before = file_states(path)

    result = export("--source", f"ollama_app:{path}", "--model", "llama*")

    assert result.rc == 0, result.err
    assert result.turns(0) == [("human", "Hi there"), ("gpt", "Hello")]
    assert result.skipped("empty chat") == 1
    assert file_states(path) == before


def test_default_path_and_filters(tmp_path, monkeypatch, export):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ollama").mkdir()
    build_v18(tmp_path / ".ollama" / "db.sqlite").close()

    result = export("--source", "ollama_app:", "--since", "2025-04-01", "--model", "gemma3:*")

    assert result.rc == 0, result.err
    assert [r["conversations"][1]["value"] for r in result.records] == ["A cat."]
    assert result.skipped("filtered: model not in models") == 1
    again = export("--source", "ollama_app:", "--until", "2025-03-31", "--min-turns", "2")
    assert again.rc == 0 and len(again.records) == 1 and again.turns(0)[-1] == ("gpt", "It is 21 degrees.")
    assert again.skipped("filtered: started after until") == 1


def test_bad_databases_are_one_line(tmp_path, capsys):
    garbage = tmp_path / "db.sqlite"
    garbage.write_bytes(b"\x00" * 4096)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).executescript("CREATE TABLE t(x);").close()
    for path, expected in ((garbage, "not a SQLite database"), (other, "no chats and messages tables")):
        rc = main(["data", "export", "--name", "x", "--dataset-dir", str(tmp_path), "--source", f"ollama_app:{path}"])
        err = capsys.readouterr().err
        assert rc == 2 and expected in err and str(path) in err and len(err.strip().splitlines()) == 1
    rc = main(["data", "export", "--name", "x", "--source", f"ollama_app:{tmp_path / 'none.sqlite'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "no such file" in err and "Traceback" not in err


def test_a_huge_message_is_a_counted_skip(tmp_path, export):
    path = tmp_path / "db.sqlite"
    build_v18(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE messages SET content = ? WHERE id = 6", ("x" * 10_000_000,))
    db.commit()
    db.close()
    result = export("--source", f"ollama_app:{path}")
    assert result.rc == 0 and len(result.records) == 1
    assert result.skipped("a message over 1,000,000 characters") == 1
    assert "xxxxxxxxxx" not in result.out + result.err


def test_data_sources_lists_counts(tmp_path, monkeypatch, capsys):
    from orchestrator.sources import discover

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(discover, "OPEN_WEBUI_DIRS", ())
    (tmp_path / ".ollama").mkdir()
    build_v18(tmp_path / ".ollama" / "db.sqlite").close()
    webui = tmp_path / "webui"
    webui.mkdir()
    db = sqlite3.connect(webui / "webui.db")
    db.execute("CREATE TABLE chat (id VARCHAR(255), chat JSON)")
    db.executemany("INSERT INTO chat VALUES (?, ?)", [("1", json.dumps({"secret": "body"}))] * 4)
    db.commit()
    db.close()

    assert main(["data", "sources", "--open-webui", str(webui)]) == 0
    out = capsys.readouterr().out
    assert f"ollama_app  {tmp_path / '.ollama' / 'db.sqlite'}  2 chats" in out
    assert f"open_webui  {webui / 'webui.db'}  4 chats" in out
    assert "secret" not in out and "body" not in out


def test_unreadable_rows_are_counted_skips(tmp_path, export):
    path = tmp_path / "db.sqlite"
    db = build_v18(path)
    db.execute("INSERT INTO chats (id, title) VALUES ('bad', 'x')")
    db.execute("INSERT INTO messages (chat_id, role, content) VALUES ('bad', 'user', CAST(x'fffe' AS TEXT))")
    db.execute("INSERT INTO chats (id, title) VALUES ('args', 'x')")
    db.execute("INSERT INTO messages (chat_id, role, content) VALUES ('args', 'assistant', '')")
    message_id = db.execute("SELECT max(id) FROM messages").fetchone()[0]
    db.execute(
        "INSERT INTO tool_calls (message_id, type, function_name, function_arguments) VALUES (?, 'function', 'f', '{')",
        (message_id,),
    )
    db.commit()
    db.close()

    result = export("--source", f"ollama_app:{path}")

    assert result.rc == 0 and len(result.records) == 2, result.err
    assert result.skipped("invalid UTF-8") == 1
    assert result.skipped("malformed tool call: call 2: arguments are not JSON") == 1


def test_source_files_for_fingerprints(tmp_path, monkeypatch):
    from orchestrator.recipe import ChatGPTSource, OllamaAppSource, OllamaSavedSource
    from orchestrator.sources import source_files

    monkeypatch.setenv("HOME", str(tmp_path))
    app = tmp_path / ".ollama" / "db.sqlite"
    assert source_files(OllamaAppSource(type="ollama_app")) == [app, app.with_name("db.sqlite-wal")]
    assert source_files(OllamaSavedSource(type="ollama_saved")) == []
    assert source_files(ChatGPTSource(type="chatgpt", path="c.json")) == [tmp_path.__class__("c.json")]


def test_results_kept_on_the_calls_become_tool_turns(tmp_path, export):
    path = tmp_path / "db.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_18)
    db.execute("INSERT INTO chats (id, title) VALUES ('t', 'tools')")
    db.execute("INSERT INTO messages (chat_id, role, content) VALUES ('t', 'user', 'Time?')")
    db.execute("INSERT INTO messages (chat_id, role, content, model_name) VALUES ('t', 'assistant', '', 'qwen3:4b')")
    db.execute(
        "INSERT INTO tool_calls (message_id, type, function_name, function_arguments, function_result)"
        " VALUES (2, 'function', 'clock', '{}', '12:00')"
    )
    db.execute(
        "INSERT INTO messages (chat_id, role, content, model_name) VALUES ('t', 'assistant', 'Noon.', 'qwen3:4b')"
    )
    db.commit()
    db.close()

    result = export("--source", f"ollama_app:{path}")

    assert result.rc == 0, result.err
    assert [f for f, _ in result.turns(0)] == ["human", "function_call", "observation", "gpt"]
    assert result.turns(0)[2] == ("observation", "12:00")
