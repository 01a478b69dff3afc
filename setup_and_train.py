#!/usr/bin/env python3
"""One command from a fresh checkout to a trained model: install, then run a recipe.

    python setup_and_train.py                              # the offline quickstart
    python setup_and_train.py recipes/qwen3-4b-lora-cuda.yaml
    python setup_and_train.py qwen3-8b-qlora-cuda --plan   # print the steps, run nothing

Outside a virtual environment it makes one (.venv beside this file) and installs the project with its
`train` extra there (LLaMA-Factory and the torch/torchaudio/torchvision set known to load together);
inside one (or on Colab, where the runtime is the environment) it installs into the running Python, and
when that Python already has a working torch set of its own (a ROCm build, Colab's CUDA build) it keeps
it (the `train-own-torch` extra). Then it runs `orchestrator run RECIPE`. Only the standard library is
used here, so this works before anything is installed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent


def on_colab() -> bool:
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def in_virtualenv() -> bool:
    return sys.prefix != getattr(sys, "base_prefix", sys.prefix)


def target_python(venv_dir: Path) -> tuple[Path, bool]:
    """The interpreter to install into, and whether a virtual environment must be made first."""
    if in_virtualenv() or on_colab():
        return Path(sys.executable), False
    return venv_dir / "bin" / "python", not (venv_dir / "bin" / "python").exists()


def has_torch_set(python: Path) -> bool:
    """Whether ``python`` already imports torch, torchaudio and torchvision together (a matched set)."""
    probe = "import torch, torchaudio, torchvision"
    return python.exists() and subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def plan(args: argparse.Namespace) -> list[list[str]]:
    """The commands this script runs, in order (argument lists, never a shell string)."""
    python, make_venv = target_python(Path(args.venv))
    steps: list[list[str]] = []
    if make_venv:
        steps.append([sys.executable, "-m", "venv", str(args.venv)])
    if not args.skip_install:
        extra = "train" if make_venv or not has_torch_set(python) else "train-own-torch"
        steps.append([str(python), "-m", "pip", "install", "--upgrade", "pip"])
        steps.append([str(python), "-m", "pip", "install", "-e", f"{HERE}[{extra}]"])
    run = [str(python), "-m", "orchestrator", "run"]
    if args.recipe:
        run.append(args.recipe)
    run += ["--dry-run"] * args.dry_run + ["--force"] * args.force + (["--until", args.until] if args.until else [])
    steps.append(run)
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install the orchestrator and run a recipe (default: quickstart).")
    parser.add_argument("recipe", nargs="?", help="a shipped recipe's name or a recipe file (default: quickstart)")
    parser.add_argument("--venv", default=str(HERE / ".venv"), help="virtual environment to make and use")
    parser.add_argument("--skip-install", action="store_true", help="the project is installed already")
    parser.add_argument("--dry-run", action="store_true", help="pass --dry-run to orchestrator run")
    parser.add_argument("--force", action="store_true", help="pass --force to orchestrator run")
    parser.add_argument("--until", help="pass --until STAGE to orchestrator run (e.g. gguf on Colab)")
    parser.add_argument("--plan", action="store_true", help="print the commands and run nothing")
    args = parser.parse_args(argv)
    if sys.version_info < (3, 10):  # noqa: UP036 - this script runs before anything checks the version
        print(f"error: Python 3.10 or newer is needed, this is {sys.version.split()[0]}", file=sys.stderr)
        return 2
    steps = plan(args)
    for step in steps:
        print("+ " + " ".join(step), flush=True)
        if args.plan:
            continue
        if step[1:3] == ["-m", "venv"]:
            venv.create(step[3], with_pip=True)
            continue
        done = subprocess.run(step, cwd=HERE)
        if done.returncode != 0:
            print(f"error: step failed (exit {done.returncode}): {' '.join(step)}", file=sys.stderr)
            return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
