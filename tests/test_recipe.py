from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.errors import RecipeError
from orchestrator.recipe import SHIPPED_DIR, load_recipe, resolve_recipe_path

SHIPPED = sorted(SHIPPED_DIR.glob("*.yaml"))
BATCHES = sorted((SHIPPED_DIR / "batches").glob("*.yaml"))


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
    with pytest.raises(RecipeError, match="no such recipe file; did you mean 'quickstart'"):
        resolve_recipe_path("quickstar")


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


MINIMAL = "name: r\nmodel: {name_or_path: Qwen/Qwen3-4B}\ndata: {sources: [{type: file, path: a.jsonl}]}\n"


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text))
    return info.value.problems


def test_non_finite_numbers_are_refused(tmp_path):
    problems = problems_of(
        tmp_path,
        MINIMAL + "train: {learning_rate: .inf, num_train_epochs: .nan}\nllamafactory: {max_grad_norm: .inf}\n",
    )
    assert "train.learning_rate: Input should be a finite number (got inf)" in problems
    assert any(p.startswith("train.num_train_epochs: Input should be a finite number") for p in problems)
    assert "llamafactory: max_grad_norm: inf is not a finite number" in problems


@pytest.mark.parametrize(
    ("section", "key", "fix"),
    [
        ("llamafactory", "output_dir", "the run folder decides it"),
        ("llamafactory", "model_name_or_path", "set model.name_or_path"),
        ("llamafactory", "dataset", "set data.name"),
        ("llamafactory_export", "export_dir", "the run folder decides it"),
    ],
)
def test_keys_the_pipeline_owns_are_refused_in_the_passthrough(tmp_path, section, key, fix):
    problems = problems_of(tmp_path, MINIMAL + f"{section}: {{{key}: /tmp/elsewhere}}\n")
    assert len(problems) == 1 and problems[0].startswith(f"{section}: {key} is set by the pipeline; {fix}")


def test_an_empty_model_is_refused(tmp_path):
    for value in ('""', '"  "'):
        problems = problems_of(tmp_path, MINIMAL.replace("Qwen/Qwen3-4B", value))
        assert len(problems) == 1 and problems[0].startswith("model.name_or_path:")


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    problems = problems_of(tmp_path, MINIMAL + "train:\n  learning_rate: 1.0e-4\n  learning_rate: 1.0e-3\n")
    assert problems == ["line 6, column 3: not valid YAML (key 'learning_rate' is given twice; keep one)"]


def test_a_recipe_with_a_bom_loads(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_recipe(path)[0].name == "r"


def test_adapter_route_uses_its_own_gguf_type(tmp_path):
    adapter = MINIMAL + "ollama: {serve: adapter, base_model: qwen3:4b}\n"
    assert load_recipe(write(tmp_path, adapter))[0].gguf.type == "f16"
    assert load_recipe(write(tmp_path, MINIMAL))[0].gguf.type == "q8_0"
    assert problems_of(tmp_path, adapter + "gguf: {type: q4_k_m}\n") == [
        "(top level): gguf.type q4_k_m cannot hold a LoRA adapter (ollama.serve: adapter); "
        "use one of f32, f16, bf16, q8_0"
    ]


def test_every_gguf_type_the_converter_writes_is_a_recipe_type(tmp_path):
    from orchestrator.gguf.types import OUT_TYPES

    for name in OUT_TYPES:  # q3_k_s among them: the recipe and the converter read one table
        assert load_recipe(write(tmp_path, MINIMAL + f"gguf: {{type: {name}}}\n"))[0].gguf.type == name


def test_qlora_on_cpu_is_refused_when_the_recipe_is_resolved(capsys):
    assert main(["run", "qwen3-8b-qlora-cuda", "--dry-run"]) == 0  # a dry run assumes the GPU
    from orchestrator.context import open_run
    from orchestrator.hardware import Hardware

    with pytest.raises(Exception, match="qlora needs a GPU .* this run is on the CPU"):
        open_run("qwen3-8b-qlora-cuda", hardware=Hardware("cpu"))


def test_a_shipped_recipe_finds_its_sample_data_from_any_folder(tmp_path, monkeypatch):
    from orchestrator.recipe import SHIPPED_ROOT

    monkeypatch.chdir(tmp_path)  # no data/ here
    recipe, _ = load_recipe("quickstart")
    assert Path(recipe.data.sources[0].path) == SHIPPED_ROOT / "data" / "samples" / "conversations.jsonl"
    (tmp_path / "data" / "samples").mkdir(parents=True)
    (tmp_path / "data" / "samples" / "conversations.jsonl").write_text("{}\n")
    assert load_recipe("quickstart")[0].data.sources[0].path == "data/samples/conversations.jsonl"  # yours wins


def test_the_wheel_ships_the_recipes_and_samples(tmp_path):
    import subprocess
    import sys
    import zipfile

    from support import REPO

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    share = [n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n]
    expected = {f"share/ollama-qwen3-orchestrator/recipes/{p.name}" for p in SHIPPED}
    expected |= {f"share/ollama-qwen3-orchestrator/recipes/batches/{p.name}" for p in BATCHES}
    expected.add("share/ollama-qwen3-orchestrator/data/samples/conversations.jsonl")
    assert set(share) == expected
