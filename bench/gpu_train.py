"""GPU training speed: a generated recipe's train config against LLaMA-Factory's own example YAML for the
same model (examples/train_lora/qwen3_lora_sft.yaml), on the same data and GPU, for the same steps.

Usage: python bench/gpu_train.py [--recipe qwen3-4b-lora-cuda] [--steps 30] [--example PATH]

Each side trains ``--steps`` steps on the sample conversations in one process on GPU 0; printed: effective
tokens/s (LLaMA-Factory's include_effective_tokens_per_second), seconds, peak GPU memory
(torch.cuda.max_memory_allocated in the training process), and the generated/example ratios. --example
reads the YAML from a LLaMA-Factory checkout instead of the copy of its keys below. Without a GPU it
says so and exits.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples" / "conversations.jsonl"
# LLaMA-Factory 0.9.5's examples/train_lora/qwen3_lora_sft.yaml (its model, data and output keys are set below).
EXAMPLE = {
    "trust_remote_code": True,
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "lora",
    "lora_rank": 8,
    "lora_target": "all",
    "cutoff_len": 2048,
    "max_samples": 1000,
    "preprocessing_num_workers": 16,
    "dataloader_num_workers": 4,
    "overwrite_output_dir": True,
    "save_only_model": False,
    "report_to": "none",
    "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 8,
    "learning_rate": 1.0e-4,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.1,
    "bf16": True,
    "ddp_timeout": 180000000,
}
# Runs LLaMA-Factory's training in this process (no torchrun: one GPU), then reports its peak memory.
TRAIN = (
    "import json, sys, torch\n"
    "from llamafactory.train.tuner import run_exp\n"
    "run_exp()\n"
    "print('PEAK ' + json.dumps(torch.cuda.max_memory_allocated()))\n"
)


def measure(name: str, config: dict, work: Path, env: dict[str, str]) -> dict[str, float]:
    out = work / name
    config = {**config, "output_dir": str(out / "adapter"), "include_effective_tokens_per_second": True}
    path = out / "train.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    done = subprocess.run([sys.executable, "-c", TRAIN, str(path)], capture_output=True, text=True, env=env)
    (out / "train.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        sys.exit(f"{name}: training failed (exit {done.returncode}); see {out / 'train.log'}")
    peak = next(int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("PEAK "))
    results = json.loads((out / "adapter" / "all_results.json").read_text())
    return {"tokens_s": results["effective_tokens_per_sec"], "seconds": results["train_runtime"], "peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="qwen3-4b-lora-cuda")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--example", type=Path, help="qwen3_lora_sft.yaml from a LLaMA-Factory checkout")
    args = parser.parse_args()

    from orchestrator import hardware

    hw = hardware.detect()
    if hw.backend == "cpu":
        print(
            "no GPU here (torch sees none): bench/gpu_train.py measures GPU training; run it on a CUDA or ROCm machine"
        )
        return
    from orchestrator.context import open_run
    from orchestrator.recipe_sources import FileSource
    from orchestrator.stages import train
    from orchestrator.stages.data import export

    ctx = open_run(args.recipe, hardware=hw)
    ctx.ensure_model()
    model = str(ctx.model_snapshot or ctx.model_path)
    with tempfile.TemporaryDirectory(prefix="gpu-train-") as tmp:
        work = Path(tmp)
        export([FileSource(type="file", path=str(SAMPLES))], "bench", work / "data")
        data = {"dataset": "bench", "dataset_dir": str(work / "data"), "max_steps": args.steps, "logging_steps": 5}
        generated = {k: v for k, v in train.config(ctx).items() if k not in ("eval_dataset", "val_size")}
        generated.update(data, model_name_or_path=model, save_steps=10 * args.steps)
        generated = {
            k: v for k, v in generated.items() if not k.startswith("eval_") and k != "per_device_eval_batch_size"
        }
        example = yaml.safe_load(args.example.read_text()) if args.example else dict(EXAMPLE)
        example.update(data, model_name_or_path=model, template=ctx.recipe.model.resolved_template)
        example.update(save_steps=10 * args.steps, **({"bf16": True} if hw.bf16 else {"bf16": False, "fp16": True}))
        env = {**ctx.lf_env(), "CUDA_VISIBLE_DEVICES": ctx.lf_env().get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]}
        print(f"{args.recipe} on {hw.describe()}, {args.steps} steps each")
        rows = {name: measure(name, cfg, work, env) for name, cfg in (("example", example), ("generated", generated))}
    print(f"{'':10} {'tokens/s':>10} {'seconds':>9} {'peak GiB':>9}")
    for name, r in rows.items():
        print(f"{name:10} {r['tokens_s']:10.0f} {r['seconds']:9.1f} {r['peak'] / 2**30:9.2f}")
    ex, gen = rows["example"], rows["generated"]
    print(
        f"ratio (generated / example): {gen['tokens_s'] / ex['tokens_s']:.2f}x tokens/s, "
        f"{gen['peak'] / ex['peak']:.2f}x peak memory"
    )


if __name__ == "__main__":
    main()
