"""Seconds per CPU training step: the orchestrator's train (the tiny bf16 Qwen3, weights loaded in float32
by orchestrator._lf_launch) against raw `llamafactory-cli train` on the same bf16 checkpoint and on an
fp32 copy of it (the reference), all measured in this run on the quickstart data.

Usage: python bench/cpu_train_step.py [--steps N] [--without-bf16-units]
--without-bf16-units sets ONEDNN_MAX_CPU_ISA=AVX2 for all three, which makes oneDNN act as on a CPU
without AVX512-BF16/AMX (most laptops): there bf16 matmuls fall back to PyTorch's reference GEMM.
Run it alone: CPU training slows down many times over when anything else runs beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def fp32_copy(model: Path, out: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(model, dtype="float32").save_pretrained(out)
    AutoTokenizer.from_pretrained(model).save_pretrained(out)
    return out


def seconds_per_step(
    argv_head: list[str], model: Path, data_dir: Path, work: Path, steps: int, extra_env: dict[str, str]
) -> float:
    out = work / "adapter"
    config = {
        "model_name_or_path": str(model),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_target": "all",
        "dataset": "bench",
        "dataset_dir": str(data_dir),
        "template": "qwen3",
        "cutoff_len": 512,
        "output_dir": str(out),
        "overwrite_output_dir": True,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "max_steps": steps,
        "logging_steps": 1,
        "report_to": "none",
    }
    path = work / "train.yaml"
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "cache"), "CUDA_VISIBLE_DEVICES": "", **extra_env}
    done = subprocess.run([*argv_head, "train", str(path)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"training failed: {done.stderr[-2000:]}")
    return json.loads((out / "train_results.json").read_text())["train_runtime"] / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--without-bf16-units", action="store_true", help="act as a CPU without AVX512-BF16/AMX")
    args = parser.parse_args()
    extra = {"ONEDNN_MAX_CPU_ISA": "AVX2"} if args.without_bf16_units else {}
    from orchestrator.recipe import FileSource
    from orchestrator.stages.data import export
    from orchestrator.tiny import build_tiny_qwen3

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bf16 = build_tiny_qwen3(work / "tiny-bf16")
        fp32 = fp32_copy(bf16, work / "tiny-fp32")
        samples = FileSource(type="file", path=str(REPO / "data" / "samples" / "conversations.jsonl"))
        export([samples], "bench", work / "data")
        cli = str(Path(sys.executable).with_name("llamafactory-cli"))
        launcher = [sys.executable, "-m", "orchestrator._lf_launch"]
        reference = seconds_per_step([cli], fp32, work / "data", work / "ref", args.steps, extra)
        raw = seconds_per_step([cli], bf16, work / "data", work / "raw", args.steps, extra)
        ours = seconds_per_step(launcher, bf16, work / "data", work / "ours", args.steps, extra)
    if extra:
        print("as on a CPU without AVX512-BF16/AMX (ONEDNN_MAX_CPU_ISA=AVX2)")
    print(f"raw llamafactory-cli, fp32 weights   {reference:6.2f} s/step (reference)")
    print(f"raw llamafactory-cli, bf16 weights   {raw:6.2f} s/step ({raw / reference:.2f}x)")
    print(f"orchestrator (bf16 checkpoint)       {ours:6.2f} s/step ({ours / reference:.2f}x)")


if __name__ == "__main__":
    main()
