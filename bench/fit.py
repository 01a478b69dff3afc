"""The memory estimate (orchestrator.fit) against the peak torch measures, on a GPU, for a few settings.

Each setting builds a real Qwen3 shape (0.6B, 1.7B) with random weights locally (no hub), wraps it in LoRA on
every linear layer as LLaMA-Factory does (trainable parameters in fp32, gradient checkpointing with reentrant
checkpoints, SDPA attention, AdamW), optionally on a 4-bit NF4 base through bitsandbytes, and trains a few
steps on random tokens of cutoff_len. It prints the estimate without its overhead part (what the caching
allocator hands out) against torch.cuda.max_memory_allocated, and the whole estimate against
max_memory_reserved plus the CUDA context, with the ratios.

Usage: python bench/fit.py [--steps N] [--sizes 0.6b,1.7b]
Exits with a message on a machine without a CUDA or ROCm GPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from orchestrator.fit import GIB, QWEN3_SHAPES, Setting, Shape, estimate

LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def settings(sizes: list[str], qlora: bool) -> list[tuple[str, Setting]]:
    out = []
    for size in sizes:
        out += [
            (size, Setting(cutoff_len=1024, batch=2)),
            (size, Setting(cutoff_len=1024, batch=2, gradient_checkpointing=False)),
            (size, Setting(cutoff_len=2048, batch=1, lora_rank=16)),
        ]
        if qlora:
            out.append((size, Setting(method="qlora", cutoff_len=2048, batch=1)))
    return out


def build(size: str, folder: Path) -> Path:
    """The shape's random-weight checkpoint in bf16, saved once (QLoRA quantizes while loading it)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        config = Qwen3Config(**QWEN3_SHAPES[size], max_position_embeddings=4096, dtype="bfloat16")
        with torch.device("cuda"):
            model = Qwen3ForCausalLM(config).to(torch.bfloat16)
        model.save_pretrained(folder)
        del model
        torch.cuda.empty_cache()
    return folder


def measure(checkpoint: Path, s: Setting, steps: int) -> tuple[float, float]:
    """Peak allocated and peak reserved GiB over ``steps`` training steps."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    quant = None
    if s.method == "qlora":
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model = AutoModelForCausalLM.from_pretrained(
        checkpoint, dtype=torch.bfloat16, quantization_config=quant, device_map="cuda", attn_implementation="sdpa"
    )
    if s.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
        model.enable_input_require_grads()
    model.config.use_cache = False
    lora = LoraConfig(r=s.lora_rank, lora_alpha=2 * s.lora_rank, target_modules=LINEARS, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    vocab = model.config.vocab_size
    for _ in range(steps):
        ids = torch.randint(0, vocab, (s.batch, s.cutoff_len), device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    allocated, reserved = torch.cuda.max_memory_allocated() / GIB, torch.cuda.max_memory_reserved() / GIB
    del model, optimizer
    torch.cuda.empty_cache()
    return allocated, reserved


def context_gib() -> float:
    """What the process holds on the GPU outside torch's allocator (the CUDA context, cuBLAS, kernels)."""
    import torch

    free, total = torch.cuda.mem_get_info()
    return (total - free) / GIB - torch.cuda.memory_reserved() / GIB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--sizes", default="0.6b,1.7b", help=f"comma list of {', '.join(QWEN3_SHAPES)}")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("bench/fit.py measures on a GPU: torch is not installed (pip install -e '.[train]')")
        return 0
    if not torch.cuda.is_available():
        print("bench/fit.py measures on a GPU: no CUDA or ROCm GPU here; `orchestrator plan RECIPE` estimates anyway")
        return 0
    import importlib.util

    qlora = importlib.util.find_spec("bitsandbytes") is not None
    if not qlora:
        print("bitsandbytes is not installed: QLoRA settings skipped")
    torch.zeros(1, device="cuda")  # start the CUDA context, so that its size can be read
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA context ~{context_gib():.2f} GiB")
    header = "model    method cutoff batch ckpt rank  est.alloc measured ratio  est.peak reserved+ctx ratio"
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for size, s in settings(args.sizes.split(","), qlora):
            e = estimate(Shape.of(QWEN3_SHAPES[size], size), s)
            allocated_est = e.peak_gib - e.parts["overhead"]
            try:
                allocated, reserved = measure(build(size, Path(tmp) / size), s, args.steps)
            except torch.cuda.OutOfMemoryError:
                print(f"{size:<8} {s.method:<6} {s.cutoff_len:>6} {s.batch:>5}  out of memory")
                continue
            total, ckpt = reserved + context_gib(), "on" if s.gradient_checkpointing else "off"
            print(
                f"{size:<8} {s.method:<6} {s.cutoff_len:>6} {s.batch:>5} {ckpt:>4}"
                f" {s.lora_rank:>4} {allocated_est:>9.2f} {allocated:>8.2f} {allocated_est / allocated:>5.2f}"
                f" {e.peak_gib:>9.2f} {total:>12.2f} {e.peak_gib / total:>5.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
