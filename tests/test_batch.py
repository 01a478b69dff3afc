"""`orchestrator batch`: the queue, its GPUs, its summary, reruns and bad input, through real
`orchestrator run` child processes (data-only recipes, a second or two each) and one batch that trains."""

import json
from pathlib import Path

import pytest
from stages.pipeline_support import recipe_text

from orchestrator.batch import child_env, load_batch, run_batch
from orchestrator.cli import main
from orchestrator.recipe import SHIPPED_ROOT


def data_recipe(workdir: Path, name: str, extra: str = "", source: str = "data/samples/conversations.jsonl") -> Path:
    path = workdir / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nmodel: {{name_or_path: tiny-qwen3, template: qwen3}}\nstages: [data]\n"
        f"data:\n  sources: [{{type: file, path: {source}}}]\n{extra}"
    )
    return path


def batch_file(workdir: Path, text: str, name: str = "batch") -> Path:
    path = workdir / f"{name}.yaml"
    path.write_text(text)
    return path


def summary(workdir: Path, stem: str = "batch") -> dict:
    return json.loads((workdir / "llama_factory_data" / "batches" / stem / "batch.json").read_text())


def test_a_sweep_is_the_product_of_its_values_each_run_named_from_them_with_the_overrides(workdir):
    data_recipe(workdir, "base", "ollama: {name: mine}\n")
    path = batch_file(
        workdir,
        "recipe: base.yaml\nsweep: {train.learning_rate: [1.0e-4, 5.0e-4], llamafactory.optim: [adamw_torch, sgd]}\n"
        "overrides: {train.max_steps: 3, data.near_duplicates: null}\n",
    )
    spec, runs, folder = load_batch(path)
    assert [r.name for r in runs] == [
        "base-learning_rate0.0001-optimadamw_torch",
        "base-learning_rate0.0001-optimsgd",
        "base-learning_rate0.0005-optimadamw_torch",
        "base-learning_rate0.0005-optimsgd",
    ]
    assert [(r.recipe.train.learning_rate, r.recipe.llamafactory["optim"]) for r in runs] == [
        (1e-4, "adamw_torch"),
        (1e-4, "sgd"),
        (5e-4, "adamw_torch"),
        (5e-4, "sgd"),
    ]
    assert {r.recipe.train.max_steps for r in runs} == {3} and {r.recipe.data.near_duplicates for r in runs} == {None}
    assert runs[1].recipe.ollama.name == "mine-learning_rate0.0001-optimsgd"  # each its own model in Ollama
    # Every path absolute, from the folder the batch runs in: a Ray worker runs elsewhere.
    assert runs[0].recipe.runs_dir == str(workdir / "llama_factory_data" / "runs")
    assert runs[0].recipe.data.sources[0].path == str(workdir / "data" / "samples" / "conversations.jsonl")
    assert runs[0].recipe.data.dataset_dir == str(workdir / "data")
    assert folder == workdir / "llama_factory_data" / "batches" / "batch"
    assert runs[0].recipe_file == folder / "recipes" / f"{runs[0].name}.yaml"


def test_gpus_are_shared_out_and_a_gpu_holds_one_run_at_a_time(workdir):
    recipes = [data_recipe(workdir, name, "train: {gpus: 1}\n").name for name in ("r1", "r2", "r3")]
    path = batch_file(workdir, f"recipes: {recipes}\n")
    result = run_batch(path, gpus=["0", "1"])  # two GPUs: three one-GPU runs, two at a time
    rows = result.rows
    assert [r["status"] for r in rows] == ["done"] * 3
    assert [r["where"] for r in rows[:2]] == ["GPU 0", "GPU 1"] and rows[2]["where"] in ("GPU 0", "GPU 1")
    holder = next(r for r in rows[:2] if r["where"] == rows[2]["where"])
    assert rows[2]["started"] >= holder["finished"]  # the third waited for its GPU to be free
    assert rows[1]["started"] < rows[0]["finished"]  # while two ran at once
    written = (result.folder / "recipes" / "r1.yaml").read_text()
    assert f"runs_dir: {workdir / 'llama_factory_data' / 'runs'}" in written
    manifest = json.loads((workdir / "llama_factory_data" / "runs" / "r2" / "manifest.json").read_text())
    assert manifest["recipe"] == str(result.folder / "recipes" / "r2.yaml")


def test_each_run_sees_only_its_own_gpus():
    env = child_env(["2", "3"], {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    assert env == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "2,3", "HIP_VISIBLE_DEVICES": "2,3"}
    assert child_env([], {"PATH": "/bin"})["CUDA_VISIBLE_DEVICES"] == ""  # a CPU run on a GPU machine


def test_a_failed_run_does_not_stop_the_others_and_a_rerun_retries_only_it(workdir, capsys):
    data_recipe(workdir, "good")
    data_recipe(workdir, "bad", source="data/later.jsonl")
    path = batch_file(workdir, "recipes: [bad.yaml, good.yaml]\n")
    assert main(["batch", str(path)]) == 1
    out = capsys.readouterr().out
    runs = {r["run"]: r for r in summary(workdir)["runs"]}
    assert runs["good"]["status"] == "done" and runs["bad"]["status"] == "failed"
    assert "later.jsonl" in runs["bad"]["error"] and runs["bad"]["log"].endswith("runs/bad/logs/orchestrator.log")
    md = (workdir / "llama_factory_data" / "batches" / "batch" / "batch.md").read_text()
    assert "| run | status | train loss | eval loss | duration | GGUF | Ollama name |" in md
    assert "| good | done | — | — |" in md and "| bad | failed: " in md
    assert "failed:  bad: " in out and "good" in out.split("summary:")[0]

    (workdir / "data" / "later.jsonl").write_bytes((workdir / "data" / "samples" / "conversations.jsonl").read_bytes())
    good_manifest = (workdir / "llama_factory_data" / "runs" / "good" / "manifest.json").stat().st_mtime_ns
    assert main(["batch", str(path)]) == 0
    runs = {r["run"]: r for r in summary(workdir)["runs"]}
    assert runs["good"]["status"] == "skipped" and runs["bad"]["status"] == "done"
    assert (workdir / "llama_factory_data" / "runs" / "good" / "manifest.json").stat().st_mtime_ns == good_manifest
    assert summary(workdir)["counts"] == {"done": 1, "skipped": 1, "failed": 0, "interrupted": 0}


@pytest.mark.parametrize(
    ("batch", "said"),
    [
        (
            "recipe: base.yaml\nsweep: {train.lerning_rate: [1]}\n",
            "no key train.lerning_rate: train has no 'lerning_rate'; did you mean 'train.learning_rate'?",
        ),
        (
            "recipe: base.yaml\noverrides: {trian.seed: 1}\n",
            "overrides: no key trian.seed: the recipe has no 'trian'; did you mean 'train'?",
        ),
        ("recipe: base.yaml\nsweep: {train.seed.x: [1]}\n", "train.seed is a value, not a section"),
        ("recipes: [base.yaml, base.yaml]\n", "two runs are named base"),
        ("recipes: [base.yaml]\noverrides: {train.gpus: 3}\n", "run base asks for 3 GPUs"),
        ("recipe: base.yaml\nsweep: {train.seed: []}\n", "sweep: train.seed has no values"),
        ("sweep: {train.seed: [1, 2]}\n", "sweep: needs recipe: BASE"),
        (
            "recipe: base.yaml\nmax_paralel: 2\n",
            "max_paralel: Extra inputs are not permitted; allowed: recipes, recipe",
        ),
        ("recipe: base.yaml\noverrides: {train.max_steps: -1}\n", "run base: 1 problem in the recipe"),
    ],
)
def test_bad_input_is_one_clear_error_before_anything_starts(workdir, capsys, monkeypatch, batch, said):
    import orchestrator.batch

    monkeypatch.setattr(orchestrator.batch, "local_gpus", lambda: ["0", "1"])  # two GPUs, as a GPU machine has
    data_recipe(workdir, "base", "hardware: auto\n")
    path = batch_file(workdir, batch)
    assert main(["batch", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and said in err and "Traceback" not in err
    assert not (workdir / "llama_factory_data").exists()  # no run folder, no batch folder


def test_passthrough_keys_are_accepted_below_llamafactory(workdir):
    data_recipe(workdir, "base")
    path = batch_file(workdir, "recipe: base.yaml\noverrides: {llamafactory.optim: sgd, llamafactory_export.x.y: 1}\n")
    _, runs, _ = load_batch(path)
    assert runs[0].recipe.llamafactory == {"optim": "sgd"} and runs[0].recipe.llamafactory_export == {"x": {"y": 1}}


def test_the_shipped_batch_names_its_runs_and_lists_of_recipes_beside_it(workdir):
    _, runs, folder = load_batch(SHIPPED_ROOT / "recipes" / "batches" / "quickstart-sweep.yaml")
    assert [(r.name, r.recipe.train.learning_rate) for r in runs] == [
        ("quickstart-learning_rate0.001", 1e-3),
        ("quickstart-learning_rate0.005", 5e-3),
    ]
    assert {r.recipe.train.num_train_epochs for r in runs} == {1}
    assert Path(runs[0].recipe.data.sources[0].path).is_file() and folder.name == "quickstart-sweep"


@pytest.mark.slow
def test_two_tiny_runs_train_at_once_and_the_summary_has_their_losses(workdir, tiny_model, capsys):
    for name, lr in (("t1", "1.0e-3"), ("t2", "5.0e-3")):
        (workdir / f"{name}.yaml").write_text(
            recipe_text(tiny_model, name=name).replace(
                "max_steps: 2", f"max_steps: 1, cutoff_len: 64, learning_rate: {lr}"
            )
        )
    path = batch_file(workdir, "recipes: [t1.yaml, t2.yaml]\nmax_parallel: 2\n")
    assert main(["batch", str(path)]) == 0
    out, err = capsys.readouterr()
    rows = summary(workdir)["runs"]
    assert [r["status"] for r in rows] == ["done", "done"] and all(r["where"] == "CPU" for r in rows)
    assert rows[1]["started"] < rows[0]["finished"]  # both at once
    for row in rows:
        logged = [
            json.loads(line)
            for line in (Path(row["run_dir"]) / "adapter" / "trainer_log.jsonl").read_text().splitlines()
        ]
        assert row["train_loss"] == pytest.approx([r["loss"] for r in logged if "loss" in r][-1], abs=1e-4)
        assert f"{row['run']}  CPU  done" in err
    assert out.splitlines()[0].split() == [
        "run",
        "status",
        "train",
        "loss",
        "eval",
        "loss",
        "duration",
        "GGUF",
        "Ollama",
        "name",
    ]


def test_the_live_view_says_which_run_is_where_with_its_step_and_loss():
    import io

    from rich.console import Console

    from orchestrator.progress import ConsoleReporter

    def row(run, where, status, stage="", step=None, loss=None):
        return {"run": run, "where": where, "status": status, "stage": stage, "step": step, "total": 10, "loss": loss}

    out = io.StringIO()
    rep = ConsoleReporter(Console(file=out, force_terminal=False, width=100, color_system=None))
    rep.batch([row("a", "GPU 0", "running", "train", 3, 1.23456), row("b", "", "queued")])
    rep.batch([row("a", "GPU 0", "running", "train", 3, 1.2), row("b", "", "queued")])  # nothing new
    rep.batch([row("a", "GPU 0", "done"), row("b", "GPU 0", "running", "data")])
    assert out.getvalue().splitlines() == [
        "  a  GPU 0  running  train  step 3/10  loss 1.2346",
        "  b  -  queued",
        "  a  GPU 0  done",
        "  b  GPU 0  running  data",
    ]
    live = io.StringIO()
    rep = ConsoleReporter(Console(file=live, force_terminal=True, width=100, color_system=None))
    rep.batch([row("a", "GPU 1", "running", "train", 7, 0.5)])
    rep.close()
    table = [line.split() for line in live.getvalue().replace("\x1b[?25l", "").splitlines()]
    assert table[:2] == [
        ["run", "on", "status", "stage", "step", "loss"],
        ["a", "GPU", "1", "running", "train", "7/10", "0.5000"],
    ]
