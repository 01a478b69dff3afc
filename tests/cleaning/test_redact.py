"""Secrets planted in prose, code blocks, thinking, the system prompt and tool calls never reach the file."""

import json
import sys
from collections import Counter

import pytest
import secrets_corpus as corpus

from orchestrator.cleaning import redact
from orchestrator.cleaning.redact import redact_text
from orchestrator.conversations import Conversation, Message, ToolCall
from orchestrator.dataset import export_dataset

TOOLS = [{"type": "function", "function": {"name": "deploy", "parameters": {"type": "object", "properties": {}}}}]


def planted_conversations() -> list[Conversation]:
    first = Conversation(
        id="planted-1",
        messages=[
            Message("system", corpus.SYSTEM),
            Message("user", corpus.PROSE),
            Message("assistant", "Call the deploy tool.", corpus.THINKING, [ToolCall("deploy", corpus.TOOL_ARGUMENTS)]),
            Message("tool", corpus.TOOL_RESULT, tool_name="deploy"),
            Message("assistant", corpus.CODE),
        ],
        tools=TOOLS,
    )
    second = Conversation(
        id="planted-2", messages=[Message("user", "Is this code safe?\n" + corpus.CODE), Message("assistant", "No.")]
    )
    return [first, second]


def test_no_planted_secret_reaches_the_dataset_or_its_report(tmp_path):
    report = export_dataset(planted_conversations(), "planted", tmp_path)
    written = (tmp_path / "planted.jsonl").read_text(encoding="utf-8")
    saved = (tmp_path / "planted.report.json").read_text(encoding="utf-8")
    shown = "\n".join(report.lines())
    for value in corpus.PLANTED:
        assert value not in written and value not in saved and value not in shown, value
    assert report.written == 2
    for placeholder in ("<API_KEY>", "<TOKEN>", "<SECRET>", "<PRIVATE_KEY>", "<PASSWORD>", "<EMAIL>", "<PHONE>"):
        assert placeholder in written
    assert report.redacted == Counter(
        {"TOKEN": 11, "API_KEY": 7, "EMAIL": 4, "PHONE": 4, "SECRET": 5, "PASSWORD": 3, "PRIVATE_KEY": 1}
    )
    assert "  redacted    7  <API_KEY>" in report.lines()
    assert json.loads(saved)["redacted"] == dict(report.redacted)


def test_the_user_of_a_url_stays_and_its_password_goes():
    counts = Counter()
    text = redact_text(f"clone https://deploy:{corpus.PASSWORD_IN_URL}@git.example.com/app.git now", counts)
    assert text == "clone https://deploy:<PASSWORD>@git.example.com/app.git now"
    assert counts == Counter({"PASSWORD": 1})


def test_a_private_key_cut_off_before_its_end_line_is_still_removed():
    cut = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(corpus.PEM_LINES[:2]) + "\n\nWhy does ssh refuse it?"
    counts = Counter()
    assert redact_text(cut, counts) == "<PRIVATE_KEY>\n\nWhy does ssh refuse it?"
    assert counts == Counter({"PRIVATE_KEY": 1})


def test_ordinary_text_is_left_alone(tmp_path):
    convs = [
        Conversation(id=f"c{i}", messages=[Message("user", f"Question {i}: {text}"), Message("assistant", text)])
        for i, text in enumerate(corpus.CONTROL)
    ]
    report = export_dataset(convs, "control", tmp_path, near_duplicates=None)
    records = [json.loads(line) for line in (tmp_path / "control.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["conversations"][1]["value"] for r in records] == corpus.CONTROL
    assert [r["conversations"][0]["value"] for r in records] == [
        f"Question {i}: {t}" for i, t in enumerate(corpus.CONTROL)
    ]
    assert report.redacted == Counter()


def test_redact_false_writes_the_conversations_as_they_are(tmp_path):
    report = export_dataset(planted_conversations(), "raw", tmp_path, redact=False)
    written = (tmp_path / "raw.jsonl").read_text(encoding="utf-8")
    assert corpus.AWS_ACCESS_KEY in written and corpus.EMAIL in written and "<API_KEY>" not in written
    assert report.redacted == Counter()
    assert "  redaction off (data.redact: false): secrets are written as they are" in report.lines()


def test_without_detect_secrets_the_export_stops_before_writing_and_names_the_fix(tmp_path, monkeypatch):
    for name in ("detect_secrets", "detect_secrets.plugins.private_key"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: finding and importing it fail
    redact._detectors.cache_clear()
    try:
        with pytest.raises(redact.RedactionError, match="pip install detect-secrets .*data.redact: false"):
            export_dataset(planted_conversations(), "none", tmp_path)
    finally:
        redact._detectors.cache_clear()
    assert list(tmp_path.iterdir()) == []
    export_dataset(planted_conversations(), "none", tmp_path, redact=False)  # the way out it names


def test_data_export_redacts_by_default_and_no_redact_keeps_the_text(tmp_path, capsys):
    import json

    from orchestrator.cli import main

    chats = tmp_path / "chats.jsonl"
    record = {
        "messages": [
            {"role": "user", "content": "mail me at jo.doe@example.org"},
            {"role": "assistant", "content": "ok"},
        ]
    }
    chats.write_text(json.dumps(record) + "\n")
    out = tmp_path / "out"
    assert main(["data", "export", "--file", str(chats), "--name", "a", "--dataset-dir", str(out)]) == 0
    assert "<EMAIL>" in (out / "a.jsonl").read_text() and "jo.doe" not in (out / "a.jsonl").read_text()
    args = ["data", "export", "--file", str(chats), "--name", "b", "--dataset-dir", str(out), "--no-redact"]
    assert main([*args, "--near-duplicates", "off"]) == 0
    assert "jo.doe@example.org" in (out / "b.jsonl").read_text()
    with pytest.raises(SystemExit) as info:
        main([*args, "--near-duplicates", "2"])
    assert info.value.code == 2 and "at most 1, or 'off'" in capsys.readouterr().err
