"""Open WebUI regenerations and thumbs up/down become preference pairs, exported as a LLaMA-Factory ranking
dataset (data.preferences), and train.stage: dpo trains on it."""

import json
import sqlite3

import pytest

from orchestrator.dataset import export_dataset
from orchestrator.errors import RecipeError, UsageError
from orchestrator.hardware import Hardware
from orchestrator.llamafactory import train_config
from orchestrator.recipe import validate_recipe
from orchestrator.sources.open_webui import read_open_webui


def node(mid, parent, role, content, rating=None):
    extra = {"annotation": {"rating": rating}} if rating is not None else {}
    return {"id": mid, "parentId": parent, "childrenIds": [], "role": role, "content": content, **extra}


def webui_chat(chat_id, nodes, current):
    tree = {n["id"]: n for n in nodes}
    for n in nodes:
        if n["parentId"]:
            tree[n["parentId"]]["childrenIds"].append(n["id"])
    chat = {"id": chat_id, "title": "t", "system": "Be brief.", "history": {"currentId": current, "messages": tree}}
    return {"id": chat_id, "title": "t", "chat": chat, "created_at": 1_740_000_000}


def rated_export(path, chats=3):
    """Per chat: u1 -> a (kept, unrated) | b (not kept); a -> u2 -> c (rated up) | d (rated down, kept) | e."""
    items = []
    for i in range(chats):
        nodes = [
            node("u1", None, "user", f"Question {i}?"),
            node("a", "u1", "assistant", f"Kept answer {i}."),
            node("b", "u1", "assistant", f"Other answer {i}."),
            node("u2", "a", "user", f"Follow-up {i}?"),
            node("c", "u2", "assistant", f"Good answer {i}.", rating=1),
            node("d", "u2", "assistant", f"Bad answer {i}.", rating=-1),
            node("e", "u2", "assistant", f"Plain answer {i}."),
        ]
        items.append(webui_chat(f"chat-{i}", nodes, current="d"))
    path.write_text(json.dumps(items))
    return path


def test_siblings_become_pairs_by_rating_then_by_the_kept_answer(tmp_path):
    (conv,) = list(read_open_webui(rated_export(tmp_path / "export.json", chats=1)))
    found = {(p.chosen.content, p.rejected.content) for p in conv.preferences}
    # c up beats d down and unrated e; e unrated beats d down although d is kept; a kept beats b
    assert found == {
        ("Good answer 0.", "Bad answer 0."),
        ("Good answer 0.", "Plain answer 0."),
        ("Plain answer 0.", "Bad answer 0."),
        ("Kept answer 0.", "Other answer 0."),
    }
    first = next(p for p in conv.preferences if p.chosen.content == "Kept answer 0.")
    assert [(m.role, m.content) for m in first.prompt] == [("system", "Be brief."), ("user", "Question 0?")]
    deep = next(p for p in conv.preferences if p.rejected.content == "Plain answer 0.")
    assert [m.content for m in deep.prompt] == ["Be brief.", "Question 0?", "Kept answer 0.", "Follow-up 0?"]


def test_the_pairs_are_a_ranking_dataset_llamafactory_reads(tmp_path):
    source = read_open_webui(rated_export(tmp_path / "export.json"))
    report = export_dataset(source, "d", tmp_path / "data", preferences=True, redact=False, near_duplicates=None)
    assert report.written == 3 and report.pairs == 12
    info = json.loads((tmp_path / "data" / "dataset_info.json").read_text())
    assert info["d_pref"]["ranking"] is True and info["d_pref"]["columns"]["chosen"] == "chosen"
    records = [json.loads(line) for line in (tmp_path / "data" / "d_pref.jsonl").read_text().splitlines()]
    assert len(records) == 12
    for record in records:
        assert len(record["conversations"]) % 2 == 1 and record["conversations"][-1]["from"] == "human"
        assert record["chosen"]["from"] == record["rejected"]["from"] == "gpt"
        assert record["system"] == "Be brief."
    # LLaMA-Factory's own converter turns every record into a prompt and two responses
    from llamafactory.data.converter import get_dataset_converter
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.hparams import DataArguments

    args = DataArguments(dataset_dir=str(tmp_path / "data"), template="qwen3")
    (attr,) = get_dataset_list(["d_pref"], str(tmp_path / "data"))
    convert = get_dataset_converter("sharegpt", attr, args)
    for record in records:
        out = convert(record)
        assert len(out["_prompt"]) == len(record["conversations"]) and len(out["_response"]) == 2
    saved = json.loads((tmp_path / "data" / "d.report.json").read_text())
    assert saved["pairs"] == 12 and saved["pref_dataset"].endswith("d_pref.jsonl")
    assert any("12 preference pairs" in line for line in report.lines())


def test_no_pair_at_all_is_a_one_line_error(tmp_path):
    items = [webui_chat("c", [node("u1", None, "user", "Hi"), node("a", "u1", "assistant", "Hello")], "a")]
    (tmp_path / "export.json").write_text(json.dumps(items))
    with pytest.raises(UsageError, match="holds a usable preference pair") as caught:
        export_dataset(read_open_webui(tmp_path / "export.json"), "d", tmp_path / "data", preferences=True)
    assert "\n" not in str(caught.value) and not (tmp_path / "data" / "d_pref.jsonl").exists()


def recipe(train=None, sources=None, **data):
    sources = sources or [{"type": "open_webui", "path": "x.json"}]
    return {"name": "r", "model": {"name_or_path": "m"}, "data": {"sources": sources, **data}, "train": train or {}}


def test_the_recipe_checks_dpo_and_preferences():
    with pytest.raises(RecipeError, match="train.stage: dpo trains on preference pairs"):
        validate_recipe(recipe({"stage": "dpo"}))
    with pytest.raises(RecipeError, match="needs an open_webui source"):
        validate_recipe(recipe(sources=[{"type": "file", "path": "x"}], preferences=True))
    with pytest.raises(RecipeError, match="cannot evaluate on data.eval_split"):
        validate_recipe(recipe({"stage": "dpo"}, preferences=True, eval_split=2))
    with pytest.raises(RecipeError, match="set train.stage"):
        validate_recipe({**recipe(), "llamafactory": {"stage": "dpo"}})


def test_the_dpo_config_trains_the_pairs(tmp_path):
    recipe_ = validate_recipe(recipe({"stage": "dpo", "pref_beta": 0.2}, preferences=True))
    config = train_config(recipe_, Hardware("cpu"), model_path="m", dataset_dir=tmp_path, output_dir=tmp_path / "o")
    assert (config["stage"], config["dataset"], config["pref_beta"]) == ("dpo", "r_pref", 0.2)
    assert config["pref_loss"] == "sigmoid" and config["finetuning_type"] == "lora"
    sft = train_config(
        validate_recipe(recipe()), Hardware("cpu"), model_path="m", dataset_dir=tmp_path, output_dir=tmp_path
    )
    assert sft["stage"] == "sft" and "pref_beta" not in sft


def feedback_chats():
    """f: b rated up only in the feedback table beats the kept a. w: c rated down on the message and up in
    the table (the message wins) loses to d. s: the kept e rated down in the table ("-1", a string) loses to g."""
    chats = [
        webui_chat(
            "f",
            [
                node("u", None, "user", "F?"),
                node("a", "u", "assistant", "F kept."),
                node("b", "u", "assistant", "F liked."),
            ],
            "a",
        ),
        webui_chat(
            "w",
            [
                node("u", None, "user", "W?"),
                node("c", "u", "assistant", "W kept.", rating=-1),
                node("d", "u", "assistant", "W other."),
            ],
            "c",
        ),
        webui_chat(
            "s",
            [
                node("u", None, "user", "S?"),
                node("e", "u", "assistant", "S kept."),
                node("g", "u", "assistant", "S other."),
            ],
            "e",
        ),
    ]
    return [(item["id"], json.dumps(item["chat"]), item["created_at"]) for item in chats]


def rated(chat_id, message_id, rating, **extra):
    data = {"rating": rating, "model_id": "qwen3:4b", "sibling_model_ids": None, "reason": "", "comment": ""}
    return {"data": data, "meta": {"arena": False, "chat_id": chat_id, "message_id": message_id}, **extra}


def pairs_of(path):
    return {
        conv.id: {(p.chosen.content, p.rejected.content) for p in conv.preferences}
        for conv in read_open_webui(path)
        if hasattr(conv, "preferences")
    }


def test_ratings_kept_only_in_the_feedback_table_make_pairs(tmp_path):
    from source_helpers import build_webui_db, file_states

    feedback = [
        {**rated("f", "b", 1), "data": json.dumps(json.dumps({"rating": 1}))},  # JSON saved twice over
        rated("w", "c", 1),  # the message's own rating (-1) wins
        rated("s", "e", "-1"),
        rated("s", "e", 1, updated_at=1),  # an older rating of e, changed since
        rated("f", "a", 0),  # 0 is neither thumb: a stays unrated
        rated("s", "g", -1, type="note"),  # another kind of feedback than a rating
        rated("gone", "x", 1),  # a chat that was deleted
        {"data": "{not json", "meta": {"chat_id": "s", "message_id": "g"}},
        {"data": {"rating": 1}, "meta": {"chat_id": "s"}},  # no message id
    ]
    path = build_webui_db(tmp_path / "webui.db", feedback_chats(), feedback)
    before = file_states(path)

    assert pairs_of(path) == {
        "f": {("F liked.", "F kept.")},
        "w": {("W other.", "W kept.")},
        "s": {("S other.", "S kept.")},
    }
    report = export_dataset(read_open_webui(path), "d", tmp_path / "data", preferences=True, redact=False)
    assert (report.read, report.written, report.pairs) == (3, 3, 3)
    assert file_states(path) == before

    # Without the table (older versions) or with one whose columns are not these: the kept answers win.
    by_kept = {"f": {("F kept.", "F liked.")}, "w": {("W other.", "W kept.")}, "s": {("S kept.", "S other.")}}
    assert pairs_of(build_webui_db(tmp_path / "old.db", feedback_chats())) == by_kept
    odd = build_webui_db(tmp_path / "odd.db", feedback_chats())
    db = sqlite3.connect(odd)
    db.execute("CREATE TABLE feedback (id TEXT PRIMARY KEY, data JSON)")  # no meta column
    db.execute("INSERT INTO feedback VALUES ('1', ?)", (json.dumps({"rating": 1}),))
    db.commit()
    db.close()
    assert pairs_of(odd) == by_kept
