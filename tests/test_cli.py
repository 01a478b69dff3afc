import subprocess
import sys

from support import REPO

from orchestrator.cli import main

HEAVY = ("torch", "transformers", "llamafactory", "numpy", "gguf", "requests", "pydantic", "yaml")


def test_import_and_help_stay_light():
    probe = (
        "import sys, orchestrator, orchestrator.cli as c; p = c.build_parser(); "
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_python_dash_m_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "orchestrator", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("chat", "sessions", "data", "run", "model"):
        assert command in out.stdout


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: orchestrator" in capsys.readouterr().out


def test_dry_run_prints_the_llamafactory_yaml_and_writes_nothing(workdir, capsys):
    import yaml

    assert main(["run", "quickstart", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "weights are loaded in float32" in err  # the dtype the CPU trains in
    train_text = out.split("# ")[1].split("\n", 1)[1]
    export_text = out.split("# ")[2].split("\n", 1)[1]
    train, export = yaml.safe_load(train_text), yaml.safe_load(export_text)
    assert train["template"] == "qwen3" and train["enable_thinking"] is True and train["dataset"] == "quickstart"
    assert train["finetuning_type"] == "lora" and train["output_dir"].endswith("runs/quickstart/adapter")
    assert export["adapter_name_or_path"] == train["output_dir"] and export["export_dir"].endswith("merged")
    evals = {
        name.split("/eval/")[1]: yaml.safe_load(text) for name, text in (c.split("\n", 1) for c in out.split("# ")[3:])
    }
    assert sorted(evals) == ["base-loss.yaml", "base-predict.yaml", "tuned-loss.yaml", "tuned-predict.yaml"]
    assert evals["tuned-loss.yaml"]["model_name_or_path"] == export["export_dir"] and evals["base-loss.yaml"]["do_eval"]
    assert evals["base-predict.yaml"]["do_predict"] and evals["base-predict.yaml"]["do_sample"] is False
    assert not (workdir / "llama_factory_data").exists() and not (workdir / "data" / "dataset_info.json").exists()


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    lines = (REPO / "README.md").read_text().splitlines()
    assert lines[0] == "```bash" and lines[3] == "```"
    install_run, install_test = lines[1], lines[2]
    assert install_run.startswith("pip install") and install_run.endswith("orchestrator run")
    assert install_test.startswith("pip install") and "pytest" in install_test
    ci = (REPO / ".ci" / "run").read_text()
    assert "grep -m1 'pytest'" in ci and 'bash -c "$test_cmd"' in ci


OPEN_WEBUI_SAMPLE = REPO / "data" / "samples" / "open-webui-chat-export.json"


def test_data_export_holds_out_and_pairs_only_when_asked(tmp_path, capsys):
    import json

    base = ["data", "export", "--name", "ow", "--source", f"open_webui:{OPEN_WEBUI_SAMPLE}", "--no-redact"]
    assert main([*base, "--dataset-dir", str(tmp_path / "plain")]) == 0
    assert sorted(p.name for p in (tmp_path / "plain").glob("*.jsonl")) == ["ow.jsonl"]

    out = tmp_path / "both"
    assert main([*base, "--dataset-dir", str(out), "--eval-split", "1", "--preferences"]) == 0
    printed = capsys.readouterr().out
    lines = {name: (out / f"{name}.jsonl").read_text().splitlines() for name in ("ow", "ow_eval", "ow_pref")}
    assert (len(lines["ow"]), len(lines["ow_eval"]), len(lines["ow_pref"])) == (3, 1, 2)
    assert not set(lines["ow"]) & set(lines["ow_eval"])
    assert all("chosen" in json.loads(line) for line in lines["ow_pref"])
    info = json.loads((out / "dataset_info.json").read_text())
    assert set(info) == {"ow", "ow_eval", "ow_pref"} and info["ow_pref"]["ranking"] is True
    assert "2 preference pairs" in printed and "held out for evaluation" in printed


def test_data_export_bad_eval_split_or_preferences_is_one_line(tmp_path, capsys):
    base = ["data", "export", "--name", "ow", "--dataset-dir", str(tmp_path / "out")]
    webui = [*base, "--source", f"open_webui:{OPEN_WEBUI_SAMPLE}"]
    for value in ("2.5", "-1", "ten", "nan"):
        assert main([*webui, "--eval-split", value]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --eval-split {value}: give a share") and len(err.strip().splitlines()) == 1
    assert main([*base, "--file", str(REPO / "data" / "samples" / "conversations.jsonl"), "--preferences"]) == 2
    err = capsys.readouterr().err
    assert "--preferences needs an Open WebUI source" in err and len(err.strip().splitlines()) == 1
    assert main([*webui, "--eval-split", "4"]) == 2  # all 4 held out, none left to train on
    err = capsys.readouterr().err
    assert "holds out all 4 conversations" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.jsonl"))


def test_the_run_command_offers_every_stage_of_a_recipe():
    from orchestrator.commands.run import STAGES as OFFERED
    from orchestrator.recipe import STAGES

    assert OFFERED == STAGES
