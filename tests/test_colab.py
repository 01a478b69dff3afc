"""colab/setup_and_train.ipynb, executed for real with nbclient.

The kernel's Python is a fresh virtual environment that sees this environment's packages but not this
project, so the notebook's install cell really installs the project, from a wheel built from this working
tree and "uploaded" as on Colab. google.colab is the stand-in in tests/assets/colab: ``files.upload()``
hands over the files a test lists, ``files.download()`` copies into a folder. pip runs with no index. One
execution trains the tiny model on an uploaded .jsonl (the module-scoped ``trained``); the others stop at
the first broken cell.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass
from pathlib import Path

import gguf
import nbformat
import pytest
import yaml
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from support import REPO, SAMPLES

from orchestrator.recipe import load_recipe

NOTEBOOK = REPO / "colab" / "setup_and_train.ipynb"
FAKE_COLAB = REPO / "tests" / "assets" / "colab"
KERNEL = "colab-stand-in"
# This project's entries in site-packages (an editable install's finder, its dist-info), kept out of the
# kernel's environment so the notebook installs the project itself.
PROJECT_ENTRIES = ("__editable__", "ollama_qwen3_orchestrator", "orchestrator")
UPLOADED_CONVERSATIONS = 12  # of the samples: not all of them, so the count shows which file was read


@dataclass
class Colab:
    root: Path
    wheel: Path
    python: Path
    kernels: Path


@dataclass
class Execution:
    notebook: nbformat.NotebookNode
    error: CellExecutionError | None
    work: Path
    downloads: Path


def offline_env(**extra: str) -> dict[str, str]:
    """This process's environment with pip offline and no llama-quantize (the notebook must not find one)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LLAMA_CPP_DIR", "VIRTUAL_ENV")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not (Path(p) / "llama-quantize").exists()]
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", HF_HUB_OFFLINE="1", PATH=os.pathsep.join(path))
    env.update(extra)
    return env


def build_wheel(root: Path) -> Path:
    """``pip wheel --no-deps`` of this working tree (its tracked and new files), as the notebook asks."""
    git = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    listed = subprocess.run(git, cwd=REPO, capture_output=True, check=True)
    src = root / "src"
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / name).is_file():  # a tracked file deleted in the working tree is not in a copy either
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    dist = root / "dist"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src]
    subprocess.run([str(part) for part in pip_wheel], check=True, env=offline_env())
    (wheel,) = dist.glob("*.whl")
    return wheel


def project_free_python(venv_dir: Path) -> Path:
    """A virtual environment that sees this one's packages through a folder of links to them, less this
    project; pip installs into it alone. Returns its python."""
    venv.create(venv_dir, with_pip=False)
    python = venv_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    links = venv_dir / "project-env"
    links.mkdir()
    for folder in {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}:
        for entry in Path(folder).iterdir():
            if not entry.name.startswith(PROJECT_ENTRIES) and not (links / entry.name).exists():
                (links / entry.name).symlink_to(entry)
    # addsitedir also runs the .pth files there (our editable finder's is not among the links).
    (Path(site) / "project_env.pth").write_text(f"import site; site.addsitedir({str(links)!r})\n")
    # The pipeline runs the llamafactory-cli beside its Python: the same launcher, on this python.
    launcher = Path(sys.executable).with_name("llamafactory-cli").read_text().splitlines(keepends=True)
    (venv_dir / "bin" / "llamafactory-cli").write_text(f"#!{python}\n" + "".join(launcher[1:]))
    (venv_dir / "bin" / "llamafactory-cli").chmod(0o755)
    return python


@pytest.fixture(scope="module")
def colab(tmp_path_factory) -> Colab:
    root = tmp_path_factory.mktemp("colab")
    python = project_free_python(root / "venv")
    kernels = root / "kernels"
    (kernels / KERNEL).mkdir(parents=True)
    spec = {"argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"], "language": "python"}
    (kernels / KERNEL / "kernel.json").write_text(json.dumps({**spec, "display_name": KERNEL}))
    return Colab(root, build_wheel(root), python, kernels)


def execute(colab: Colab, tmp: Path, uploads: list[list[Path]], **params) -> Execution:
    """Run the notebook with ``params`` set after its parameters cell (papermill's way: an injected cell)
    and ``uploads`` as what each ``files.upload()`` returns, in order."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, cell in enumerate(notebook.cells) if tags(cell) == ["parameters"])
    params = {"WORK_DIR": str(tmp / "content"), **params}
    source = "\n".join(f"{key} = {value!r}" for key, value in params.items())
    notebook.cells.insert(at + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    env = offline_env(
        PYTHONPATH=str(FAKE_COLAB),
        FAKE_COLAB_UPLOADS=json.dumps([[str(path) for path in batch] for batch in uploads]),
        FAKE_COLAB_DOWNLOADS=str(tmp / "downloads"),
    )
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(colab.kernels)]))
    client = NotebookClient(notebook, km=km, timeout=900, resources={"metadata": {"path": str(tmp)}})
    error = None
    try:
        client.execute(env=env)
    except CellExecutionError as exc:
        error = exc
    finally:  # nbclient keeps a kernel it was handed alive
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    nbformat.write(notebook, tmp / "executed.ipynb")  # to open when a test fails
    return Execution(notebook, error, Path(params["WORK_DIR"]), tmp / "downloads")


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def text_of(cell) -> str:
    return "".join(out.get("text", "") + "".join(out.get("traceback", [])) for out in cell.get("outputs", []))


def conversations(tmp: Path, lines: int = UPLOADED_CONVERSATIONS) -> Path:
    path = tmp / "my chats.jsonl"
    path.write_text("".join(SAMPLES.read_text(encoding="utf-8").splitlines(keepends=True)[:lines]), encoding="utf-8")
    return path


def default_base_recipe() -> str:
    settings = next(cell for cell in code_cells(nbformat.read(NOTEBOOK, as_version=4)) if tags(cell) == ["parameters"])
    return re.search(r'^BASE_RECIPE = "([^"]+)"', settings.source, re.M).group(1)


# -- the notebook as shipped ---------------------------------------------------------------------------


def test_the_notebook_is_valid_runs_no_shell_and_starts_from_a_gpu_recipe():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    cells = code_cells(notebook)
    tagged = [tags(c)[0] for c in cells]
    assert tagged == ["parameters", "setup", "install", "upload", "recipe", "train", "report", "download"]
    for cell in cells:
        lines = cell.source.splitlines()
        assert not [line for line in lines if line.lstrip().startswith(("!", "%"))], "shell and magics fail quietly"
        assert "shell=True" not in cell.source and "%cd" not in cell.source
    recipe, _ = load_recipe(default_base_recipe())
    assert recipe.hardware == "cuda" and "gguf" in recipe.stages


# -- it stops at the first broken cell, naming the cause -------------------------------------------------


def bad_conversations(tmp: Path) -> Path:
    path = tmp / "only questions.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Anyone there?"}]}) + "\n")
    return path


FAILURES = {
    "no-package-file": ("install", {"PACKAGE": "/nonexistent/x.whl"}, None, "no such file or folder"),
    "a-jsonl-as-the-package": ("install", {}, "jsonl-first", "not the project's wheel"),
    "no-conversations-uploaded": ("upload", {}, "wheel-only", "nothing was uploaded"),
    "no-such-recipe": ("recipe", {"BASE_RECIPE": "no-such-recipe"}, None, "no such recipe file"),
    "k-quant-without-llama-quantize": ("recipe", {"GGUF_TYPE": "q4_k_m"}, None, "only llama.cpp's llama-quantize"),
    "conversations-that-cannot-train": ("recipe", {}, "bad-data", "1 no assistant reply"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", FAILURES)
def test_it_stops_at_the_first_broken_cell_and_names_the_cause(colab, tmp_path, case):
    failing, params, uploads_kind, cause = FAILURES[case]
    uploads = {
        None: [[colab.wheel], [conversations(tmp_path)]],
        "jsonl-first": [[conversations(tmp_path)]],
        "wheel-only": [[colab.wheel]],
        "bad-data": [[colab.wheel], [bad_conversations(tmp_path)]],
    }[uploads_kind]
    run = execute(colab, tmp_path, uploads, **{"BASE_RECIPE": "quickstart", **params})
    assert run.error is not None, f"{case}: the notebook ran to the end"
    assert cause in str(run.error)
    cells = code_cells(run.notebook)
    broken = next(i for i, cell in enumerate(cells) if any(o.output_type == "error" for o in cell.outputs))
    assert tags(cells[broken]) == [failing]
    assert all(cell.execution_count for cell in cells[:broken])
    assert [cell.execution_count for cell in cells[broken + 1 :]] == [None] * (len(cells) - broken - 1)
    assert not run.downloads.exists()


# -- one real run: the tiny model trained on the uploaded .jsonl, a q4_0 GGUF and its Modelfile out ----


@pytest.fixture(scope="module")
def trained(colab, tmp_path_factory) -> Execution:
    tmp = tmp_path_factory.mktemp("trained")
    uploads = [[colab.wheel], [conversations(tmp)]]
    run = execute(colab, tmp, uploads, BASE_RECIPE="quickstart", GGUF_TYPE="q4_0", TRAIN={"max_steps": 2})
    if run.error is not None:
        pytest.fail(f"the notebook failed:\n{run.error}")
    return run


@pytest.mark.slow
def test_it_trains_on_the_uploaded_jsonl(trained):
    manifest = json.loads((trained.work / "llama_factory_data" / "runs" / "quickstart" / "manifest.json").read_text())
    data = manifest["stages"]["data"]
    sources = [(s["type"], s["path"]) for s in data["inputs"]["sources"]]
    assert sources == [("file", str(trained.work / "uploads" / "my chats.jsonl"))]
    assert data["details"]["read"] == UPLOADED_CONVERSATIONS
    assert {name: stage["status"] for name, stage in manifest["stages"].items()} == dict.fromkeys(
        ("data", "train", "merge", "eval", "gguf"), "done"
    )
    recipe = yaml.safe_load((trained.work / "recipe.yaml").read_text())
    assert recipe["train"]["max_steps"] == 2 and "register" not in recipe["stages"]
    train = text_of(next(cell for cell in code_cells(trained.notebook) if tags(cell) == ["train"]))
    assert "step 2/2" in train and "\x1b[" not in train  # a plain log: no live bars, no colour codes


@pytest.mark.slow
def test_it_shows_the_loss_plot_and_the_before_after_table_inline(trained):
    report = next(cell for cell in code_cells(trained.notebook) if tags(cell) == ["report"])
    shown = [out.get("data", {}) for out in report.outputs if out.get("output_type") == "display_data"]
    pictures = [data["image/png"] for data in shown if "image/png" in data]
    assert pictures and all(len(picture) > 1000 for picture in pictures)  # base64 PNGs, drawn from the run
    tables = "".join(data.get("text/markdown", "") for data in shown)
    assert "| held-out loss |" in tables and "| perplexity |" in tables
    assert "Before and after" in tables and "Training curves" in tables


@pytest.mark.slow
def test_it_downloads_a_gguf_of_the_asked_type_and_a_modelfile_beside_it(trained):
    assert sorted(p.name for p in trained.downloads.iterdir()) == ["Modelfile", "quickstart-q4_0.gguf"]
    reader = gguf.GGUFReader(trained.downloads / "quickstart-q4_0.gguf")
    file_type = reader.fields[gguf.Keys.General.FILE_TYPE]
    assert gguf.LlamaFileType(int(file_type.parts[file_type.data[0]][0])) == gguf.LlamaFileType.MOSTLY_Q4_0
    modelfile = (trained.downloads / "Modelfile").read_text().splitlines()
    assert [line for line in modelfile if line.startswith("FROM ")] == ["FROM ./quickstart-q4_0.gguf"]
    download = next(cell for cell in code_cells(trained.notebook) if tags(cell) == ["download"])
    assert re.search(r"downloading quickstart-q4_0\.gguf: a Q4_0 GGUF model, \d+\.\d\d GB", text_of(download))
    assert "ollama create quickstart-qwen3-tiny -f Modelfile" in text_of(download)


# -- what the notebook relies on from the installed wheel -------------------------------------------------


@pytest.mark.slow
def test_the_installed_wheel_runs_shipped_recipes_from_any_folder(colab, tmp_path):
    """The notebook names a shipped recipe and has no checkout: the wheel must carry the recipes and the
    sample data they read (setup.py's package data)."""
    install = [colab.python, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", colab.wheel]
    subprocess.run([str(part) for part in install], check=True, env=offline_env())
    for argv in (["run", default_base_recipe(), "--dry-run"], ["run", "quickstart", "--until", "data"]):
        cmd = [str(colab.python), "-m", "orchestrator", *argv]
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=offline_env())
        assert done.returncode == 0, f"orchestrator {' '.join(argv)}: {done.stderr[-2000:]}"


@pytest.mark.slow
def test_the_wheel_finds_its_recipes_where_pip_put_its_data_files(colab, tmp_path):
    """pip install --prefix stands in for Debian's scheme: the data files go beside the package, not under
    sys.prefix."""
    python = project_free_python(tmp_path / "venv")
    prefix = tmp_path / "prefix"
    install = [python, "-m", "pip", "install", "-q", "--no-deps", "--prefix", prefix, colab.wheel]
    subprocess.run([str(part) for part in install], check=True, env=offline_env())
    (site,) = prefix.glob("lib/python*/site-packages")
    cmd = [str(python), "-m", "orchestrator", "run", "quickstart", "--dry-run"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=offline_env(PYTHONPATH=str(site)))
    assert done.returncode == 0, done.stderr[-2000:]
