"""A stand-in for ``llamafactory-cli`` in pipeline tests that need no real training: it reads the YAML it
is given and writes what LLaMA-Factory writes (trainer log, adapter, results), shaped by FAKE_LF_MODE.

Modes: ok | nan_loss | nan_weights | sleep (starts a grandchild and sleeps, for kill tests).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from safetensors.numpy import save_file


def main() -> int:
    command, config_path = sys.argv[1], Path(sys.argv[2])
    config = yaml.safe_load(config_path.read_text())
    mode = os.environ.get("FAKE_LF_MODE", "ok")
    Path(os.environ["FAKE_LF_SEEN"]).write_text(json.dumps({"env": dict(os.environ), "command": command}))
    if mode == "sleep":
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", os.environ["FAKE_LF_MARKER"]])
        print("trainer started", flush=True)
        time.sleep(120)
        return 0
    if command == "export":
        out = Path(config["export_dir"])
        out.mkdir(parents=True, exist_ok=True)
        save_file({"model.embed_tokens.weight": np.zeros((4, 4), np.float32)}, str(out / "model.safetensors"))
        return 0
    out = Path(config["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(os.environ["HF_DATASETS_CACHE"])
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "tokenized.arrow").write_text("private conversations")
    time.sleep(float(os.environ.get("FAKE_LF_DELAY", "0")))  # model loading: the old log is still there
    loss = float("nan") if mode == "nan_loss" else 1.5
    with (out / "trainer_log.jsonl").open("w") as log:
        for step in (1, 2):
            log.write(json.dumps({"current_steps": step, "total_steps": 2, "loss": loss}) + "\n")
    weight = np.full((8, 4), np.nan if mode == "nan_weights" else 0.5, np.float32)
    save_file({"base_model.model.layers.0.q_proj.lora_A.weight": weight}, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
    (out / "train_results.json").write_text(json.dumps({"train_loss": loss}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
