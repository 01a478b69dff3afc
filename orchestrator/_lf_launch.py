"""``llamafactory-cli`` with the model's weights loaded in float32: how CPU runs start LLaMA-Factory.

LLaMA-Factory 0.9.5 loads weights with ``torch_dtype="auto"``, so a bf16 checkpoint (the Qwen3 releases,
the tiny test model) stays bf16 even where it computes in fp32: its own fp32 choice for a CPU does
not reach the weights. On a CPU without AVX512-BF16 or AMX (most laptops, many servers) PyTorch then
runs every matmul through its slow reference GEMM, about 15x slower than fp32. This launcher makes
"auto" mean float32 for ``from_pretrained`` and then runs LLaMA-Factory's own ``main`` unchanged.

Run as ``python -m orchestrator._lf_launch train config.yaml`` (the arguments of ``llamafactory-cli``).
With ``FORCE_TORCHRUN=1`` LLaMA-Factory's launcher starts ``torchrun`` on its own file, whose workers would
load the weights unpatched: it is pointed at this file instead, and each worker (``_lf_launch.py
config.yaml``, with torchrun's ``LOCAL_RANK`` set) patches the loading and runs LLaMA-Factory's training.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def load_weights_in_float32() -> None:
    """Make ``from_pretrained(..., torch_dtype="auto")`` (or ``dtype="auto"``) load float32 weights."""
    import torch
    from transformers import PreTrainedModel

    original = PreTrainedModel.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        for key in ("torch_dtype", "dtype"):
            if kwargs.get(key) == "auto":
                kwargs[key] = torch.float32
        return original(cls, *args, **kwargs)

    PreTrainedModel.from_pretrained = classmethod(from_pretrained)


def main() -> None:
    load_weights_in_float32()
    import llamafactory.launcher
    from llamafactory.cli import main as llamafactory_main

    llamafactory.launcher.__file__ = __file__  # the script its torchrun starts: see worker()
    sys.argv = ["llamafactory-cli", *sys.argv[1:]]
    llamafactory_main()


def worker() -> None:
    """A torchrun worker: what llamafactory/launcher.py does as a script, with the weights in float32."""
    load_weights_in_float32()
    print(f"orchestrator: rank {os.environ.get('RANK')} loads the weights in float32", flush=True)
    from llamafactory.train.tuner import run_exp

    run_exp()


if __name__ == "__main__":
    if "LOCAL_RANK" in os.environ and sys.argv[1:2] and sys.argv[1].endswith((".yaml", ".yml", ".json")):
        # run as a script: its folder (orchestrator/) is first on sys.path, where it would shadow modules
        if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
            del sys.path[0]
        worker()
    else:
        main()
