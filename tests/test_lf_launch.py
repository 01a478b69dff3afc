"""CPU runs start LLaMA-Factory through orchestrator._lf_launch, which loads a bf16 checkpoint in float32."""

import subprocess
import sys
from pathlib import Path

from orchestrator import llamafactory as lf

LOAD = (
    "import sys, torch\n"
    "from transformers import AutoModelForCausalLM\n"
    "if sys.argv[2] == 'launcher':\n"
    "    from orchestrator._lf_launch import load_weights_in_float32\n"
    "    load_weights_in_float32()\n"
    "model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype='auto')\n"  # as LLaMA-Factory 0.9.5
    "print(next(model.parameters()).dtype)\n"
)


def loaded_dtype(model: Path, mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", LOAD, str(model), mode], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_launcher_loads_a_bf16_checkpoint_in_float32(tiny_model):
    assert loaded_dtype(tiny_model, "plain") == "torch.bfloat16"  # what LLaMA-Factory alone would train in
    assert loaded_dtype(tiny_model, "launcher") == "torch.float32"


def test_cpu_runs_use_the_launcher_and_gpu_runs_the_cli(tmp_path):
    config = tmp_path / "train.yaml"
    assert lf.cli_argv("train", config, float32_weights=True) == [
        sys.executable,
        "-m",
        "orchestrator._lf_launch",
        "train",
        str(config),
    ]
    assert lf.cli_argv("train", config) == [lf.cli_path(), "train", str(config)]
