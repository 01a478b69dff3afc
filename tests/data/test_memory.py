"""The SQLite conversation store, on real SQLite files in tmp_path."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
import types

import pytest

from orchestrator.conversations import Conversation, Message, ToolCall
from orchestrator.errors import UsageError
from orchestrator.memory import SCHEMA_VERSION, MemoryStore

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def full_conversation() -> list[Message]:
    return [
        Message("system", "Tu es concis. 你好"),
        Message("user", "Wetter in Zürich? 🌦\nZweite Zeile"),
        Message(
            "assistant",
            "",
            thinking="The user wants the weather → call the tool.",
            tool_calls=[ToolCall("get_weather", {"city": "Zürich", "days": 2, "units": {"temp": "C"}})],
        ),
        Message("tool", '{"temp": 21, "sky": "☀"}', tool_name="get_weather"),
        Message("assistant", "Es sind 21 °C und sonnig. ☀", thinking="Summarise."),
    ]


def test_round_trip_keeps_every_field(tmp_path):
    path = tmp_path / "deep" / "folder" / "memory.db"
    turns = full_conversation()
    with MemoryStore(path) as store:
        session = store.create_session("zurich", model="qwen3:4b", title="Wetter", tools=[WEATHER_TOOL])
        ids = store.add_messages(session, turns, model="qwen3:4b")
        assert ids == sorted(ids) and len(set(ids)) == 5
    with MemoryStore(path) as store:  # read back through a fresh connection
        assert store.messages("zurich") == turns
        conversation = store.conversation("zurich")
    assert conversation == Conversation(
        id="zurich", messages=turns, tools=[WEATHER_TOOL], source="memory", title="Wetter", model="qwen3:4b"
    )
    assert conversation.system == "Tu es concis. 你好"


def test_tool_calls_are_stored_as_json_in_ollama_form(tmp_path):
    path = tmp_path / "m.db"
    with MemoryStore(path) as store:
        store.add_message("s", full_conversation()[2], model="m")
    row = sqlite3.connect(path).execute("SELECT role, content, thinking, tool_calls, model FROM messages").fetchone()
    assert row[:3] == ("assistant", "", "The user wants the weather → call the tool.")
    assert '"function": {"name": "get_weather"' in row[3] and "Zürich" in row[3]
    assert row[4] == "m"


def test_database_is_wal_with_a_schema_version(tmp_path):
    path = tmp_path / "m.db"
    MemoryStore(path).close()
    other = sqlite3.connect(path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in other.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"sessions", "messages"} <= tables


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "m.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(UsageError, match="newer"):
        MemoryStore(path)


def test_not_a_database_is_a_usage_error(tmp_path):
    path = tmp_path / "m.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UsageError, match="not a usable conversation database"):
        MemoryStore(path)


def test_create_session_generates_and_reuses_ids(tmp_path):
    with MemoryStore(tmp_path / "m.db") as store:
        first, second = store.create_session(), store.create_session()
        assert first != second
        assert store.create_session("work", model="qwen3:4b") == "work"
        assert store.create_session("work", model="other", title="later title") == "work"  # reused
        infos = {s.id: s for s in store.sessions()}
        assert len(infos) == 3
        assert infos["work"].model == "qwen3:4b"  # an existing model is not overwritten
        assert infos["work"].title == "later title"  # a missing title is filled in


def test_sessions_count_turns_and_order_by_update(tmp_path):
    with MemoryStore(tmp_path / "m.db") as store:
        store.add_messages("a", [Message("user", "1"), Message("assistant", "2")], model="m1")
        store.add_message("b", Message("user", "only"), model="m2")
        store.create_session("empty")
        store.add_message("a", Message("user", "3"))
        infos = store.sessions()
        assert [s.id for s in infos] == ["a", "empty", "b"]
        assert [s.turns for s in infos] == [3, 0, 1]
        assert infos[0].model == "m1" and infos[0].updated_at > infos[0].created_at
        assert store.session("b").turns == 1 and store.session("nope") is None


def test_add_messages_is_all_or_nothing(tmp_path):
    with MemoryStore(tmp_path / "m.db") as store:
        store.add_message("s", Message("user", "kept"))
        with pytest.raises(UsageError, match="role 'robot'"):
            store.add_messages("s", [Message("assistant", "fine"), Message("robot", "bad")])
        assert [m.content for m in store.messages("s")] == ["kept"]
        store.add_message("s", Message("assistant", "after"))  # the connection is usable again
        assert store.session("s").turns == 2


def test_conversations_stream_in_order_and_unknown_ids_fail(tmp_path):
    with MemoryStore(tmp_path / "m.db") as store:
        for name in ("one", "two", "three"):
            store.add_message(name, Message("user", name))
        stream = store.conversations()
        assert isinstance(stream, types.GeneratorType)
        assert [c.id for c in stream] == ["one", "two", "three"]
        assert [c.messages[0].content for c in store.conversations(["three", "one"])] == ["three", "one"]
        with pytest.raises(UsageError, match="no session 'ghost'.*orchestrator sessions"):
            list(store.conversations(["one", "ghost"]))
        with pytest.raises(UsageError, match="'ghost'"):
            store.conversation("ghost")
        assert store.messages("ghost") == []


def test_empty_session_id_is_refused(tmp_path):
    with MemoryStore(tmp_path / "m.db") as store, pytest.raises(UsageError, match="non-empty"):
        store.add_message("  ", Message("user", "x"))


def _writer(path: str, tag: str, count: int, start: multiprocessing.synchronize.Barrier) -> None:
    """Write ``count`` turns to its own session and to a shared one, alternating single and batched writes."""
    start.wait(30)  # both processes open the new database and write at the same moment
    with MemoryStore(path, busy_timeout=60) as store:
        for i in range(count):
            store.add_message(f"own-{tag}", Message("user", f"{tag}-{i}"), model=tag)
            time.sleep(0.001)  # leave the lock free a moment, so the two writers interleave
            if i % 10 == 9:
                store.add_messages("shared", [Message("assistant", f"{tag}-{j}") for j in range(i - 9, i + 1)])


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "concurrent.db")  # created by the workers themselves, racing each other
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    workers = [ctx.Process(target=_writer, args=(path, tag, 300, start)) for tag in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    with MemoryStore(path) as store:
        for tag in ("a", "b"):
            assert [m.content for m in store.messages(f"own-{tag}")] == [f"{tag}-{i}" for i in range(300)]
        shared = [m.content for m in store.messages("shared")]
        assert len(shared) == 600
        switches = sum(1 for prev, cur in zip(shared, shared[1:], strict=False) if prev[0] != cur[0])
        assert switches > 0, "the two writers never overlapped: the test did not test concurrency"
        for tag in ("a", "b"):  # each writer's turns keep their order inside the shared session
            assert [c for c in shared if c.startswith(f"{tag}-")] == [f"{tag}-{i}" for i in range(300)]
        assert {s.id: s.turns for s in store.sessions()} == {"own-a": 300, "own-b": 300, "shared": 600}
    # ids follow the order of the writes: the time each was recorded, under the write lock, never goes back
    stamps = [r[0] for r in sqlite3.connect(path).execute("SELECT created_at FROM messages ORDER BY id")]
    assert len(stamps) == 1200 and stamps == sorted(stamps)


def _version_1_store(path) -> None:
    """A store as the first release wrote it (schema version 1, no failed mark)."""
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE sessions (id TEXT PRIMARY KEY, model TEXT, title TEXT, created_at TEXT NOT NULL,
                               updated_at TEXT NOT NULL, tools TEXT);
        CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL REFERENCES sessions(id),
                               role TEXT NOT NULL, content TEXT NOT NULL DEFAULT '', thinking TEXT, tool_calls TEXT,
                               tool_name TEXT, model TEXT, created_at TEXT NOT NULL);
        INSERT INTO sessions VALUES ('old', 'm', 't', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00', NULL);
        INSERT INTO messages (session_id, role, content, created_at) VALUES ('old', 'user', 'q', '2026-01-01');
        PRAGMA user_version = 1;
        """
    )
    db.close()


def test_a_store_created_between_the_two_foreign_checks_is_not_called_foreign(tmp_path, monkeypatch):
    # The race CI once lost: one process reads "version 0", another then creates the whole store, and the
    # first, reading the tables next, took the fresh store for another program's file.
    import threading

    import orchestrator.memory as memory

    path = tmp_path / "race.db"
    creator = threading.Thread(target=lambda: MemoryStore(path, busy_timeout=30).close())
    real_check = memory.check_version

    def check_then_let_the_other_create(db, where, supported):
        version = real_check(db, where, supported)
        if not creator.is_alive() and creator.ident is None:
            creator.start()
            creator.join(1.0)  # done at once unless this reader holds its snapshot; then it waits for us
        return version

    monkeypatch.setattr(memory, "check_version", check_then_let_the_other_create)
    with MemoryStore(path) as store:
        store.add_message("s", Message("user", "hi"))
    creator.join(30)
    assert not creator.is_alive()
    monkeypatch.undo()
    with MemoryStore(path) as store:
        assert [m.content for m in store.messages("s")] == ["hi"]


def test_a_reader_never_migrates_an_older_store(tmp_path):
    path = tmp_path / "m.db"
    _version_1_store(path)
    before = path.read_bytes()
    with MemoryStore(path, readonly=True) as store:
        (info,) = store.sessions()
        assert (info.id, info.turns, info.failed) == ("old", 1, None)
        assert [m.content for m in store.messages("old")] == ["q"]
    assert path.read_bytes() == before


def test_the_writer_migrates_an_older_store_to_the_failed_mark(tmp_path):
    path = tmp_path / "m.db"
    _version_1_store(path)
    with MemoryStore(path) as store:
        store.mark_failed("old", "cannot reach Ollama")
        assert store.session("old").failed == "cannot reach Ollama"
        store.add_message("old", Message("assistant", "a"))  # an answer clears the mark
        assert store.session("old").failed is None and store.session("old").turns == 2
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert "failed" in {r[1] for r in db.execute("PRAGMA table_info(sessions)")}


def test_the_writer_refuses_another_programs_sqlite_file_and_leaves_it_as_it_was(tmp_path):
    path = tmp_path / "notes.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    before = path.read_bytes()
    with pytest.raises(UsageError, match="notes.db: not an orchestrator memory store"):
        MemoryStore(path)
    assert path.read_bytes() == before  # no tables added, not switched to WAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]
