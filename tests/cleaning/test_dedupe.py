"""Exact and near duplicates: each removed one counted, the first seen kept, the same result every time."""

import json
import sys

import pytest

from orchestrator.conversations import Conversation, Message
from orchestrator.dataset import export_dataset
from orchestrator.errors import OrchestratorError

ANSWER = (
    "To read a large CSV file in pandas without running out of memory, pass chunksize to read_csv and "
    "process each chunk in turn; select only the columns you need with usecols, give compact dtypes such "
    "as category or int32, and write the partial results to parquet so the next step reads them quickly."
)


def chat(id: str, question: str, answer: str = ANSWER) -> Conversation:
    return Conversation(id=id, messages=[Message("user", question), Message("assistant", answer)], where=f"f:{id}")


def corpus() -> list[Conversation]:
    return [
        chat("a", "How do I read a huge CSV with pandas?"),
        chat("b", "How do I read a huge CSV with pandas?"),  # exact duplicate of a
        chat("c", "How do I read a huge CSV with pandas?", ANSWER.replace("quickly", "fast")),  # near duplicate
        chat("d", "What is a good name for a cat?", "Miso, Pixel or Biscuit are all popular cat names."),
    ]


def written(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_near_duplicates_are_dropped_and_counted_keeping_the_first(tmp_path):
    report = export_dataset(corpus(), "near", tmp_path)
    records = written(tmp_path / "near.jsonl")
    assert [r["conversations"][1]["value"] for r in records] == [ANSWER, corpus()[3].messages[1].content]
    assert (report.exact_duplicates, report.near_duplicates, report.written) == (1, 1, 2)
    assert report.skipped["near-duplicate conversation"] == 1 and report.examples["near-duplicate conversation"] == [
        "f:c"
    ]
    assert "  duplicates  1 exact, 1 near (MinHash similarity >= 0.9)" in report.lines()
    assert json.loads((tmp_path / "near.report.json").read_text())["duplicates"] == {"exact": 1, "near": 1}


def test_the_same_input_keeps_the_same_conversations(tmp_path):
    export_dataset(corpus() * 3, "one", tmp_path / "1")
    export_dataset(corpus() * 3, "one", tmp_path / "2")
    assert (tmp_path / "1" / "one.jsonl").read_bytes() == (tmp_path / "2" / "one.jsonl").read_bytes()


def test_near_duplicates_null_keeps_them(tmp_path):
    report = export_dataset(corpus(), "all", tmp_path, near_duplicates=None)
    assert (report.exact_duplicates, report.near_duplicates, report.written) == (1, 0, 3)
    assert "  duplicates  1 exact, near duplicates not looked for (data.near_duplicates: null)" in report.lines()


def test_a_lower_threshold_also_drops_looser_copies(tmp_path):
    looser = chat("e", "How can I load a huge CSV using pandas?", ANSWER.replace("parquet", "feather files"))
    strict = export_dataset([*corpus(), looser], "strict", tmp_path, near_duplicates=0.98)  # c is 0.967 alike
    loose = export_dataset([*corpus(), looser], "loose", tmp_path, near_duplicates=0.5)
    assert strict.near_duplicates == 0 and loose.near_duplicates == 2


def test_without_datasketch_the_export_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasketch", None)
    with pytest.raises(OrchestratorError, match="pip install datasketch .*data.near_duplicates: null"):
        export_dataset(corpus(), "none", tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert export_dataset(corpus(), "none", tmp_path, near_duplicates=None).written == 3


def test_among_thousands_of_chats_exactly_the_planted_near_copies_go(tmp_path):
    import random

    rng = random.Random(3)
    words = [f"w{i}" for i in range(5000)]
    chats = [chat(f"c{i}", f"question {i}", " ".join(rng.choices(words, k=80))) for i in range(3000)]
    copies = []
    for n, source in enumerate(rng.sample(chats, 5)):
        answer = source.messages[1].content.split()
        answer[rng.randrange(len(answer))] = "changed"  # one word of 80: about 0.93 alike
        copies.append(chat(f"copy{n}", source.messages[0].content, " ".join(answer)))
    rng.shuffle(copies)
    report = export_dataset([*chats, *copies], "many", tmp_path, redact=False)
    assert (report.near_duplicates, report.written) == (5, 3000)
    assert all(where.startswith("f:copy") for where in report.examples["near-duplicate conversation"])


def test_small_conversations_are_compared_exactly():
    from orchestrator.cleaning.dedupe import jaccard, signatures

    a = "one two three four five six seven eight nine ten"
    b = a.replace("ten", "eleven")  # 8 shingles, 7 shared of 9
    _, sketches, bounds = signatures([a, b])
    assert jaccard(sketches[bounds[0] : bounds[1]], sketches[bounds[1] : bounds[2]]) == 7 / 9


def test_a_texts_signature_does_not_depend_on_its_neighbours():
    from orchestrator.cleaning.dedupe import signatures

    text = "The quick brown fox jumps over the lazy dog, twice: the quick brown fox!"
    alone, alone_sketch, _ = signatures([text])
    crowd = ["filler words " * 50 * n for n in range(1, 40)] + [text]
    among, sketches, bounds = signatures(crowd)
    assert (among[-1] == alone[0]).all()
    assert (sketches[bounds[-2] : bounds[-1]] == alone_sketch).all()
