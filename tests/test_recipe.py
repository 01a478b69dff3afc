from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.errors import RecipeError
from orchestrator.recipe import SHIPPED_DIR, load_recipe, resolve_recipe_path

SHIPPED = sorted(SHIPPED_DIR.glob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_shipped_recipes_are_valid():
    assert len(SHIPPED) >= 5
    for path in SHIPPED:
        recipe, _ = load_recipe(path)
        assert recipe.name and recipe.data.sources


def test_name_resolves_to_shipped_recipe_first():
    assert resolve_recipe_path("quickstart") == SHIPPED_DIR / "quickstart.yaml"
    assert resolve_recipe_path(None) == SHIPPED_DIR / "quickstart.yaml"
    with pytest.raises(RecipeError, match="shipped recipes: .*quickstart"):
        resolve_recipe_path("no-such-recipe")


def test_every_problem_is_listed_at_once(tmp_path):
    path = write(
        tmp_path,
        """
name: bad name
model: {name_or_path: Qwen/Qwen3-4B, templat: qwen3}
method: dora
hardware: tpu
data:
  sources:
    - {type: file}
    - {type: memory, sesions: [a]}
train: {lora_rank: 0, learning_rat: 0.1, lora_dropout: 1.5}
""",
    )
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    problems = info.value.problems
    text = str(info.value)
    assert text.startswith(f"{path}: 9 problems in the recipe")
    expected = [
        "name: use letters, digits",
        "model.templat: unknown key; did you mean 'template'?",
        "method: Input should be 'lora' or 'qlora' (got 'dora')",
        "hardware: Input should be 'auto', 'cuda', 'rocm' or 'cpu'",
        "data.sources[0].path: required key is missing",
        "data.sources[1].sesions: unknown key; did you mean 'sessions'?",
        "train.lora_rank: Input should be greater than 0 (got 0)",
        "train.learning_rat: unknown key; did you mean 'learning_rate'?",
        "train.lora_dropout: Input should be less than 1 (got 1.5)",
    ]
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "name: x\nmodel: [unclosed\n")
    with pytest.raises(RecipeError, match=r"line \d+, column \d+: not valid YAML"):
        load_recipe(path)


def test_stage_order_and_adapter_route_checks(tmp_path):
    base = "name: x\nmodel: {name_or_path: m}\ndata: {sources: [{type: file, path: a.jsonl}]}\n"
    with pytest.raises(RecipeError, match="stages: stages must be distinct and in pipeline order"):
        load_recipe(write(tmp_path, base + "stages: [train, data]\n"))
    with pytest.raises(RecipeError, match="serve: adapter needs ollama.base_model"):
        load_recipe(write(tmp_path, base + "stages: [data, train, gguf, register]\nollama: {serve: adapter}\n"))


def test_template_is_chosen_from_the_model_name(tmp_path):
    base = "name: x\ndata: {sources: [{type: file, path: a.jsonl}]}\n"
    recipe, _ = load_recipe(write(tmp_path, base + "model: {name_or_path: Qwen/Qwen3-4B-Instruct-2507}\n"))
    assert recipe.model.resolved_template == "qwen3_nothink" and not recipe.model.keeps_thinking
    recipe, _ = load_recipe(write(tmp_path, base + "model: {name_or_path: Qwen/Qwen3-8B}\n"))
    assert recipe.model.resolved_template == "qwen3" and recipe.model.keeps_thinking


def test_cli_bad_recipe_exits_2_with_every_problem(tmp_path, capsys):
    path = write(tmp_path, "name: x\nmodel: {}\nmethod: full\n")
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "model.name_or_path: required key is missing" in err
    assert "method: Input should be 'lora' or 'qlora'" in err
    assert "data: required key is missing" in err
    assert "Traceback" not in err


def test_missing_source_file_is_a_clear_error(workdir, capsys):
    path = write(
        workdir,
        "name: x\nmodel: {name_or_path: tiny-qwen3}\nstages: [data, train]\n"
        "data: {sources: [{type: file, path: data/nope.jsonl}]}\n",
    )
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "data/nope.jsonl: no such file" in err and "Traceback" not in err
    assert not (workdir / "data" / "x.jsonl").exists()
