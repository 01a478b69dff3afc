import json
import sqlite3

import pytest

from orchestrator.cli import main
from orchestrator.conversations import Conversation, Message, ToolCall
from orchestrator.dataset import export_dataset
from orchestrator.errors import UsageError
from orchestrator.memory import MemoryStore
from orchestrator.prepare import repair
from orchestrator.sources.files import read_file
from orchestrator.sources.memory import read_memory


def conv(*turns, id="c", tools=None):
    return Conversation(id=id, messages=list(turns), tools=tools or [])


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_samples_export_cleanly(tmp_path):
    from support import SAMPLES

    report = export_dataset(read_file(SAMPLES), "samples", tmp_path)
    assert (report.read, report.written, sum(report.skipped.values())) == (40, 40, 0)
    records = read_jsonl(tmp_path / "samples.jsonl")
    tags = {turn["from"] for r in records for turn in r["conversations"]}
    assert tags == {"human", "gpt", "function_call", "observation"}
    thinking = [t["value"] for r in records for t in r["conversations"] if t["value"].startswith("<think>\n")]
    assert len(thinking) >= 8 and all("\n</think>\n\n" in v for v in thinking)


def test_thinking_tool_calls_and_system_become_sharegpt(tmp_path):
    params = {"type": "object", "properties": {"tz": {"type": "string", "default": "UTC"}, "city": {"type": "string"}}}
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": params}}]
    c = conv(
        Message("system", "Be brief."),
        Message("user", "Time in Oslo?"),
        Message(
            "assistant",
            "Checking.",
            thinking="Need the tool.",
            tool_calls=[ToolCall("get_time", {"tz": "CET", "city": "Oslo", "days": 2.0})],
        ),
        Message("tool", "12:00", tool_name="get_time"),
        Message("assistant", "It is noon.", thinking="Easy."),
        tools=tools,
    )
    export_dataset([c], "t", tmp_path)
    (record,) = read_jsonl(tmp_path / "t.jsonl")
    assert record["system"] == "Be brief."
    # Tools as Ollama hands them to a template: properties sorted, schema keys it drops (default) dropped.
    assert record["tools"] == json.dumps(
        [
            {
                "type": "function",
                "function": {
                    "name": "get_time",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}, "tz": {"type": "string"}},
                    },
                },
            }
        ]
    )
    assert [t["from"] for t in record["conversations"]] == ["human", "function_call", "observation", "gpt"]
    call = record["conversations"][1]["value"]
    assert call.startswith("<think>\nNeed the tool.\n</think>\n\nChecking.\n<tool_call>")
    payload = call.split("<tool_call>")[1].split("</tool_call>")[0]
    assert payload == '[{"name": "get_time", "arguments": {"city": "Oslo", "days": 2, "tz": "CET"}}]'
    assert record["conversations"][3]["value"] == "<think>\nEasy.\n</think>\n\nIt is noon."


def test_no_thinking_template_drops_chains_of_thought(tmp_path):
    c = conv(Message("user", "Hi"), Message("assistant", "Hello", thinking="greet"))
    report = export_dataset([c], "nt", tmp_path, keep_thinking=False)
    assert read_jsonl(tmp_path / "nt.jsonl")[0]["conversations"][1]["value"] == "Hello"
    assert report.repaired["thinking removed (template without thinking)"] == 1


def test_repairs_are_made_and_counted():
    turns, system, fixes = repair(
        conv(
            Message("assistant", "Welcome!"),
            Message("user", "a"),
            Message("user", "b"),
            Message("assistant", "   "),
            Message("assistant", "<think>hmm</think>\n\nanswer"),
            Message("system", "late system"),
            Message("user", "dangling"),
        )
    )
    assert [(m.role, m.content) for m in turns] == [("user", "a\n\nb"), ("assistant", "answer")]
    assert turns[1].thinking == "hmm"
    assert system == "late system"
    assert fixes == {
        "turn before the first user turn dropped": 1,
        "consecutive user turns merged": 1,
        "empty turn dropped": 1,
        "inline <think> block moved to thinking": 1,
        "system message moved into the system prompt": 1,
        "trailing user turn dropped": 1,
    }


def test_parallel_tool_results_join_in_qwen_layout():
    turns, _, _ = repair(
        conv(
            Message("user", "both"),
            Message("assistant", "", tool_calls=[ToolCall("a"), ToolCall("b")]),
            Message("tool", "1", tool_name="a"),
            Message("tool", "2", tool_name="b"),
            Message("assistant", "done"),
        )
    )
    assert turns[2].content == "1\n</tool_response>\n<tool_response>\n2"


def test_malformed_input_is_skipped_with_reasons(tmp_path):
    src = tmp_path / "in.jsonl"
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    lines = [
        json.dumps(good).encode(),
        b"{not json",
        json.dumps({"messages": [{"role": "user", "content": "caf\xe9"}]}).encode().replace(b"\\u00e9", b"\xe9"),
        json.dumps({"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}).encode(),
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}).encode(),
        json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(),
        json.dumps({"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": ""}]}).encode(),
        json.dumps(good).encode(),
        json.dumps({"text": "no messages"}).encode(),
    ]
    src.write_bytes(b"\n".join(lines) + b"\n")
    report = export_dataset(read_file(src), "bad", tmp_path)
    assert report.read == 9 and report.written == 1
    assert report.skipped == {
        "invalid JSON": 1,
        "invalid UTF-8": 1,
        "no assistant reply": 3,
        "unknown role 'wizard'": 1,
        "duplicate conversation": 1,
        "no messages": 1,
    }
    assert report.examples["invalid UTF-8"] == [f"{src} line 3"]
    assert "skipped     3  no assistant reply" in "\n".join(report.lines())


def test_role_order_that_cannot_be_repaired_is_skipped():
    with pytest.raises(Exception, match="tool result without a tool call"):
        repair(conv(Message("user", "q"), Message("assistant", "a"), Message("tool", "r"), Message("assistant", "b")))


def test_one_megabyte_message_is_kept_and_noted(tmp_path):
    big = "x" * (1 << 20)
    report = export_dataset([conv(Message("user", big), Message("assistant", "ok"))], "big", tmp_path)
    assert report.written == 1 and report.long_messages == 1
    assert read_jsonl(tmp_path / "big.jsonl")[0]["conversations"][0]["value"] == big


def test_dataset_info_other_entries_untouched(tmp_path):
    info = tmp_path / "dataset_info.json"
    other = {"alpaca_en": {"file_name": "alpaca.json", "columns": {"prompt": "instruction"}}}
    info.write_text(json.dumps(other))
    c = conv(Message("user", "q"), Message("assistant", "a"))
    export_dataset([c], "mine", tmp_path)
    export_dataset([c], "mine", tmp_path)
    data = json.loads(info.read_text())
    assert data["alpaca_en"] == other["alpaca_en"]
    assert data["mine"]["file_name"] == "mine.jsonl" and data["mine"]["formatting"] == "sharegpt"
    # no temp files; the lock file of dataset_info.json stays (removing it would race with a waiting export)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".dataset_info.json.lock",
        "dataset_info.json",
        "mine.jsonl",
        "mine.report.json",
    ]


def test_broken_dataset_info_is_not_overwritten(tmp_path):
    info = tmp_path / "dataset_info.json"
    info.write_text("{broken")
    with pytest.raises(UsageError, match="dataset_info.json: not valid JSON"):
        export_dataset([conv(Message("user", "q"), Message("assistant", "a"))], "mine", tmp_path)
    assert info.read_text() == "{broken"


def test_nothing_trainable_writes_nothing(tmp_path):
    (tmp_path / "old.jsonl").write_text("keep me\n")
    with pytest.raises(UsageError, match="the 1 conversation read cannot be trained on"):
        export_dataset([conv(Message("user", "q"))], "old", tmp_path)
    assert (tmp_path / "old.jsonl").read_text() == "keep me\n"
    assert not (tmp_path / "dataset_info.json").exists()


def _store_with_bad_utf8(path):
    with MemoryStore(path) as store:
        store.add_messages("good", [Message("user", "hi"), Message("assistant", "hello", thinking="be nice")])
        store.add_messages("bad", [Message("user", "x"), Message("assistant", "y")])
    db = sqlite3.connect(path)
    db.execute("UPDATE messages SET content = CAST(X'6361666592' AS TEXT) WHERE session_id = 'bad' AND role = 'user'")
    db.commit()
    db.close()


def test_memory_store_invalid_utf8_row_is_reported(tmp_path):
    db = tmp_path / "m.db"
    _store_with_bad_utf8(db)
    items = list(read_memory(db))
    skipped = [i for i in items if not isinstance(i, Conversation)]
    assert [c.id for c in items if isinstance(c, Conversation)] == ["good"]
    assert len(skipped) == 1 and skipped[0].reason == "invalid UTF-8"
    assert skipped[0].record == "session bad, message 3" and "column content" in skipped[0].detail


def test_cli_export_from_memory_store(tmp_path, capsys):
    db = tmp_path / "m.db"
    _store_with_bad_utf8(db)
    code = main(["data", "export", "--db", str(db), "--name", "my_chats", "--dataset-dir", str(tmp_path / "d")])
    out = capsys.readouterr().out
    assert code == 0
    assert "2 conversations read, 1 written, 1 skipped" in out and "invalid UTF-8" in out
    (record,) = read_jsonl(tmp_path / "d" / "my_chats.jsonl")
    assert record["conversations"][1]["value"] == "<think>\nbe nice\n</think>\n\nhello"
    code = main(["data", "export", "--db", str(db), "--name", "x", "--session", "nope"])
    assert code == 2 and "no session 'nope'" in capsys.readouterr().err


def test_cli_export_missing_db_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "export", "--db", str(tmp_path / "none.db"), "--name", "x"]) == 2
    assert "no such memory store" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


# -- dataset_info.json: shared by parallel exports, checked before anything is replaced ----------------


def _export_when_released(src: str, name: str, dataset_dir: str, start) -> None:
    start.wait(60)  # every process reaches the read-modify-write of dataset_info.json at the same moment
    raise SystemExit(main(["data", "export", "--file", src, "--name", name, "--dataset-dir", dataset_dir]))


def test_parallel_exports_into_one_folder_keep_every_entry(tmp_path):
    import multiprocessing

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}))
    ctx = multiprocessing.get_context("spawn")
    for round_ in range(3):  # a lost entry shows in most rounds without the lock; three make it all but certain
        out = tmp_path / f"round{round_}"
        out.mkdir()
        (out / "dataset_info.json").write_text(json.dumps({"alpaca_en": {"file_name": "alpaca.json"}}))
        start = ctx.Barrier(8)
        workers = [
            ctx.Process(target=_export_when_released, args=(str(src), f"set{i}", str(out), start)) for i in range(8)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert [w.exitcode for w in workers] == [0] * 8
        info = json.loads((out / "dataset_info.json").read_text())
        assert sorted(info) == ["alpaca_en"] + [f"set{i}" for i in range(8)]


@pytest.mark.parametrize("content", ["{broken", "[1, 2]", '"text"'])
def test_a_bad_dataset_info_changes_nothing(tmp_path, capsys, content):
    info = tmp_path / "dataset_info.json"
    info.write_text(content)
    old = b'{"conversations": [{"from": "human", "value": "old"}]}\n'
    (tmp_path / "mine.jsonl").write_bytes(old)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}))
    code = main(["data", "export", "--file", str(src), "--name", "mine", "--dataset-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {info}:") and "nothing was changed" in err and err.count("\n") == 1
    assert (tmp_path / "mine.jsonl").read_bytes() == old
    assert info.read_text() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset_info.json", "in.jsonl", "mine.jsonl"]


def test_a_dataset_name_too_long_for_a_file_name_is_one_error_line(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}))
    code = main(["data", "export", "--file", str(src), "--name", "n" * 236, "--dataset-dir", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: dataset name") and "too long" in err and err.count("\n") == 1
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("where", ["file/data", "/proc/self/data"])
def test_a_dataset_folder_that_cannot_be_written_is_one_error_line(tmp_path, capsys, where):
    (tmp_path / "file").write_text("a file, not a folder")
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}))
    folder = tmp_path / where if not where.startswith("/") else where
    code = main(["data", "export", "--file", str(src), "--name", "mine", "--dataset-dir", str(folder)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"error: cannot write {folder}/") and err.count("\n") == 1


def test_the_export_pauses_the_cyclic_collector_and_restores_it_even_when_a_source_fails(tmp_path):
    import gc

    seen = []

    def chats():
        seen.append(gc.isenabled())
        yield Conversation(id="a", messages=[Message("user", "Hi"), Message("assistant", "Hello")])
        seen.append(gc.isenabled())
        raise RuntimeError("the source broke")

    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        export_dataset(chats(), "gc", tmp_path)
    assert seen == [True, False] and gc.isenabled()
    gc.disable()
    try:
        export_dataset(
            iter([Conversation(id="b", messages=[Message("user", "Hi"), Message("assistant", "Yo")])]), "gc", tmp_path
        )
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()
