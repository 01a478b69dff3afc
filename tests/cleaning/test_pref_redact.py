"""Preference pairs are cleaned as conversations are: no planted secret reaches <name>_pref.jsonl."""

import json

import secrets_corpus as corpus

from orchestrator.dataset import export_dataset
from orchestrator.sources.open_webui import read_open_webui


def test_no_planted_secret_reaches_the_preference_pairs(tmp_path):
    nodes = [
        {"id": "u", "parentId": None, "role": "user", "content": corpus.PROSE},
        {"id": "a", "parentId": "u", "role": "assistant", "content": corpus.CODE, "annotation": {"rating": 1}},
        {"id": "b", "parentId": "u", "role": "assistant", "content": "No idea.", "annotation": {"rating": -1}},
    ]
    history = {"currentId": "b", "messages": {n["id"]: n for n in nodes}}
    chat = {"id": "c", "system": corpus.SYSTEM, "history": history}
    (tmp_path / "export.json").write_text(json.dumps([{"id": "c", "chat": chat}]))
    report = export_dataset(read_open_webui(tmp_path / "export.json"), "d", tmp_path / "data", preferences=True)
    assert report.pairs == 1
    (record,) = [json.loads(line) for line in (tmp_path / "data" / "d_pref.jsonl").read_text().splitlines()]
    assert record["chosen"]["value"] != corpus.CODE and record["rejected"]["value"] == "No idea."
    written = json.dumps(record, ensure_ascii=False)
    for value in corpus.PLANTED:
        assert value not in written, value
