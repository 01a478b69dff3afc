"""The eval stage: held-out loss and answers of the base and the tuned model from real llamafactory-cli
launches on the tiny model, its skip without held-out chats, and the served model's answers to the same
prompts (against the Ollama emulator)."""

import contextlib
import io
import json
import math
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from ollama_emulator import OllamaEmulator, Reply
from support import SAMPLES

from orchestrator.cli import main
from orchestrator.context import open_run
from orchestrator.hardware import Hardware
from orchestrator.llamafactory import SIMILARITY_METRICS
from orchestrator.recipe import SHIPPED_DIR
from orchestrator.stages import eval as eval_stage
from orchestrator.stages import register

GPU = Hardware("cuda", ["NVIDIA H100"], [80.0], bf16=True)


def recipe_text(tmp, model, stages="[data, train, merge, eval]", eval_split=3, extra=""):
    return (
        f"name: t\nmodel: {{name_or_path: {model}, template: qwen3}}\nhardware: cpu\nstages: {stages}\n"
        f"runs_dir: {tmp / 'runs'}\n"
        f"data:\n  dataset_dir: {tmp / 'data'}\n  eval_split: {eval_split}\n"
        f"  sources: [{{type: file, path: {SAMPLES}}}]\n"
        "train: {max_steps: 2, logging_steps: 1, cutoff_len: 256, per_device_train_batch_size: 2,"
        " gradient_accumulation_steps: 1}\n"
        "eval: {samples: 2, max_new_tokens: 8}\n" + extra
    )


@dataclass
class Evaluated:
    tmp: Path
    recipe: Path
    run: Path
    shown: str  # what the run printed


@pytest.fixture(scope="module")
def evaluated(tiny_model, tmp_path_factory) -> Evaluated:
    """One real data -> train -> merge -> eval run on the tiny model."""
    tmp = tmp_path_factory.mktemp("eval-run")
    recipe = tmp / "r.yaml"
    recipe.write_text(recipe_text(tmp, tiny_model, eval_split=10))  # 5 eval batches: LF logs every fifth
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown), contextlib.redirect_stderr(shown):
        code = main(["run", str(recipe)])
    assert code == 0, shown.getvalue()
    return Evaluated(tmp, recipe, tmp / "runs" / "t", shown.getvalue())


@pytest.mark.slow
def test_the_base_and_the_tuned_model_are_scored_on_the_held_out_chats(evaluated):
    tmp, run = evaluated.tmp, evaluated.run
    results = json.loads((run / "eval" / "results.json").read_text())
    assert results["skipped"] is None and results["dataset"] == "t_eval" and results["conversations"] == 10
    for side, model in (("base", None), ("tuned", str(run / "merged"))):
        score = results[side]
        assert math.isfinite(score["eval_loss"]) and score["perplexity"] == pytest.approx(math.exp(score["eval_loss"]))
        assert set(score["metrics"]) == set(SIMILARITY_METRICS)
        assert model is None or score["model"] == model
    assert results["base"]["eval_loss"] != results["tuned"]["eval_loss"]  # two models, really
    held_out = [json.loads(line) for line in (tmp / "data" / "t_eval.jsonl").read_text().splitlines()]
    answers = results["answers"]
    assert len(answers) == 2  # eval.samples, fewer than the 10 held out
    for answer, record in zip(answers, held_out, strict=False):
        assert answer["reference"] == record["conversations"][-1]["value"] != ""
        assert answer["messages"][-1] == {"role": "user", "content": record["conversations"][-2]["value"]}
        assert isinstance(answer["base"], str) and isinstance(answer["tuned"], str)
    assert [a["id"] for a in answers] == ["t_eval.jsonl:1", "t_eval.jsonl:2"]
    # The launches' logs are in logs/, their configs in eval/; the user's data folder got nothing of the eval's.
    assert sorted(p.name for p in (run / "logs").glob("eval-*.log")) == [
        f"eval-{side}-{kind}.log" for side in ("base", "tuned") for kind in ("loss", "predict")
    ]
    assert set(json.loads((tmp / "data" / "dataset_info.json").read_text())) == {"t", "t_eval"}
    assert not (run / "cache" / "datasets").exists()  # the tokenized chats are not kept
    manifest = json.loads((run / "manifest.json").read_text())["stages"]["eval"]
    assert manifest["status"] == "done" and manifest["details"]["answers"] == 2
    assert manifest["details"]["tuned_eval_loss"] == results["tuned"]["eval_loss"]


@pytest.mark.slow
def test_a_rerun_with_nothing_changed_skips_the_stage(evaluated, capsys):
    logs = {p: p.stat().st_mtime_ns for p in (evaluated.run / "logs").glob("eval-*.log")}
    assert main(["run", str(evaluated.recipe)]) == 0
    err = capsys.readouterr().err
    assert "eval   skipped already done with the same inputs" in err
    assert {p: p.stat().st_mtime_ns for p in logs} == logs


@pytest.mark.slow
def test_the_evaluation_shows_its_steps_as_training_does(evaluated):
    # In a log each step LLaMA-Factory reports is one line (every fifth batch of an eval-only launch).
    shown = evaluated.shown.split("evaluating the base model", 1)[1]
    assert "  step 5/5  loss -  elapsed " in shown and " eta " in shown
    assert "step 0/" not in shown  # the record of the metrics that ends a launch is no step


@pytest.mark.slow
def test_no_message_text_reaches_the_console_or_the_manifest(evaluated):
    results = json.loads((evaluated.run / "eval" / "results.json").read_text())
    texts = [results["answers"][0]["reference"][:40], results["answers"][0]["messages"][-1]["content"][:40]]
    manifest = (evaluated.run / "manifest.json").read_text()
    assert "held-out loss on 10 conversations: base " in evaluated.shown
    assert not any(text in evaluated.shown or text in manifest for text in texts)


def test_without_held_out_chats_the_stage_is_skipped_with_the_reason(tmp_path, local_model, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(tmp_path, local_model, stages="[eval]", eval_split=0))
    assert main(["run", str(recipe)]) == 0  # no llamafactory-cli: the local model is only a folder
    results = json.loads((tmp_path / "runs" / "t" / "eval" / "results.json").read_text())
    assert results == {"skipped": eval_stage.NO_SPLIT, "dataset": "t_eval"} and "data.eval_split" in results["skipped"]
    assert f"eval skipped: {eval_stage.NO_SPLIT}" in capsys.readouterr().err
    stage = json.loads((tmp_path / "runs" / "t" / "manifest.json").read_text())["stages"]["eval"]
    assert stage["status"] == "done" and stage["details"] == {"skipped": eval_stage.NO_SPLIT}
    # eval_split set but the held-out file empty: skipped too, naming the key.
    (tmp_path / "empty_eval.jsonl").write_text("")
    configs = {"base": {"loss": {"eval_dataset": "empty_eval"}}}
    result = eval_stage.evaluate(configs, tmp_path / "empty_eval.jsonl", tmp_path / "runs" / "t")
    assert "data.eval_split" in result.skipped and result.to_dict() == {
        "skipped": result.skipped,
        "dataset": "empty_eval",
    }


def test_llamafactory_parses_the_eval_configs(monkeypatch, tmp_path):
    import transformers.training_args as targs
    from llamafactory.hparams import get_train_args

    monkeypatch.chdir(tmp_path)  # the shipped recipes' run folders land here, not in the checkout
    monkeypatch.setattr(targs, "is_torch_bf16_gpu_available", lambda: True)
    for name, hw in (("quickstart", Hardware("cpu")), ("qwen3-8b-qlora-cuda", GPU), ("qwen3-4b-adapter-cuda", GPU)):
        ctx = open_run(SHIPPED_DIR / f"{name}.yaml", hardware=hw)
        for side, kinds in eval_stage.configs(ctx).items():
            loss_args = get_train_args(dict(kinds["loss"]))
            predict_args = get_train_args(dict(kinds["predict"]))
            training, generating = predict_args[2], predict_args[4]
            assert loss_args[2].do_eval and not loss_args[2].predict_with_generate and not loss_args[2].do_train
            assert training.do_predict and training.predict_with_generate and not generating.do_sample
            assert generating.max_new_tokens == ctx.recipe.eval.max_new_tokens
            assert loss_args[0].quantization_bit == (4 if ctx.recipe.method == "qlora" else None)
            adapter = predict_args[0].adapter_name_or_path
            assert adapter == ([str(ctx.adapter_dir)] if side == "tuned" and "adapter" in name else None)


# -- the served model's answers ------------------------------------------------------------------------

PROMPTS = [
    [{"role": "user", "content": "first"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "<think>\ngreet back\n</think>\n\nHello!"},
        {"role": "user", "content": "second"},
    ],
    [{"role": "user", "content": "third"}],
]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def evaluated_run(tmp_path, local_model):
    """A run whose eval/results.json holds three answered prompts (written as the stage writes it)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(tmp_path, local_model))
    ctx = open_run(recipe, hardware=Hardware("cpu"))
    answers = [
        {"id": f"t_eval.jsonl:{i + 1}", "messages": p, "reference": "ref", "base": "b", "tuned": "t"}
        for i, p in enumerate(PROMPTS)
    ]
    (ctx.run_dir / "eval").mkdir(parents=True)
    (ctx.run_dir / "eval" / "results.json").write_text(json.dumps({"skipped": None, "answers": answers}))
    return ctx


def test_the_served_model_answers_the_eval_prompts_in_order(evaluated_run):
    def respond(body):
        last = body["messages"][-1]["content"]
        return Reply(
            f"answer to {last}", thinking="hm" if last == "third" else "", fail_after=0 if last == "first" else None
        )

    with OllamaEmulator() as ollama:
        ollama.add_model("t-model", thinking=True, responder=respond)
        url = ollama.url
        served = eval_stage.write_served(evaluated_run, url, "t-model")
        requests = ollama.chat_requests()
    written = json.loads((evaluated_run.run_dir / "eval" / "served.json").read_text())
    assert written == served.to_dict()
    assert written["model"] == "t-model" and written["host"] == url
    assert written["answers"] == [None, "answer to second", "<think>\nhm\n</think>\n\nanswer to third"]
    assert "HTTP 500" in written["error"] and len(written["error"].splitlines()) == 1  # the first prompt failed
    assert [r["messages"][-1]["content"] for r in requests] == ["first", "second", "third"]
    for request in requests:
        assert request["stream"] is False and request["think"] is True  # qwen3, enable_thinking true: as trained
        assert request["options"] == {"temperature": 0, "num_predict": 8}  # eval.max_new_tokens
    # The history's inline chain of thought goes to `thinking`, where Ollama keeps it for the template.
    assert requests[1]["messages"][2] == {"role": "assistant", "content": "Hello!", "thinking": "greet back"}
    assert requests[1]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_no_ollama_is_recorded_not_raised(evaluated_run):
    url = closed_port_url()
    began = time.monotonic()
    served = eval_stage.write_served(evaluated_run, url, "t-model")
    assert time.monotonic() - began < 10  # one failed connection ends the asking
    written = json.loads(served.path.read_text())
    assert written["answers"] == [None, None, None] and written["host"] == url
    assert written["error"].startswith(f"cannot reach Ollama at {url}") and "\n" not in written["error"]
    # A host with credentials is refused without echoing them.
    written = eval_stage.write_served(evaluated_run, "http://user:s3cret@127.0.0.1:1", "t-model").to_dict()
    assert written["host"] is None and written["answers"] == [None] * 3 and "s3cret" not in written["error"]


def test_the_register_stage_never_fails_for_the_served_answers(evaluated_run, capsys):
    lines = []
    evaluated_run.reporter.info = lines.append
    served = register._served_answers(evaluated_run, closed_port_url(), "t-model")
    assert served.answered == 0 and any("answered 0 of 3 eval prompts" in line for line in lines)
    (evaluated_run.run_dir / "eval" / "results.json").write_text('{"answers": [{"messages": "oops"}]}')
    assert register._served_answers(evaluated_run, closed_port_url(), "t-model") is None
    assert "rerun the eval stage" in lines[-1]
    (evaluated_run.run_dir / "eval" / "results.json").write_text('{"skipped": "no held-out conversations"}')
    assert register._served_answers(evaluated_run, closed_port_url(), "t-model") is None  # nothing to ask
