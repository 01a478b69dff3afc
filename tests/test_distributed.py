"""One model across GPUs and nodes: the recipe's launch keys, the environment and YAML they become, what
LLaMA-Factory's own parser makes of every combination, and a real 2-process torchrun training on the CPU."""

import itertools
import json
import os
import re
import socket
import subprocess
import sys

import pytest
import yaml

from orchestrator import distributed, speed
from orchestrator import llamafactory as lf
from orchestrator.cli import main
from orchestrator.errors import RecipeError, UsageError
from orchestrator.hardware import Hardware
from orchestrator.recipe import SHIPPED_DIR, validate_recipe

TWO_GPUS = Hardware("cuda", ["NVIDIA H100", "NVIDIA H100"], [80.0, 80.0], bf16=True)
BASE = yaml.safe_load((SHIPPED_DIR / "quickstart.yaml").read_text())


def recipe(method="lora", hardware="cuda", **train):
    return validate_recipe({**BASE, "method": method, "hardware": hardware, "train": {**BASE["train"], **train}})


def config(r, hw, tmp_path):
    return lf.train_config(
        r, hw, model_path="m", dataset_dir=tmp_path / "data", output_dir=tmp_path / "run" / "adapter"
    )


@pytest.mark.parametrize(
    ("train", "names"),
    [
        ({"nodes": 2}, "master_addr"),
        ({"nodes": 2, "master_addr": "10.0.0.1", "node_rank": 2}, "node_rank: 2 must be below nodes (2)"),
        ({"ray_workers": 2, "gpus": 2}, "drop gpus and nodes"),
        ({"ray_workers": 2, "nodes": 2, "master_addr": "h"}, "drop gpus and nodes"),
        ({"deepspeed": "z4"}, "train.deepspeed"),
    ],
)
def test_the_recipe_refuses_launch_keys_that_cannot_work(train, names):
    with pytest.raises(RecipeError, match=re.escape(names)) as caught:
        recipe(**train)
    assert len(caught.value.problems) == 1 and caught.value.problems[0].startswith("train")


@pytest.mark.parametrize(
    ("hw", "train", "names"),
    [
        (TWO_GPUS, {"gpus": 3}, "train.gpus: 3 but this machine has 2 GPU"),
        (Hardware("cpu"), {"deepspeed": "z2"}, "train.deepspeed: z2 needs GPUs"),
        (Hardware("cpu"), {"ray_workers": 2}, "train.ray_workers"),
    ],
)
def test_what_the_hardware_cannot_do_is_one_line_before_anything_runs(hw, train, names, tmp_path):
    with pytest.raises(UsageError, match=names) as caught:
        config(recipe(hardware=hw.backend, **train), hw, tmp_path)
    assert "\n" not in str(caught.value)


def test_a_dry_run_on_another_machine_does_not_count_an_assumed_gpu(tmp_path):
    assumed = Hardware("cuda", ["CUDA GPU (assumed, not detected here)"], [0.0], bf16=True)
    assert config(recipe(gpus=8), assumed, tmp_path)["bf16"] is True


def test_gpus_and_nodes_become_llamafactory_launcher_variables():
    r = recipe(gpus=4, nodes=3, node_rank=1, master_addr="10.0.0.1", master_port=29555)
    env = distributed.launch_env(r, Hardware("cuda", ["A"] * 4, [80.0] * 4, bf16=True), {"PATH": "/usr/bin"})
    wanted = {"NNODES": "3", "NODE_RANK": "1", "NPROC_PER_NODE": "4", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29555"}
    assert env["FORCE_TORCHRUN"] == "1" and wanted.items() <= env.items()
    assert env["PATH"].split(os.pathsep) == [os.path.dirname(sys.executable), "/usr/bin"]  # its torchrun first
    assert "CUDA_VISIBLE_DEVICES" not in env  # all four GPUs train


def test_one_node_leaves_the_port_to_llamafactory_unless_the_recipe_sets_it():
    env = distributed.launch_env(recipe(gpus=2), TWO_GPUS, {})
    assert env["NPROC_PER_NODE"] == "2" and "MASTER_PORT" not in env and "MASTER_ADDR" not in env
    assert distributed.launch_env(recipe(gpus=2, master_port=31000), TWO_GPUS, {})["MASTER_PORT"] == "31000"


def test_fewer_gpus_than_visible_narrows_cuda_visible_devices():
    four = Hardware("cuda", ["A"] * 3, [80.0] * 3, bf16=True)  # what torch sees with the variable below
    chosen = {"CUDA_VISIBLE_DEVICES": "3,5,7"}
    assert distributed.launch_env(recipe(gpus=2), four, chosen)["CUDA_VISIBLE_DEVICES"] == "3,5"
    assert distributed.launch_env(recipe(), four, chosen) == {"CUDA_VISIBLE_DEVICES": "3"}
    # eval launches run on one GPU: LLaMA-Factory would otherwise start torchrun over all it sees
    assert distributed.launch_env(recipe(gpus=2), four, {}, train=False) == {"CUDA_VISIBLE_DEVICES": "0"}
    assert distributed.launch_env(recipe(ray_workers=3), four, {}) == {"USE_RAY": "1"}


def test_deepspeed_alone_still_goes_through_torchrun(tmp_path):
    r = recipe(deepspeed="z3_offload")
    assert distributed.launch_env(r, TWO_GPUS, {})["NPROC_PER_NODE"] == "1"
    cfg = config(r, TWO_GPUS, tmp_path)
    assert cfg["deepspeed"] == str(tmp_path / "run" / distributed.DEEPSPEED_FILE)
    zero = distributed.deepspeed_config("z3_offload")["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_param"]["device"] == zero["offload_optimizer"]["device"] == "cpu"


def test_speed_keys_follow_the_gpu_and_the_installed_packages(monkeypatch, tmp_path):
    monkeypatch.setattr(speed, "installed", lambda module: True)
    fast = config(recipe(packing=True), TWO_GPUS, tmp_path)
    assert fast["flash_attn"] == "fa2" and fast["enable_liger_kernel"] is True and fast["neat_packing"] is True
    assert fast["include_effective_tokens_per_second"] is True and "disable_gradient_checkpointing" not in fast
    t4 = Hardware("cuda", ["Tesla T4"], [15.0], bf16=False)
    assert config(recipe(), t4, tmp_path)["flash_attn"] == "sdpa"  # FlashAttention-2 needs Ampere
    monkeypatch.setattr(speed, "installed", lambda module: False)
    plain = config(recipe(gradient_checkpointing=False), TWO_GPUS, tmp_path)
    assert plain["flash_attn"] == "sdpa" and "enable_liger_kernel" not in plain and "neat_packing" not in plain
    assert plain["disable_gradient_checkpointing"] is True
    cpu = config(recipe(hardware="cpu"), Hardware("cpu"), tmp_path)
    assert not {"flash_attn", "enable_liger_kernel", "include_effective_tokens_per_second"} & set(cpu)


def test_the_dry_run_shows_the_environment_command_reasons_and_each_node(workdir, capsys):
    path = workdir / "multi.yaml"
    train = {**BASE["train"], "gpus": 2, "nodes": 2, "master_addr": "10.1.2.3", "deepspeed": "z2"}
    path.write_text(yaml.safe_dump({**BASE, "hardware": "cuda", "train": train}))
    assert main(["run", str(path), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    command = next(line for line in err.splitlines() if " env " in line)
    for var in ("FORCE_TORCHRUN=1", "NNODES=2", "NODE_RANK=0", "NPROC_PER_NODE=2", "MASTER_ADDR=10.1.2.3"):
        assert var in command
    assert command.rstrip().endswith(f"train {workdir}/llama_factory_data/runs/quickstart/train.yaml")
    assert "flash_attn: sdpa - " in err and "include_effective_tokens_per_second: True - " in err
    assert f"node 1: orchestrator run {path} --node-rank 1 --until train" in err
    ds_block = out.split(f"# {workdir}/llama_factory_data/runs/quickstart/{distributed.DEEPSPEED_FILE}\n")[1]
    assert json.loads(ds_block) == distributed.deepspeed_config("z2")
    assert main(["run", str(path), "--dry-run", "--node-rank", "1"]) == 0
    assert "node 0: orchestrator run" in capsys.readouterr().err
    assert not (workdir / "llama_factory_data").exists()


PARSE = """
import json, sys, yaml
import transformers.training_args as targs
targs.is_torch_bf16_gpu_available = lambda: True  # the parser checks that this machine has a GPU for bf16
from transformers.integrations import is_deepspeed_zero3_enabled
from llamafactory.hparams import get_ray_args, get_train_args
for path in sys.argv[1:]:
    cfg = yaml.safe_load(open(path))
    model, data, train, tune, _ = get_train_args(dict(cfg))
    print(json.dumps({"path": path, "world": train.world_size, "zero3": is_deepspeed_zero3_enabled(),
        "deepspeed": train.deepspeed, "ray": get_ray_args(dict(cfg)).ray_num_workers, "packing": data.packing,
        "attn": str(model.flash_attn), "bits": model.quantization_bit,
        "tps": tune.include_effective_tokens_per_second}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_llamafactory_parses_every_generated_combination(tmp_path):
    """gpus x deepspeed x ray_workers x packing x method on a 2-GPU CUDA machine, each YAML (and DeepSpeed
    JSON) as the train stage writes it, parsed by LLaMA-Factory in one process that torchrun could have
    started (rank 0 of a world of one: DeepSpeed is only accepted distributed)."""
    expected, paths = {}, []
    launches = [{"gpus": 1}, {"gpus": 2}, {"ray_workers": 2}]
    for n, (launch, ds, packing, method) in enumerate(
        itertools.product(launches, [None, "z2", "z3", "z3_offload"], [False, True], ["lora", "qlora"])
    ):
        r = recipe(method=method, packing=packing, deepspeed=ds, **launch)
        run_dir = tmp_path / str(n)
        cfg = lf.train_config(r, TWO_GPUS, model_path="m", dataset_dir=tmp_path, output_dir=run_dir / "adapter")
        if ds:
            run_dir.mkdir()
            (run_dir / distributed.DEEPSPEED_FILE).write_text(json.dumps(distributed.deepspeed_config(ds)))
        paths.append(str(run_dir.with_suffix(".yaml")))
        run_dir.with_suffix(".yaml").write_text(yaml.safe_dump(cfg))
        expected[paths[-1]] = (ds, launch.get("ray_workers", 1), packing, method, cfg.get("deepspeed"))
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", CUDA_VISIBLE_DEVICES="")
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), ALLOW_EXTRA_ARGS="0")
    done = subprocess.run([sys.executable, "-c", PARSE, *paths], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(paths) == 48
    for got in results:
        ds, ray, packing, method, ds_path = expected[got["path"]]
        assert got["deepspeed"] == ds_path and got["zero3"] == (ds in ("z3", "z3_offload"))
        assert got["ray"] == ray and got["packing"] is packing and got["bits"] == (4 if method == "qlora" else None)
        assert got["attn"].endswith("sdpa") and got["tps"] is True and got["world"] == 1


def test_a_failed_torchrun_shows_what_the_workers_said(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("[rank0]: ValueError: bad data\n[rank1]: ValueError: bad data\nsubprocess.CalledProcessError: x\n")
    assert lf.error_lines(log) == ["ValueError: bad data"]  # once, and not torchrun's own wrapper error


@pytest.mark.slow
def test_two_torchrun_processes_train_the_tiny_model_on_the_cpu(tmp_path, tiny_model):
    from orchestrator.stages.train import train

    assert (
        main(["data", "export", "--name", "chats", "--dataset-dir", str(tmp_path / "data"), "--file", str(SAMPLE)]) == 0
    )
    r = recipe(hardware="cpu", gpus=2, max_steps=2, cutoff_len=128, per_device_train_batch_size=2, save_steps=100)
    r.data.name, r.data.eval_split = "chats", 0
    hw, run_dir = Hardware("cpu"), tmp_path / "run"
    cfg = lf.train_config(
        r, hw, model_path=str(tiny_model), dataset_dir=tmp_path / "data", output_dir=run_dir / "adapter"
    )
    env = lf.subprocess_env(str(tiny_model), hw, run_dir / "cache")
    env.update(distributed.launch_env(r, hw, env))
    result = train(cfg, run_dir, env=env, float32_weights=True)
    log = result.log_path.read_text()
    assert "Initializing 2 distributed tasks" in log
    for rank in (0, 1):
        assert f"Process rank: {rank}, world size: 2" in log
        assert f"orchestrator: rank {rank} loads the weights in float32" in log  # the patch reached each worker
    assert "Total train batch size (w. parallel, distributed & accumulation) = 4" in log  # 2 processes x 2
    assert len(result.losses) == 2 and (result.adapter_dir / "adapter_model.safetensors").is_file()


SAMPLE = SHIPPED_DIR.parent / "data" / "samples" / "conversations.jsonl"
