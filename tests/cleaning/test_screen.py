"""The numpy screen clears only texts no redaction rule can change, and clears ordinary prose."""

import random
from collections import Counter

import orjson
import pytest
import secrets_corpus as corpus

from orchestrator.cleaning import redact
from orchestrator.cleaning import screen as screen_module
from orchestrator.cleaning.screen import screen, screen_json_lines


@pytest.fixture(autouse=True, params=["re2", "numpy"])
def engine(request, monkeypatch):
    """Every test runs against both ways of screening: one RE2 pass, and numpy's passes without RE2."""
    if request.param == "numpy":
        monkeypatch.setattr(screen_module, "_compiled", lambda *pattern: None)
    else:
        assert screen_module._compiled() is not None  # google-re2 is a dependency
    return request.param


PROSE = (
    "To read a large CSV file in pandas without running out of memory, give chunksize to read_csv and "
    "process each chunk in turn. The meeting moved to 3 pm on 12 May 2024; version 2.1.3 fixed it."
)


def changed_by_redaction(text: str) -> bool:
    """Whether the full rules (every detect-secrets plugin and our patterns) change ``text``."""
    counts: Counter = Counter()
    unkeyed = redact._redact_private_keys(text, counts)
    return "".join(redact._redact_line(line, counts, None) for line in unkeyed.splitlines(True)) != text


def test_every_planted_secret_and_every_text_holding_one_is_flagged():
    texts = [corpus.PROSE, corpus.CODE, corpus.THINKING, corpus.SYSTEM, corpus.TOOL_RESULT]
    assert all(changed_by_redaction(t) for t in texts) and all(screen(texts))
    alone = [value for value in corpus.PLANTED if changed_by_redaction(value)]  # some are secrets only in context
    assert len(alone) > 10 and all(screen(alone))


def test_ordinary_prose_is_cleared_and_a_secret_among_many_texts_is_still_found():
    texts = [PROSE] * 300
    texts[137] = PROSE + " my key: " + corpus.OPENAI_PLAIN
    flags = screen(texts)
    assert flags[137] and sum(flags) == 1
    assert not changed_by_redaction(PROSE)


def test_no_text_the_rules_would_change_is_ever_cleared():
    """Random texts built from pieces of secrets, near misses and prose: whatever the full rules change,
    the screen flags (the converse is not required: a flag only costs the full check)."""
    rng = random.Random(7)
    pieces = [
        *corpus.PLANTED,
        *(value[: rng.randint(3, len(value))] for value in corpus.PLANTED),
        'password = "hunter2"',
        "API_KEY='abc'",
        "secret: x",
        "Pwd=1",
        'contraseña="abc"',
        "a@b.co",
        "user:pw@host",
        "https://u:p@h.example.com",
        "+1 415 555 0100",
        "555.123.4567",
        "AKCp8abcdefghij",
        "APBabcdefgh1",
        "eyJhIjoxfQ.e30.",
        "xoxp-1-2-abc",
        "//r.example.com/:_authToken=npm_x",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "PuTTY-User-Key-File-2: ssh-rsa",
        "the",
        "model",
        "answers",
        "42",
        "(555)",
        "2024-05-12",
        "v1.2.3",
        "\n",
        " ",
        '"',
        "'",
        "=",
        ":",
    ]
    for _ in range(1500):
        text = "".join(rng.choice(pieces) + rng.choice(["", " ", "\n", '"', "="]) for _ in range(rng.randint(1, 6)))
        if changed_by_redaction(text):
            assert screen([PROSE, text, PROSE])[1] and screen([text]) == [True], text


def test_redaction_with_the_screen_equals_redaction_without_it(monkeypatch):
    texts = [corpus.PROSE, corpus.CODE, corpus.THINKING, corpus.SYSTEM, PROSE]
    screened = [redact.redact_text(t, Counter()) for t in texts]
    monkeypatch.setattr(redact, "screen", lambda lines: [True] * len(lines))
    assert screened == [redact.redact_text(t, Counter()) for t in texts]


def test_texts_written_as_json_lines_are_flagged_wherever_their_texts_are(engine):
    """The plain-record short cut screens the JSONL lines it writes: escapes (newlines, quotes, control
    characters) stretch a text, and still every line holding a text the rules would change is flagged."""
    rng = random.Random(3)
    pieces = ["555", "123", "4567", "\n", "\t", '"', "\\", "\x01", " ", "-", "(", ")", "+1", "key", "a@b.co", "x" * 19]
    lines, changed = [], []
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        record = {"conversations": [{"from": "human", "value": text}, {"from": "gpt", "value": "ok"}]}
        lines.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        changed.append(changed_by_redaction(text))
    flags = screen_json_lines(lines)
    if engine == "numpy":
        assert flags is None  # then the texts themselves are screened
        return
    assert sum(changed) > 300 and all(flag for flag, hit in zip(flags, changed, strict=True) if hit)
    assert not all(flags)  # and it still clears something
