"""LLaMA-Factory's own argument parser accepts every YAML the project generates for the shipped recipes."""

import pytest

from orchestrator.context import open_run
from orchestrator.errors import UsageError
from orchestrator.hardware import Hardware
from orchestrator.recipe import SHIPPED_DIR, load_recipe
from orchestrator.stages import merge, train

HARDWARE = {
    "cpu": Hardware("cpu"),
    "cuda": Hardware("cuda", ["NVIDIA H100"], [80.0], bf16=True),
    "cuda-fp16": Hardware("cuda", ["Tesla T4"], [15.0], bf16=False),
    "rocm": Hardware("rocm", ["AMD Instinct MI300X"], [192.0], bf16=True),
}


@pytest.fixture(scope="module")
def lf_parsers():
    import transformers.training_args as targs
    from llamafactory.hparams import get_infer_args, get_train_args

    return get_train_args, get_infer_args, targs


def configs_for(recipe_path, hw):
    ctx = open_run(recipe_path, hardware=hw)
    return ctx, train.config(ctx), merge.config(ctx)


@pytest.mark.parametrize("recipe_path", sorted(SHIPPED_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_llamafactory_accepts_generated_yaml(recipe_path, lf_parsers, monkeypatch, tmp_path):
    get_train_args, get_infer_args, targs = lf_parsers
    recipe_hw = load_recipe(recipe_path)[0].hardware
    kinds = [k for k in HARDWARE if k.startswith(recipe_hw)] if recipe_hw != "auto" else list(HARDWARE)
    for kind in kinds:
        ctx, train_yaml, export = configs_for(recipe_path, HARDWARE[kind])
        if kind != "cpu":
            # The parser checks that this machine has a GPU for bf16/fp16; pretend it has one.
            monkeypatch.setattr(targs, "is_torch_bf16_gpu_available", lambda: True)
        train_yaml["output_dir"] = str(tmp_path / kind / "adapter")  # never write into the repo
        model_args, data_args, training_args, finetuning_args, _ = get_train_args(dict(train_yaml))
        lora_rank = train_yaml["lora_rank"]
        assert finetuning_args.finetuning_type == "lora" and finetuning_args.lora_rank == lora_rank
        assert data_args.template == ctx.recipe.model.resolved_template
        assert model_args.quantization_bit == (4 if ctx.recipe.method == "qlora" else None)
        assert training_args.bf16 == (kind in ("cuda", "rocm"))
        assert training_args.fp16 == (kind == "cuda-fp16")
        model_args, data_args, finetuning_args, _ = get_infer_args(dict(export))
        assert model_args.export_dir == export["export_dir"] and model_args.quantization_bit is None


def test_qlora_on_cpu_is_refused():
    with pytest.raises(UsageError, match="qlora needs a GPU"):
        configs_for(SHIPPED_DIR / "qwen3-8b-qlora-cuda.yaml", HARDWARE["cpu"])


def test_hardware_shapes_the_config():
    _, cpu, _ = configs_for(SHIPPED_DIR / "quickstart.yaml", HARDWARE["cpu"])
    _, fp16, _ = configs_for(SHIPPED_DIR / "quickstart.yaml", HARDWARE["cuda-fp16"])
    _, rocm, _ = configs_for(SHIPPED_DIR / "quickstart.yaml", HARDWARE["rocm"])
    assert "bf16" not in cpu and "fp16" not in cpu
    assert fp16["fp16"] is True and "bf16" not in fp16
    assert rocm["bf16"] is True and rocm["flash_attn"] == "sdpa"


def test_passthrough_keys_win(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        (SHIPPED_DIR / "quickstart.yaml").read_text()
        + "llamafactory: {lr_scheduler_type: linear, neat_packing: true}\n"
        + "llamafactory_export: {export_size: 2}\n"
    )
    _, train, export = configs_for(recipe, HARDWARE["cpu"])
    assert train["lr_scheduler_type"] == "linear" and train["neat_packing"] is True
    assert export["export_size"] == 2


def test_llamafactory_accepts_the_held_out_dataset(lf_parsers, tmp_path):
    get_train_args, _, _ = lf_parsers
    recipe = tmp_path / "r.yaml"
    quickstart = (SHIPPED_DIR / "quickstart.yaml").read_text()
    assert "  eval_split: 4 " in quickstart  # the quickstart holds conversations out
    recipe.write_text(quickstart.replace("  eval_split: 4 ", "  eval_split: 0.1 ", 1))
    _, train_yaml, _ = configs_for(recipe, HARDWARE["cpu"])
    train_yaml["output_dir"] = str(tmp_path / "adapter")
    _, data_args, training_args, _, _ = get_train_args(dict(train_yaml))
    assert data_args.eval_dataset == [f"{load_recipe(recipe)[0].dataset_name}_eval"]
    assert training_args.eval_strategy == "steps" and data_args.val_size == 0.0


def test_llamafactory_accepts_the_dpo_config(lf_parsers, tmp_path):
    get_train_args, _, _ = lf_parsers
    recipe = tmp_path / "r.yaml"
    text = (SHIPPED_DIR / "quickstart.yaml").read_text()
    text = text.replace("data:\n", "data:\n  preferences: true\n", 1).replace("train:\n", "train:\n  stage: dpo\n", 1)
    text = text.replace("  eval_split: 4 ", "  eval_split: 0 ", 1)  # DPO trains on pairs, not on held-out chats
    recipe.write_text(
        text.replace(
            "- type: file\n      path: data/samples/conversations.jsonl", "- type: open_webui\n      path: x.json"
        )
    )
    _, train_yaml, _ = configs_for(recipe, HARDWARE["cpu"])
    train_yaml["output_dir"] = str(tmp_path / "adapter")
    _, data_args, _, finetuning_args, _ = get_train_args(dict(train_yaml))
    assert (
        finetuning_args.stage == "dpo" and finetuning_args.pref_beta == 0.1 and finetuning_args.pref_loss == "sigmoid"
    )
    assert data_args.dataset == [f"{load_recipe(recipe)[0].dataset_name}_pref"]
