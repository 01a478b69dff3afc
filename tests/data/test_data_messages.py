"""What the data and chat commands say: a folder named as a folder, thinking levels sent as Ollama takes
them, counts that agree with their nouns, and a missing store explained for the caller (CLI or recipe)."""

from __future__ import annotations

import json

import pytest
from ollama_emulator import OllamaEmulator, Reply

from orchestrator.cli import main
from orchestrator.conversations import Conversation, Message
from orchestrator.dataset import ExportReport, export_dataset
from orchestrator.errors import UsageError
from orchestrator.memory import MemoryStore

GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


@pytest.fixture
def ollama():
    with OllamaEmulator() as emulator:
        yield emulator


# -- item: a folder given for a file --------------------------------------------------------------


def test_a_folder_given_to_file_says_it_is_a_folder(tmp_path, capsys):
    folder = tmp_path / "chats"
    folder.mkdir()
    (folder / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
    assert main(["data", "export", "--name", "x", "--file", str(folder), "--dataset-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {folder}: is a folder, not a file of conversations (it holds a.jsonl); give the file\n"
    assert not (tmp_path / "d").exists()


# -- item: thinking levels -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "sent"),
    [
        (["--think", "high"], "high"),
        (["--think", "medium"], "medium"),
        (["--think", "low"], "low"),
        (["--think", "true"], True),
        (["--think", "false"], False),
    ],
)
def test_think_takes_ollamas_levels(ollama, tmp_path, capsys, option, sent):
    ollama.add_model("qwen3:4b", thinking=True, replies=[Reply("Paris.", thinking="Capital.")])
    base = ["chat", "-m", "qwen3:4b", "--host", ollama.url, "--db", str(tmp_path / "m.db")]
    assert main([*base, *option, "--message", "Capital?"]) == 0, capsys.readouterr().err
    think = ollama.chat_requests()[-1]["think"]
    assert think == sent and type(think) is type(sent)


def test_an_unknown_think_level_is_refused(ollama, tmp_path, capsys):
    base = ["chat", "-m", "qwen3:4b", "--host", ollama.url, "--db", str(tmp_path / "m.db"), "--message", "hi"]
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--think", "hard"])
    assert exit_info.value.code == 2
    assert "true, false, high, medium or low" in capsys.readouterr().err
    ollama.add_model("qwen3:4b", thinking=True, replies=[Reply("Paris.", thinking="Capital.")])
    assert main([*base, "--think", "--message", "again"]) == 0  # a bare --think still means true
    assert ollama.chat_requests()[-1]["think"] is True
    with pytest.raises(UsageError, match="think must be true, false, 'high', 'medium' or 'low'"):
        from orchestrator.chat import OllamaChat

        OllamaChat("qwen3:4b", host=ollama.url, db=tmp_path / "m.db", think="hard")
    assert len(ollama.chat_requests()) == 1


# -- item: counts and their nouns --------------------------------------------------------------------


def test_report_counts_agree_with_their_nouns():
    one = ExportReport(name="d", read=1, written=1, long_messages=1)
    assert one.lines()[0] == "dataset d: 1 conversation read, 1 written, 0 skipped"
    assert one.lines()[1].startswith("  note: 1 conversation holds a message over 32,768 characters")
    two = ExportReport(name="d", read=2, written=2, long_messages=2)
    assert two.lines()[0] == "dataset d: 2 conversations read, 2 written, 0 skipped"
    assert two.lines()[1].startswith("  note: 2 conversations hold a message over")


def test_nothing_trainable_in_one_conversation_is_said_in_the_singular(tmp_path):
    lone = Conversation(id="c", messages=[Message("user", "q")])
    with pytest.raises(UsageError) as err:
        export_dataset([lone], "d", tmp_path)
    assert "the 1 conversation read cannot be trained on" in str(err.value)


def test_a_resumed_session_of_one_turn_says_turn(ollama, tmp_path, capsys):
    db = tmp_path / "m.db"
    with MemoryStore(db) as store:
        store.add_messages("s", [Message("user", "earlier")], model="qwen3:4b")
    ollama.add_model("qwen3:4b", replies=[Reply("ok")])
    assert main(["chat", "-s", "s", "--host", ollama.url, "--db", str(db), "--message", "again"]) == 0
    assert "session s (resumed, 1 turn) " in capsys.readouterr().err


# -- item: a missing memory store, explained for the caller ------------------------------------------


def test_the_reader_says_what_is_missing_and_how_to_make_it(tmp_path):
    from orchestrator.sources.memory import read_memory

    db = tmp_path / "none.db"
    with pytest.raises(UsageError) as err:
        list(read_memory(db))
    assert str(err.value) == (
        f"{db}: no such memory store; record chats into it with `orchestrator chat --model MODEL --db {db}`"
    )


def test_a_recipe_source_names_its_key(tmp_path):
    from orchestrator.recipe import FileSource, MemorySource
    from orchestrator.sources import read_sources

    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(GOOD) + "\n")
    db = tmp_path / "none.db"
    sources = [FileSource(type="file", path=str(good)), MemorySource(type="memory", path=str(db))]
    with pytest.raises(UsageError) as err:
        list(read_sources(sources))
    message = str(err.value)
    assert message.startswith(f"data.sources[1].path: {db}: no such memory store; ")
    assert "orchestrator chat --model MODEL --db" in message and "pass --db" not in message


def test_the_export_command_adds_its_own_options(tmp_path, capsys):
    db = tmp_path / "none.db"
    assert main(["data", "export", "--db", str(db), "--name", "x", "--dataset-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {db}: no such memory store; record chats into it with `orchestrator chat")
    assert err.rstrip().endswith("or export another store (--db PATH) or a file of conversations (--file PATH)")
    assert err.count("\n") == 1
