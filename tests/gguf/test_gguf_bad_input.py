"""Broken input files get one `error:` line naming the file (and the tensor or key) and the fix, exit 2."""

from __future__ import annotations

import json

import pytest
from test_gguf_support import edit_config, edit_safetensors, leftovers, write_safetensors_raw

from orchestrator.cli import main


def refused(capsys, argv, folder, *words) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    assert leftovers(folder) == []
    return err


def set_entry(name, **changes):
    def edit(header):
        header[name] = {k: v for k, v in (header[name] | changes).items() if v is not None}

    return edit


NORM = "model.norm.weight"
HEADER_EDITS = {
    "not an object": lambda path: write_safetensors_raw(path, b"[1, 2, 3]"),
    "bad json": lambda path: write_safetensors_raw(path, b'{"a": {"dtype": "F32",'),
    "bad utf-8": lambda path: write_safetensors_raw(path, b'{"\xff\xfe": {}}'),
    "entry not an object": lambda path: edit_safetensors(path, lambda h: h.update({NORM: [1, 2]})),
    "no dtype": lambda path: edit_safetensors(path, set_entry(NORM, dtype=None)),
    "string shape": lambda path: edit_safetensors(path, set_entry(NORM, shape="64")),
    "negative shape": lambda path: edit_safetensors(path, set_entry(NORM, shape=[-64])),
    "bool in shape": lambda path: edit_safetensors(path, set_entry(NORM, shape=[True])),
    "no data_offsets": lambda path: edit_safetensors(path, set_entry(NORM, data_offsets=None)),
    "one offset": lambda path: edit_safetensors(path, set_entry(NORM, data_offsets=[10**9])),
    "offset before the data": lambda path: edit_safetensors(path, set_entry(NORM, data_offsets=[-128, 0])),
    "offsets reversed": lambda path: edit_safetensors(path, set_entry(NORM, data_offsets=[128, 0])),
}
TENSOR_NAMED = ("entry not an object", "no dtype", "string shape", "negative shape", "bool in shape")


@pytest.mark.parametrize("case", HEADER_EDITS)
def test_broken_safetensors_header(model_copy, tmp_path, capsys, case):
    HEADER_EDITS[case](model_copy / "model.safetensors")
    argv = ["gguf", "convert", str(model_copy), str(tmp_path / "m.gguf")]
    words = ["model.safetensors"] + ([NORM] if case in TENSOR_NAMED else [])
    refused(capsys, argv, tmp_path, *words)


CONFIG_EDITS = {
    "a number": (42, "config.json"),
    "a list": ([1, 2], "config.json"),
    "num_hidden_layers string": ({"num_hidden_layers": "two"}, "num_hidden_layers"),
    "num_hidden_layers bool": ({"num_hidden_layers": True}, "num_hidden_layers"),
    "hidden_size float": ({"hidden_size": 64.5}, "hidden_size"),
    "num_hidden_layers zero": ({"num_hidden_layers": 0}, "num_hidden_layers"),
    "vocab_size negative": ({"vocab_size": -1}, "vocab_size"),
    "rms_norm_eps string": ({"rms_norm_eps": "small"}, "rms_norm_eps"),
    "tie_word_embeddings string": ({"tie_word_embeddings": "false"}, "tie_word_embeddings"),
    "architectures string": ({"architectures": "Qwen3ForCausalLM"}, "architectures"),
    "rope_parameters list": ({"rope_parameters": [1]}, "rope_parameters"),
    "not utf-8": (b"\xff\xfe{}", "config.json"),
}


@pytest.mark.parametrize("case", CONFIG_EDITS)
def test_bad_config_json(model_copy, tmp_path, capsys, case):
    change, word = CONFIG_EDITS[case]
    path = model_copy / "config.json"
    if isinstance(change, bytes):
        path.write_bytes(change)
    elif isinstance(change, dict):
        edit_config(model_copy, **change)
    else:
        path.write_text(json.dumps(change))
    refused(capsys, ["gguf", "convert", str(model_copy), str(tmp_path / "m.gguf")], tmp_path, "config.json", word)


INDEX_EDITS = {
    "bad json": b'{"weight_map": ',
    "not an object": b"[]",
    "weight_map a list": b'{"weight_map": ["model.safetensors"]}',
    "shard name a number": b'{"weight_map": {"model.norm.weight": 7}}',
    "not utf-8": b"\xff{}",
}


@pytest.mark.parametrize("case", INDEX_EDITS)
def test_bad_shard_index(model_copy, tmp_path, capsys, case):
    (model_copy / "model.safetensors.index.json").write_bytes(INDEX_EDITS[case])
    argv = ["gguf", "convert", str(model_copy), str(tmp_path / "m.gguf")]
    refused(capsys, argv, tmp_path, "model.safetensors.index.json")


ADAPTER_EDITS = {
    "bad json": (b'{"r": 8,', "adapter_config.json"),
    "not an object": (b"[8]", "adapter_config.json"),
    "r zero": ({"r": 0}, "r"),
    "r negative": ({"r": -8}, "r"),
    "r string": ({"r": "8"}, "r"),
    "r float": ({"r": 8.5}, "r"),
    "r bool": ({"r": True}, "r"),
    "r missing": ({"r": None}, "r"),
    "lora_alpha string": ({"lora_alpha": "16"}, "lora_alpha"),
    "lora_alpha zero": ({"lora_alpha": 0}, "lora_alpha"),
    "lora_alpha bool": ({"lora_alpha": True}, "lora_alpha"),
    "alpha_pattern value": ({"alpha_pattern": {"v_proj": "x"}}, "alpha_pattern"),
}


@pytest.mark.parametrize("case", ADAPTER_EDITS)
def test_bad_adapter_config(tiny_model, tmp_path, capsys, case):
    from test_gguf_adapter import write_adapter

    change, word = ADAPTER_EDITS[case]
    folder = tmp_path / "adapter"
    write_adapter(folder, tiny_model)
    path = folder / "adapter_config.json"
    if isinstance(change, bytes):
        path.write_bytes(change)
    else:
        config = json.loads(path.read_text()) | change
        path.write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    argv = ["gguf", "convert", str(folder), str(tmp_path / "a.gguf"), "--adapter", "--base", str(tiny_model)]
    err = refused(capsys, argv, tmp_path, "adapter_config.json", word)
    assert "alpha 8" not in err


@pytest.mark.parametrize("kind", ["binary", "folder"])
def test_bad_chat_template_file(small_model, tmp_path, capsys, kind):
    template = tmp_path / "template.jinja"
    if kind == "binary":
        template.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
        words = ["not UTF-8 text"]
    else:
        template.mkdir()
        words = ["is a folder", "give the chat template file"]
    argv = ["gguf", "convert", str(small_model), str(tmp_path / "m.gguf"), "--chat-template", str(template)]
    refused(capsys, argv, tmp_path, str(template), *words)
