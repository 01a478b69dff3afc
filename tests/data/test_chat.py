"""OllamaChat and the `chat` / `sessions` commands, against the Ollama emulator and a real SQLite store."""

from __future__ import annotations

import io
import json
import socket

import pytest
from ollama_emulator import OllamaEmulator, Reply

from orchestrator.chat import OllamaChat
from orchestrator.cli import main
from orchestrator.conversations import Message, ToolCall
from orchestrator.errors import OllamaError, UsageError
from orchestrator.memory import MemoryStore

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def ollama():
    with OllamaEmulator() as emulator:
        yield emulator


@pytest.fixture
def db(tmp_path):
    return tmp_path / "memory.db"


@pytest.fixture
def dead_host():
    """An address where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def stored(db, session_id):
    with MemoryStore(db) as store:
        return store.messages(session_id)


def test_chat_streams_to_callbacks_and_records_both_turns(ollama, db):
    ollama.add_model("qwen3:4b", thinking=True, replies=[Reply("Bonjour à toi !", thinking="French greeting.")])
    contents, thoughts = [], []
    with OllamaChat("qwen3:4b", "s1", host=ollama.url, db=db, system="Réponds en français.") as chat:
        reply = chat.chat("Salut", on_content=contents.append, on_thinking=thoughts.append)
        assert chat.last_response["done_reason"] == "stop"
    assert len(contents) > 1 and "".join(contents) == "Bonjour à toi !"
    assert len(thoughts) > 1 and "".join(thoughts) == "French greeting."
    assert reply == Message("assistant", "Bonjour à toi !", thinking="French greeting.")
    assert stored(db, "s1") == [Message("system", "Réponds en français."), Message("user", "Salut"), reply]
    with MemoryStore(db) as store:
        info = store.session("s1")
    assert (info.model, info.title, info.turns) == ("qwen3:4b", "Salut", 3)


def test_every_request_sends_the_whole_history(ollama, db):
    ollama.add_model("m", thinking=True, replies=[Reply("first", thinking="t1"), Reply("second", thinking="t2")])
    with OllamaChat("m", "s", host=ollama.url, db=db, system="sys", think=True, options={"temperature": 0}) as chat:
        chat.chat("one")
        chat.chat("two")
    first, second = ollama.chat_requests()
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert second["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first", "thinking": "t1"},
        {"role": "user", "content": "two"},
    ]
    assert second["think"] is True and second["options"] == {"temperature": 0} and second["model"] == "m"


def test_tool_calls_and_results_round_trip(ollama, db):
    ollama.add_model(
        "m",
        replies=[
            Reply("", tool_calls=[{"name": "get_weather", "arguments": {"city": "Zürich"}}]),
            Reply("It is 21 °C in Zürich."),
        ],
    )
    with OllamaChat("m", "tools", host=ollama.url, db=db, tools=[WEATHER_TOOL]) as chat:
        call = chat.chat("Weather in Zürich?")
        assert call.tool_calls == [ToolCall("get_weather", {"city": "Zürich"})]
        chat.add_tool_result("get_weather", {"temp": 21})
        answer = chat.chat()
    assert answer.content == "It is 21 °C in Zürich."
    sent = ollama.chat_requests()[1]
    assert sent["tools"] == [WEATHER_TOOL]
    assert sent["messages"][1]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}]
    assert sent["messages"][2] == {"role": "tool", "content": '{"temp": 21}', "tool_name": "get_weather"}
    assert stored(db, "tools") == [
        Message("user", "Weather in Zürich?"),
        Message("assistant", "", tool_calls=[ToolCall("get_weather", {"city": "Zürich"})]),
        Message("tool", '{"temp": 21}', tool_name="get_weather"),
        answer,
    ]
    with MemoryStore(db) as store:
        assert store.conversation("tools").tools == [WEATHER_TOOL]


def test_resuming_a_session_loads_its_history_and_model(ollama, db):
    ollama.add_model("m", replies=[Reply("A1"), Reply("A2")])
    with OllamaChat("m", "resume-me", host=ollama.url, db=db) as chat:
        chat.chat("Q1")
    with OllamaChat(session_id="resume-me", host=ollama.url, db=db, system="ignored now") as chat:
        assert chat.resumed and chat.model == "m"
        assert [m.content for m in chat.history] == ["Q1", "A1"]
        chat.chat("Q2")
    assert [m["content"] for m in ollama.chat_requests()[1]["messages"]] == ["Q1", "A1", "Q2"]
    assert [m.content for m in stored(db, "resume-me")] == ["Q1", "A1", "Q2", "A2"]


def test_a_new_session_needs_a_model(db):
    with pytest.raises(UsageError, match="no model for session 'fresh'"):
        OllamaChat(session_id="fresh", db=db)


def test_a_failure_mid_stream_keeps_the_user_turn_and_retry_answers_it(ollama, db):
    model = ollama.add_model("m", replies=[Reply("partial answer", fail_after=2, error="runner died"), Reply("ok")])
    with OllamaChat("m", "s", host=ollama.url, db=db) as chat:
        with pytest.raises(OllamaError, match="runner died.*saved in session 's'"):
            chat.chat("important question")
        assert stored(db, "s") == [Message("user", "important question")]  # no partial answer stored
        assert chat.history == [Message("user", "important question")]
        assert model.replies == [Reply("ok")]
        assert chat.chat().content == "ok"  # retry: answers the saved turn, without repeating it
    assert [m.content for m in stored(db, "s")] == ["important question", "ok"]
    assert ollama.chat_requests()[1]["messages"] == [{"role": "user", "content": "important question"}]


def test_an_unreachable_server_keeps_the_user_turn(db, dead_host):
    with OllamaChat("m", "offline", host=dead_host, db=db) as chat:
        chat.client.retries = 0
        with pytest.raises(OllamaError, match=f"cannot reach Ollama at http://{dead_host}.*saved in session"):
            chat.chat("hello?")
    assert stored(db, "offline") == [Message("user", "hello?")]


def test_an_answer_cut_short_is_an_error_and_is_not_stored(ollama, db):
    ollama.add_model("m", replies=[Reply("never finished", chunk_chars=3, hang_up_after=2)])
    with OllamaChat("m", "cut", host=ollama.url, db=db) as chat:
        with pytest.raises(OllamaError, match="ended before it was done"):
            chat.chat("q")
    assert stored(db, "cut") == [Message("user", "q")]


def test_a_failing_callback_stops_the_answer_and_keeps_the_user_turn(ollama, db):
    ollama.add_model("m", replies=[Reply("a long answer", chunk_chars=2)])

    def stop(delta):
        raise KeyboardInterrupt

    with OllamaChat("m", "stopped", host=ollama.url, db=db) as chat:
        with pytest.raises(KeyboardInterrupt):
            chat.chat("q", on_content=stop)
        assert chat.history == [Message("user", "q")]
    assert stored(db, "stopped") == [Message("user", "q")]


def test_tools_on_a_model_without_tool_support_are_refused(ollama, db):
    ollama.add_model("plain", tools=False)
    with OllamaChat("plain", host=ollama.url, db=db, tools=[WEATHER_TOOL]) as chat:
        with pytest.raises(OllamaError, match="registry.ollama.ai/library/plain:latest does not support tools"):
            chat.chat("q")


def test_chat_without_text_needs_something_to_answer(ollama, db):
    ollama.add_model("m")
    with OllamaChat("m", host=ollama.url, db=db) as chat, pytest.raises(UsageError, match="nothing to answer"):
        chat.chat()
    assert ollama.chat_requests() == []


# -- the command line ----------------------------------------------------------------------------


def test_cli_one_shot_message_prints_the_answer_and_records(ollama, db, capsys):
    ollama.add_model("qwen3:4b", thinking=True, replies=[Reply("Paris.", thinking="Capital of France.")])
    code = main(["chat", "--model", "qwen3:4b", "--session", "geo", "--host", ollama.url, "--db", str(db),
                 "--message", "Capital of France?"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0
    assert out == "Paris.\n"  # stdout is not a terminal: thinking is hidden, only the answer is printed
    assert "session geo (new)" in err
    assert stored(db, "geo")[1] == Message("assistant", "Paris.", thinking="Capital of France.")


def test_cli_show_thinking_and_no_think(ollama, db, capsys):
    ollama.add_model("qwen3:4b", thinking=True, replies=[Reply("Paris.", thinking="Capital of France.")])
    base = ["chat", "-m", "qwen3:4b", "-s", "geo", "--host", ollama.url, "--db", str(db), "--message", "Capital?"]
    assert main(base + ["--show-thinking"]) == 0
    assert capsys.readouterr().out == "Thinking...\nCapital of France.\n...done thinking.\n\nParis.\n"
    assert main(base + ["--no-think"]) == 0
    assert ollama.chat_requests()[-1]["think"] is False


def test_cli_repl_reads_stdin_until_bye(ollama, db, capsys, monkeypatch):
    ollama.add_model("m", replies=[Reply("A1"), Reply("A2"), Reply("never")])
    monkeypatch.setattr("sys.stdin", io.StringIO("Q1\n\nQ2\n/bye\nQ3\n"))
    assert main(["chat", "-m", "m", "-s", "repl", "--host", ollama.url, "--db", str(db)]) == 0
    assert capsys.readouterr().out == "A1\nA2\n"
    assert [m.content for m in stored(db, "repl")] == ["Q1", "A1", "Q2", "A2"]


def test_cli_unreachable_server_exits_1_with_one_line(db, dead_host, capsys, monkeypatch):
    sleeps = []
    monkeypatch.setattr("orchestrator.ollama.client.time.sleep", sleeps.append)
    code = main(["chat", "-m", "m", "-s", "x", "--host", dead_host, "--db", str(db), "--message", "hi"])
    err = capsys.readouterr().err
    assert code == 1
    assert sleeps == [0.5, 1.0]  # two retries, backing off
    assert f"error: cannot reach Ollama at http://{dead_host}" in err and "Traceback" not in err


LONG_ID = "a-really-long-session-id-that-once-squeezed-the-other-columns-out"


def test_cli_sessions_lists_and_shows(ollama, db, capsys):
    ollama.add_model(
        "qwen3:4b",
        thinking=True,
        replies=[
            Reply("", thinking="Need the tool.", tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}])
        ],
    )
    with OllamaChat("qwen3:4b", "weather-oslo", host=ollama.url, db=db, tools=[WEATHER_TOOL]) as chat:
        chat.chat("Weather in Oslo?")
        chat.add_tool_result("get_weather", json.dumps({"temp": -3}))
    with MemoryStore(db) as store:
        store.add_message(LONG_ID, Message("user", "hello"), model="llama3.2")

    assert main(["sessions", "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["ID", "MODEL", "TURNS", "UPDATED"]
    assert lines[1].split()[:3] == [LONG_ID, "llama3.2", "1"]  # a long id squeezes no column out
    assert lines[2].split()[:3] == ["weather-oslo", "qwen3:4b", "3"]

    assert main(["sessions", "show", "weather-oslo", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    for expected in ("── user", "Weather in Oslo?", "── assistant", "Need the tool.", 'get_weather(city="Oslo")',
                     "── tool (get_weather)", '{"temp": -3}'):  # fmt: skip
        assert expected in out
    assert out.index("Weather in Oslo?") < out.index("Need the tool.") < out.index('{"temp": -3}')


def test_cli_sessions_show_unknown_id_is_a_usage_error(db, capsys):
    with MemoryStore(db) as store:
        store.add_message("known", Message("user", "x"))
    assert main(["sessions", "show", "ghost", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "ghost" in err and "orchestrator sessions" in err


def test_cli_sessions_on_a_missing_database_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "none" / "memory.db"
    assert main(["sessions", "--db", str(missing)]) == 0
    assert "no sessions yet" in capsys.readouterr().out
    assert main(["sessions", "show", "x", "--db", str(missing)]) == 2
    assert not missing.parent.exists()


# -- failed chats: the user turn is kept, the session is marked, and it can be deleted ---------------------


def test_an_unknown_model_marks_the_session_failed_and_a_retry_clears_it(ollama, db, capsys):
    code = main(["chat", "-m", "ghost", "-s", "junk", "--host", ollama.url, "--db", str(db), "--message", "hi"])
    assert code == 1 and "model 'ghost' not found" in capsys.readouterr().err
    assert stored(db, "junk") == [Message("user", "hi")]  # the turn is never lost
    with MemoryStore(db) as store:
        assert "not found" in store.session("junk").failed
    assert main(["sessions", "--db", str(db)]) == 0
    (row,) = capsys.readouterr().out.splitlines()[1:]
    assert row.split()[:3] == ["junk", "ghost", "1"] and "failed" in row.split()
    ollama.add_model("ghost", replies=[Reply("found now")])
    with OllamaChat("ghost", "junk", host=ollama.url, db=db) as chat:
        assert chat.chat().content == "found now"
    with MemoryStore(db) as store:
        assert store.session("junk").failed is None


def test_an_unreachable_host_and_a_malformed_tool_call_mark_the_session_failed(ollama, db, dead_host):
    with OllamaChat("m", "offline", host=dead_host, db=db) as chat:
        chat.client.retries = 0
        with pytest.raises(OllamaError):
            chat.chat("hello?")
    ollama.add_model("m", replies=[Reply("", tool_calls=[{"name": "get_weather", "arguments": ["Oslo"]}])])
    with OllamaChat("m", "bad-call", host=ollama.url, db=db, tools=[WEATHER_TOOL]) as chat:
        with pytest.raises(OllamaError, match="tool call.*arguments are a list"):
            chat.chat("weather?")
    with MemoryStore(db) as store:
        assert "cannot reach Ollama" in store.session("offline").failed
        assert "tool call" in store.session("bad-call").failed
        assert [m.content for m in store.messages("bad-call")] == ["weather?"]


def test_sessions_show_names_a_failed_session(ollama, db, capsys):
    assert main(["chat", "-m", "ghost", "-s", "junk", "--host", ollama.url, "--db", str(db), "--message", "hi"]) == 1
    capsys.readouterr()
    assert main(["sessions", "show", "junk", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "no reply" in out and "not found" in out


def test_sessions_delete_removes_a_session_and_says_what_it_deleted(ollama, db, capsys):
    ollama.add_model("m", replies=[Reply("A1")])
    with OllamaChat("m", "keep", host=ollama.url, db=db) as chat:
        chat.chat("Q1")
    secret = "SECRET-chat-text"
    assert main(["chat", "-m", "ghost", "-s", "junk", "--host", ollama.url, "--db", str(db), "--message", secret]) == 1
    capsys.readouterr()
    assert main(["sessions", "delete", "junk", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("deleted session junk") and "1 turn" in out and secret not in out
    with MemoryStore(db) as store:
        assert [s.id for s in store.sessions()] == ["keep"] and store.messages("junk") == []
    assert main(["sessions", "delete", "junk", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "no session 'junk'" in err and err.count("\n") == 1
    assert main(["sessions", "delete", "x", "--db", str(db.parent / "none.db")]) == 2
    assert "no such memory store" in capsys.readouterr().err and not (db.parent / "none.db").exists()
