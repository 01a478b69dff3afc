"""The pipeline recipe: a pydantic schema with the defaults and help in one place.

Knobs that belong to LLaMA-Factory keep LLaMA-Factory's names (``lora_rank``, ``cutoff_len``...), so a
recipe reads like its docs; anything else of LLaMA-Factory's goes verbatim through ``llamafactory:``.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from orchestrator.errors import RecipeError
from orchestrator.gguf.types import ADAPTER_TYPES, OUT_TYPES
from orchestrator.recipe_sources import (
    SOURCE_TYPES,
    ChatGPTSource,
    FileSource,
    MemorySource,
    OllamaAppSource,
    OllamaSavedSource,
    OpenWebUISource,
    Section,
    Source,
    SourceFilters,
)

STAGES = ("data", "train", "merge", "eval", "gguf", "register")
TINY_MODEL = "tiny-qwen3"


def _shipped_root() -> Path:
    """Where the shipped recipes and sample data are: the checkout (an editable install), else the
    ``share/ollama-qwen3-orchestrator`` folder a wheel installs beside the environment."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "recipes").is_dir():
        return checkout
    # pip may put a wheel's data files under another prefix than sys.prefix (Debian's Python, as on
    # Colab, uses /usr/local): the installed files' record says where they are.
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        for file in distribution("ollama-qwen3-orchestrator").files or ():
            if file.name == "quickstart.yaml" and file.parent.name == "recipes":
                return Path(file.locate()).resolve().parent.parent
    except PackageNotFoundError:
        pass
    return Path(sys.prefix) / "share" / "ollama-qwen3-orchestrator"


SHIPPED_ROOT = _shipped_root()
SHIPPED_DIR = SHIPPED_ROOT / "recipes"
DEFAULT_RECIPE = "quickstart"
# Re-exported: the source schemas live in recipe_sources.py but are part of the recipe's names.
__all__ = [
    "SOURCE_TYPES",
    "Section",
    "ChatGPTSource",
    "FileSource",
    "MemorySource",
    "OllamaAppSource",
    "OllamaSavedSource",
    "OpenWebUISource",
    "Source",
    "SourceFilters",
]


class ModelSpec(Section):
    name_or_path: str = Field(
        description=f"Hub id, local folder, or '{TINY_MODEL}' (tiny random Qwen3, built here)",
        min_length=1,
        pattern=r"\S",
    )
    template: Literal["qwen3", "qwen3_nothink"] | None = Field(
        None, description="LLaMA-Factory chat template; chosen from the model name when omitted"
    )
    enable_thinking: bool = Field(True, description="qwen3 template: train the <think> block (LLaMA-Factory's key)")
    trust_remote_code: bool = Field(False, description="Passed to LLaMA-Factory")

    @property
    def resolved_template(self) -> str:
        if self.template:
            return self.template
        name = self.name_or_path.lower()
        # Instruct-2507 models have no thinking mode; every other Qwen3 uses the reasoning template.
        return "qwen3_nothink" if "instruct-2507" in name else "qwen3"

    @property
    def keeps_thinking(self) -> bool:
        return self.resolved_template == "qwen3" and self.enable_thinking


class DataSpec(Section):
    name: str | None = Field(
        None,
        description="Dataset name in dataset_info.json (default: the recipe's name)",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
    )
    dataset_dir: str = Field("data", description="Folder of dataset_info.json and the exported .jsonl")
    sources: list[Source] = Field(min_length=1, description="Where the conversations come from")
    redact: bool = Field(True, description="Replace secrets (API keys, tokens, passwords, e-mails...) by placeholders")
    near_duplicates: float | None = Field(
        0.9, gt=0, le=1, description="Drop conversations this similar to a kept one (MinHash Jaccard); null: off"
    )
    eval_split: int | float = Field(
        0,
        ge=0,
        description="Conversations held out in <name>_eval for evaluation: a share in (0, 1) or a whole count; "
        "chosen by a hash of each conversation's id, so new chats never move an old one; 0: none",
    )
    preferences: bool = Field(
        False,
        description="Open WebUI sources: also export <name>_pref, preference pairs from rated or regenerated "
        "answers (chosen: rated up or kept; rejected: rated down or not kept), for train.stage: dpo",
    )

    @field_validator("eval_split")
    @classmethod
    def _whole_count(cls, value: float) -> float:
        if value >= 1 and value != int(value):
            raise ValueError("give a share below 1 or a whole count of conversations")
        return int(value) if value >= 1 else value


class TrainSpec(Section):
    stage: Literal["sft", "dpo"] = Field(
        "sft", description="sft: learn the conversations; dpo: learn the preference pairs (data.preferences)"
    )
    pref_beta: float = Field(0.1, gt=0, description="dpo: how far from the base model the preferences may pull")
    num_train_epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="When set, wins over num_train_epochs")
    learning_rate: float = Field(1e-4, gt=0)
    cutoff_len: int = Field(2048, ge=16, description="Tokens per example; longer ones are cut")
    lora_rank: int = Field(8, gt=0)
    lora_alpha: int | None = Field(None, gt=0, description="Default: 2 x lora_rank")
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_target: str = Field("all", description="'all' or a comma-separated list of module names")
    per_device_train_batch_size: int = Field(1, gt=0)
    gradient_accumulation_steps: int = Field(8, gt=0)
    val_size: float = Field(
        0.0, ge=0, lt=1, description="Share of the data LLaMA-Factory holds out at random (see data.eval_split)"
    )
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    logging_steps: int = Field(5, gt=0)
    save_steps: int = Field(500, gt=0)
    seed: int = 42
    max_samples: int | None = Field(None, gt=0, description="Use at most this many examples")
    gradient_checkpointing: bool = Field(
        True, description="Recompute activations in the backward pass: much less memory, about a third slower"
    )
    packing: bool = Field(False, description="Pack several short conversations into one cutoff_len sequence")
    auto_fit: bool = Field(
        False,
        description="Pick per_device_train_batch_size and gradient_accumulation_steps that keep the "
        "effective batch and fit the GPU's memory (orchestrator plan shows the estimate)",
    )
    gpus: int = Field(1, ge=1, description="GPUs one training uses on each node (torchrun when more than 1)")
    nodes: int = Field(1, ge=1, description="Machines one training spans; start the same recipe on each")
    node_rank: int = Field(0, ge=0, description="This machine's place among the nodes (0 is the master)")
    master_addr: str | None = Field(None, description="Address of node 0, which the other nodes reach")
    master_port: int = Field(29500, gt=0, lt=65536, description="Port of node 0 for torch.distributed")
    deepspeed: Literal["z2", "z3", "z3_offload"] | None = Field(
        None, description="DeepSpeed ZeRO stage 2, 3, or 3 with optimizer and weights offloaded to CPU memory"
    )
    ray_workers: int | None = Field(
        None, gt=0, description="Train through LLaMA-Factory's Ray path (USE_RAY=1) on this many workers"
    )

    @model_validator(mode="after")
    def _check_launch(self) -> TrainSpec:
        """The combinations of the launch keys that cannot work (the hardware is checked in distributed.py)."""
        if self.nodes > 1 and not self.master_addr:
            raise ValueError(f"nodes: {self.nodes} needs master_addr, the address of node 0 that the other nodes reach")
        if self.node_rank >= self.nodes:
            raise ValueError(
                f"node_rank: {self.node_rank} must be below nodes ({self.nodes}): nodes are numbered from 0"
            )
        if self.ray_workers and (self.gpus > 1 or self.nodes > 1):
            raise ValueError("ray_workers: Ray places its workers itself; drop gpus and nodes (or ray_workers)")
        if self.packing and self.stage == "dpo":
            raise ValueError("packing: LLaMA-Factory packs SFT examples, not preference pairs (stage: dpo); drop one")
        return self


class EvalSpec(Section):
    samples: int = Field(
        8,
        ge=0,
        description="Held-out conversations whose last user turn the base and the tuned model answer "
        "(greedy; fewer when fewer are held out); 0: held-out loss only",
    )
    max_new_tokens: int = Field(128, gt=0, description="Longest answer generated per sample, in tokens")


class GGUFSpec(Section):
    type: Literal[OUT_TYPES] | None = Field(  # type: ignore[valid-type]
        None, description="GGUF tensor type (default: q8_0 for a merged model, f16 for serve: adapter)"
    )


class OllamaSpec(Section):
    name: str | None = Field(None, description="Model name in Ollama (default: the recipe's name)")
    host: str | None = Field(None, description="Ollama server (default: OLLAMA_HOST, then 127.0.0.1:11434)")
    serve: Literal["merged", "adapter"] = Field("merged", description="A merged GGUF, or base model + GGUF adapter")
    base_model: str | None = Field(None, description="Ollama base model for serve: adapter")
    system: str | None = None
    num_ctx: int | None = Field(None, gt=0)
    parameters: dict[str, Any] = Field(default_factory=dict, description="Extra PARAMETER values")


class Recipe(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Run name: llama_factory_data/runs/<name>")
    model: ModelSpec
    method: Literal["lora", "qlora"] = Field("lora", description="qlora: 4-bit bitsandbytes base while training")
    hardware: Literal["auto", "cuda", "rocm", "cpu"] = "auto"
    stages: list[Literal[STAGES]] = Field(list(STAGES), min_length=1)  # type: ignore[valid-type]
    runs_dir: str = Field("llama_factory_data/runs", description="Where run folders are made")
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    gguf: GGUFSpec = Field(default_factory=GGUFSpec)
    ollama: OllamaSpec = Field(default_factory=OllamaSpec)
    llamafactory: dict[str, Any] = Field(default_factory=dict, description="Further train keys, verbatim")
    llamafactory_export: dict[str, Any] = Field(default_factory=dict, description="Further export keys, verbatim")

    @field_validator("stages")
    @classmethod
    def _stage_order(cls, stages: list[str]) -> list[str]:
        order = [STAGES.index(s) for s in stages]
        if order != sorted(set(order)):
            raise ValueError(f"stages must be distinct and in pipeline order: {', '.join(STAGES)}")
        return stages

    @field_validator("llamafactory", "llamafactory_export")
    @classmethod
    def _passthrough(cls, keys: dict[str, Any], info: Any) -> dict[str, Any]:
        owned = PIPELINE_OWNED[info.field_name]
        for key, value in keys.items():
            if key in owned:
                raise ValueError(f"{key} is set by the pipeline; {owned[key]}")
            if not _finite(value):
                raise ValueError(f"{key}: {value!r} is not a finite number")
        return keys

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if self.ollama.serve == "adapter" and "register" in self.stages and not self.ollama.base_model:
            raise ValueError("ollama.serve: adapter needs ollama.base_model (the Ollama model the adapter goes on)")
        if self.ollama.serve == "adapter" and self.gguf.type and self.gguf.type not in ADAPTER_TYPES:
            raise ValueError(
                f"gguf.type {self.gguf.type} cannot hold a LoRA adapter (ollama.serve: adapter); "
                f"use one of {', '.join(ADAPTER_TYPES)}"
            )
        if self.data.eval_split and self.train.val_size:
            raise ValueError("data.eval_split and train.val_size both hold data out; keep one")
        self._check_preferences()
        if self.gguf.type is None:
            self.gguf.type = "f16" if self.ollama.serve == "adapter" else "q8_0"
        return self

    def _check_preferences(self) -> None:
        if self.data.preferences and not any(s.type == "open_webui" for s in self.data.sources):
            raise ValueError("data.preferences needs an open_webui source (the one that keeps rated answers)")
        if self.train.stage == "dpo" and not self.data.preferences:
            raise ValueError("train.stage: dpo trains on preference pairs; set data.preferences: true")
        if self.train.stage == "dpo" and self.data.eval_split:
            raise ValueError("train.stage: dpo cannot evaluate on data.eval_split (not preference pairs); drop it")

    @property
    def dataset_name(self) -> str:
        return self.data.name or self.name

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


# Keys of LLaMA-Factory's that the pipeline writes itself, and where a recipe sets them instead.
_RUN = "the run folder decides it (runs_dir and name)"
PIPELINE_OWNED: dict[str, dict[str, str]] = {
    "llamafactory": {
        "model_name_or_path": "set model.name_or_path",
        "output_dir": _RUN,
        "dataset": "set data.name",
        "dataset_dir": "set data.dataset_dir",
        "template": "set model.template",
        "enable_thinking": "set model.enable_thinking",
        "finetuning_type": "the pipeline trains LoRA adapters (method: lora or qlora)",
        "stage": "set train.stage (sft or dpo)",
        "do_train": "the pipeline always trains",
        "overwrite_output_dir": _RUN,
    },
    "llamafactory_export": {
        "model_name_or_path": "set model.name_or_path",
        "adapter_name_or_path": _RUN,
        "export_dir": _RUN,
        "template": "set model.template",
        "finetuning_type": "the pipeline merges LoRA adapters",
    },
}


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def resolve_recipe_path(ref: str | Path | None) -> Path:
    """A shipped recipe's name (``quickstart``) first, then a path."""
    ref = str(ref or DEFAULT_RECIPE)
    path = Path(ref)
    if path.suffix not in (".yaml", ".yml") and "/" not in ref:
        shipped = SHIPPED_DIR / f"{ref}.yaml"
        if shipped.is_file():
            return shipped
    if path.is_file():
        return path
    available = sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))
    close = difflib.get_close_matches(path.stem, available, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    if path.is_dir():
        raise RecipeError(ref, ["is a folder; give a recipe file (.yaml) or a shipped recipe's name"])
    raise RecipeError(ref, [f"no such recipe file; {hint}shipped recipes: {', '.join(available) or 'none'}"])


def load_recipe(ref: str | Path | None = None) -> tuple[Recipe, Path]:
    """Load and validate a recipe; every problem is reported at once in a RecipeError."""
    path = resolve_recipe_path(ref)
    try:
        data = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=_StrictLoader)  # noqa: S506 (safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise RecipeError(str(path), [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(str(path), [f"cannot read the file ({exc})"]) from exc
    if not isinstance(data, dict):
        raise RecipeError(str(path), ["the recipe must be a mapping of keys (name, model, data, ...)"])
    recipe = validate_recipe(data, str(path))
    if path.resolve().parent == SHIPPED_DIR.resolve():
        _find_shipped_data(recipe)
    return recipe, path


def _find_shipped_data(recipe: Recipe) -> None:
    """A shipped recipe's sample data is found wherever the run starts: a relative file source that is
    not in the working folder but is shipped (``data/samples/...``) is read from where it was installed."""
    for source in recipe.data.sources:
        path = Path(source.path)
        if source.type == "file" and not path.is_absolute() and not path.exists():
            shipped = SHIPPED_ROOT / path
            if shipped.is_file():
                source.path = str(shipped)


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (YAML says keys are unique;
    PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice; keep one", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping)


def validate_recipe(data: dict[str, Any], source: str = "<recipe>") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(source, [_describe(err) for err in exc.errors()]) from None


def _describe(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"] if not str(p).startswith(("function-after", "tagged-union"))]
    key = ".".join(part for part in loc if part not in SOURCE_TYPES) or "(top level)"
    key = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", key)
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = sorted(parent.model_fields) if parent else []
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"{key}: unknown key; {hint}allowed: {', '.join(allowed)}"
    if err["type"] == "missing":
        return f"{key}: required key is missing"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "string_pattern_mismatch":
        message = "use letters, digits, '_', '-' and '.', starting with a letter or digit"
    got = err.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    return f"{key}: {message}{shown}"


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Recipe
    for part in loc:
        if model is None or part.isdigit() or part not in model.model_fields:
            if part in SOURCE_TYPES:
                model = SOURCE_TYPES[part]
            continue
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML, saved beside the outputs so reruns and later stages read it back."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
