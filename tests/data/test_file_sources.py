"""Plain JSON / JSONL sources: every bad record is a counted skip naming file and line (or one error line
for a file that cannot be parsed at all), never a traceback, never message text in the output."""

from __future__ import annotations

import json

import pytest

from orchestrator.cli import main

SECRET = "SECRET-chat-text"
GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"k": value}
    return value


def _with_call(arguments) -> dict:
    return {
        "messages": [
            {"role": "user", "content": SECRET},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": arguments}}]},
            {"role": "tool", "content": "r"},
            {"role": "assistant", "content": "done"},
        ]
    }


def _plain(**assistant) -> dict:
    return {"messages": [{"role": "user", "content": SECRET}, {"role": "assistant", "content": "a", **assistant}]}


# each bad line, and a word its skip reason holds
BAD_LINES = {
    "lone surrogate escape": (json.dumps(_plain()).replace(SECRET, "\\ud800" + SECRET), "invalid JSON"),
    "100k nested brackets": ("[" * 100_000, "invalid JSON"),
    "arguments 900 levels deep": (json.dumps(_with_call(_nested(900))), "nested"),
    "tools a number": (json.dumps({**_plain(), "tools": 5}), "tools"),
    "tools an object": (json.dumps({**_plain(), "tools": {"a": 1}}), "tools"),
    "tools a list of strings": (json.dumps({**_plain(), "tools": ["abc"]}), "tools"),
    "tools with a property that is a string": (
        json.dumps({**_plain(), "tools": [{"name": "f", "parameters": {"type": "object", "properties": {"c": "x"}}}]}),
        "tools",
    ),
    "thinking a number": (json.dumps(_plain(thinking=5)), "thinking"),
    "content a number": (json.dumps({"messages": [{"role": "user", "content": 5}, GOOD["messages"][1]]}), "content"),
    "content an object": (json.dumps(_plain(content={"text": SECRET})), "content"),
    "sharegpt value a list": (
        json.dumps({"conversations": [{"from": "human", "value": [SECRET]}, {"from": "gpt", "value": "a"}]}),
        "value",
    ),
    "arguments a string that is not JSON": (json.dumps(_with_call(SECRET)), "arguments"),
    "arguments a JSON string of a list": (json.dumps(_with_call(json.dumps([SECRET]))), "arguments"),
    "arguments a number": (json.dumps(_with_call(5)), "arguments"),
    "arguments a list": (json.dumps(_with_call([SECRET])), "arguments"),
}


def export(tmp_path, src, capsys, name="t"):
    code = main(["data", "export", "--file", str(src), "--name", name, "--dataset-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_a_bad_jsonl_record_is_a_counted_skip(tmp_path, capsys, case):
    line, reason_word = BAD_LINES[case]
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(GOOD) + "\n" + line + "\n", encoding="utf-8")
    code, out, err = export(tmp_path, src, capsys)
    assert (code, err) == (0, ""), err
    assert "2 conversations read, 1 written, 1 skipped" in out
    (skip_line,) = [x for x in out.splitlines() if x.strip().startswith("skipped")]
    assert reason_word in skip_line and f"{src} line 2" in skip_line
    assert SECRET not in out
    assert [json.loads(x) for x in (tmp_path / "out" / "t.jsonl").read_text().splitlines()] == [
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "system": "", "tools": ""}
    ]


@pytest.mark.parametrize("case", ["lone surrogate escape", "100k nested brackets"])
def test_a_json_file_that_cannot_be_parsed_is_one_error_line(tmp_path, capsys, case):
    src = tmp_path / "in.json"
    src.write_text("[" + json.dumps(GOOD) + ", " + BAD_LINES[case][0] + "]", encoding="utf-8")
    code, out, err = export(tmp_path, src, capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {src}: not valid JSON") and err.count("\n") == 1 and SECRET not in err
    assert not (tmp_path / "out").exists()


def test_a_bad_record_of_a_json_file_is_a_counted_skip(tmp_path, capsys):
    src = tmp_path / "in.json"
    src.write_text(json.dumps([GOOD, {**_plain(), "tools": {"a": 1}}]), encoding="utf-8")
    code, out, err = export(tmp_path, src, capsys)
    assert (code, err) == (0, "")
    assert "1 written, 1 skipped" in out and f"{src} record 1" in out


def test_a_bom_keeps_the_first_jsonl_record(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    second = {"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]}
    src.write_bytes(b"\xef\xbb\xbf" + (json.dumps(GOOD) + "\n" + json.dumps(second) + "\n").encode())
    code, out, err = export(tmp_path, src, capsys)
    assert (code, err) == (0, "")
    assert "2 conversations read, 2 written, 0 skipped" in out


def test_a_bom_json_file_is_read(tmp_path, capsys):
    src = tmp_path / "in.json"
    src.write_bytes(b"\xef\xbb\xbf" + json.dumps([GOOD]).encode())
    code, out, err = export(tmp_path, src, capsys)
    assert (code, err) == (0, "")
    assert "1 conversation read, 1 written, 0 skipped" in out


def test_string_arguments_are_parsed_when_they_hold_an_object_and_skipped_otherwise(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    lines = [_with_call(json.dumps({"b": 1, "a": "x"})), _with_call(json.dumps([1])), _with_call('"text"')]
    src.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    code, out, err = export(tmp_path, src, capsys)
    assert (code, err) == (0, "")
    assert "3 conversations read, 1 written, 2 skipped" in out
    (record,) = [json.loads(x) for x in (tmp_path / "out" / "t.jsonl").read_text().splitlines()]
    call = '<tool_call>[{"name": "f", "arguments": {"a": "x", "b": 1}}]</tool_call>'
    assert record["conversations"][1]["value"] == call  # parsed as Ollama does, in the canonical form
