"""data.eval_split: a held-out dataset chosen by each conversation's id, disjoint from the train file,
the same on every export, and stable when chats are added."""

import json

import pytest

from orchestrator.cleaning.split import held_out, split_hash
from orchestrator.conversations import Conversation, Message
from orchestrator.dataset import export_dataset
from orchestrator.errors import RecipeError, UsageError
from orchestrator.hardware import Hardware
from orchestrator.llamafactory import train_config
from orchestrator.recipe import validate_recipe


def chats(n: int, start: int = 0) -> list[Conversation]:
    return [
        Conversation(id=f"chat-{i}", messages=[Message("user", f"question {i}"), Message("assistant", f"answer {i}")])
        for i in range(start, start + n)
    ]


def questions(path) -> set[str]:
    return {json.loads(line)["conversations"][0]["value"] for line in path.read_text().splitlines()}


def export(tmp_path, items, eval_split):
    return export_dataset(items, "d", tmp_path, eval_split=eval_split, near_duplicates=None, redact=False)


@pytest.mark.parametrize("eval_split", [0.25, 7])
def test_the_split_is_disjoint_complete_and_registered(tmp_path, eval_split):
    report = export(tmp_path, chats(40), eval_split)
    train, held = questions(tmp_path / "d.jsonl"), questions(tmp_path / "d_eval.jsonl")
    assert not train & held and len(train | held) == 40 == report.written
    assert report.eval_written == len(held) and 0 < len(held) < 40
    if eval_split == 7:
        smallest = sorted(range(40), key=lambda i: split_hash(f"chat-{i}"))[:7]
        assert held == {f"question {i}" for i in smallest}
    else:
        assert held == {f"question {i}" for i in range(40) if held_out(f"chat-{i}", 0.25)}
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["d"]["file_name"] == "d.jsonl" and info["d_eval"]["file_name"] == "d_eval.jsonl"
    saved = json.loads((tmp_path / "d.report.json").read_text())
    assert saved["eval"] == len(held) and saved["eval_dataset"].endswith("d_eval.jsonl")
    assert any("held out for evaluation" in line for line in report.lines())


@pytest.mark.parametrize("eval_split", [0.3, 5])
def test_the_split_is_deterministic_and_old_chats_keep_their_side(tmp_path, eval_split):
    export(tmp_path / "a", chats(30), eval_split)
    export(tmp_path / "b", chats(30)[::-1], eval_split)  # another order, the same split
    assert questions(tmp_path / "a" / "d_eval.jsonl") == questions(tmp_path / "b" / "d_eval.jsonl")
    export(tmp_path / "c", chats(30) + chats(30, start=30), eval_split)
    before_train, before_held = questions(tmp_path / "a" / "d.jsonl"), questions(tmp_path / "a" / "d_eval.jsonl")
    after_train, after_held = questions(tmp_path / "c" / "d.jsonl"), questions(tmp_path / "c" / "d_eval.jsonl")
    if eval_split < 1:
        assert before_held <= after_held and before_train <= after_train  # nobody crosses over
    else:
        assert before_train <= after_train  # a train chat never becomes an eval one
        assert after_held - before_held <= {f"question {i}" for i in range(30, 60)}  # only new chats come in


def test_a_split_that_leaves_a_side_empty_is_refused_and_writes_nothing(tmp_path):
    with pytest.raises(UsageError, match="holds out none of the 2"):
        export(tmp_path, chats(2), 0.0001)
    with pytest.raises(UsageError, match="leaving none to train on"):
        export(tmp_path, chats(2), 3)
    assert not (tmp_path / "d.jsonl").exists() and not (tmp_path / "dataset_info.json").exists()


def recipe(**data):
    return {"name": "r", "model": {"name_or_path": "m"}, "data": {"sources": [{"type": "file", "path": "x"}], **data}}


def test_the_recipe_checks_eval_split():
    assert validate_recipe(recipe(eval_split=3)).data.eval_split == 3
    assert validate_recipe(recipe(eval_split=0.1)).data.eval_split == 0.1
    with pytest.raises(RecipeError, match="whole count"):
        validate_recipe(recipe(eval_split=2.5))
    with pytest.raises(RecipeError, match="eval_split"):
        validate_recipe(recipe(eval_split=-1))
    both = {**recipe(eval_split=0.1), "train": {"val_size": 0.1}}
    with pytest.raises(RecipeError, match="eval_split and train.val_size both"):
        validate_recipe(both)


def test_the_train_config_names_the_eval_dataset(tmp_path):
    config = train_config(
        validate_recipe(recipe(eval_split=0.1)),
        Hardware("cpu"),
        model_path="m",
        dataset_dir=tmp_path,
        output_dir=tmp_path / "out",
    )
    assert config["eval_dataset"] == "r_eval" and config["eval_strategy"] == "steps" and "val_size" not in config
    assert config["per_device_eval_batch_size"] == 1 and config["eval_steps"] == 500
