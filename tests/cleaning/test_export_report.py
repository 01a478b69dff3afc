"""The export's table and its JSON copy beside the dataset; the data stage passes the recipe's choices."""

import json
from types import SimpleNamespace

import secrets_corpus as corpus

from orchestrator.conversations import Conversation, Message
from orchestrator.dataset import export_dataset
from orchestrator.recipe import validate_recipe
from orchestrator.stages import data as data_stage


def chats() -> list[Conversation]:
    secret = Conversation(id="s", messages=[Message("user", corpus.PROSE), Message("assistant", "Rotate them.")])
    plain = Conversation(id="p", messages=[Message("user", "Hi"), Message("assistant", "Hello!")])
    return [secret, plain, plain]


def test_the_table_ends_the_export_and_its_json_lies_beside_the_dataset(tmp_path):
    report = export_dataset(chats(), "mine", tmp_path / "d", cutoff_len=64)
    lines = report.lines()
    assert lines[0] == "dataset mine: 3 conversations read, 2 written, 1 skipped"
    kinds = [line.split()[0] for line in lines[1:]]
    assert kinds == [
        "skipped",
        "redacted",
        "redacted",
        "redacted",
        "redacted",
        "duplicates",
        "tokens",
        "over",
        "warning:",
    ] + [
        "wrote",
        "wrote",
    ]
    assert lines[-1] == f"  wrote this report as {tmp_path / 'd' / 'mine.report.json'}"
    saved = json.loads((tmp_path / "d" / "mine.report.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(report.to_dict()))
    assert saved["redacted"] == {"API_KEY": 1, "EMAIL": 2, "PHONE": 3, "TOKEN": 1}
    assert saved["duplicates"] == {"exact": 1, "near": 0} and saved["tokens"]["cutoff_len"] == 64
    assert corpus.EMAIL not in json.dumps(saved) and "Rotate them" not in json.dumps(saved)


def test_the_data_stage_passes_the_recipes_cleaning_choices(tmp_path):
    src = tmp_path / "chats.jsonl"
    src.write_text(
        "\n".join(
            json.dumps({"messages": [{"role": "user", "content": corpus.PROSE}, {"role": "assistant", "content": a}]})
            for a in ("Rotate them.", "Rotate them!")
        )
        + "\n",
        encoding="utf-8",
    )
    recipe = validate_recipe(
        {
            "name": "r",
            "model": {"name_or_path": "tiny-qwen3", "template": "qwen3_nothink"},
            "data": {"sources": [{"type": "file", "path": str(src)}], "redact": False, "near_duplicates": None},
            "train": {"cutoff_len": 32},
        }
    )
    infos = []
    run = SimpleNamespace(recipe=recipe, dataset_dir=tmp_path / "d", reporter=SimpleNamespace(info=infos.append))
    result = data_stage.run(run)
    written = (tmp_path / "d" / f"{recipe.dataset_name}.jsonl").read_text(encoding="utf-8")
    assert corpus.AWS_ACCESS_KEY in written  # redact: false
    assert result.details["duplicates"] == {"exact": 0, "near": 0} and result.details["near_threshold"] is None
    assert result.details["tokens"]["cutoff_len"] == 32 and result.details["template"] == "qwen3_nothink"
    assert result.outputs["report"] == str(tmp_path / "d" / f"{recipe.dataset_name}.report.json")
    assert infos[-1] == f"  wrote this report as {result.outputs['report']}"
    longer = recipe.model_copy(update={"train": recipe.train.model_copy(update={"cutoff_len": 64})})
    assert data_stage.fingerprint(SimpleNamespace(recipe=longer)) != data_stage.fingerprint(run)
