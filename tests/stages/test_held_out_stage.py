"""A run with data.eval_split: the data stage writes the held-out dataset and the train stage hands it to
LLaMA-Factory as eval_dataset (with the fake CLI)."""

import json

import yaml
from pipeline_support import recipe_text

from orchestrator.cli import main


def test_a_run_trains_with_the_held_out_dataset(workdir, fake_cli, local_model, capsys):
    (workdir / "r.yaml").write_text(recipe_text(local_model).replace("data:\n", "data:\n  eval_split: 4\n"))
    assert main(["run", str(workdir / "r.yaml")]) == 0
    run = workdir / "llama_factory_data" / "runs" / "t"
    config = yaml.safe_load((run / "train.yaml").read_text())
    assert config["eval_dataset"] == "t_eval" and config["eval_strategy"] == "steps"
    assert len((workdir / "data" / "t_eval.jsonl").read_text().splitlines()) == 4
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages["data"]["details"]["eval"] == 4 and stages["data"]["details"]["written"] == 40
    assert stages["train"]["status"] == "done"
    shown = capsys.readouterr()
    assert "4 conversations of the 40 held out for evaluation" in shown.out + shown.err
