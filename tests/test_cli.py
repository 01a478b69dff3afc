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
    assert not (workdir / "llama_factory_data").exists() and not (workdir / "data" / "dataset_info.json").exists()


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    lines = (REPO / "README.md").read_text().splitlines()
    assert lines[0] == "```bash" and lines[3] == "```"
    install_run, install_test = lines[1], lines[2]
    assert install_run.startswith("pip install") and install_run.endswith("orchestrator run")
    assert install_test.startswith("pip install") and "pytest" in install_test
    ci = (REPO / ".ci" / "run").read_text()
    assert "grep -m1 'pytest'" in ci and 'bash -c "$test_cmd"' in ci
