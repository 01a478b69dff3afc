"""`orchestrator gguf convert|inspect` through main(), the K-quant routes, and a light --help."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from orchestrator.cli import main


def test_help_imports_nothing_heavy():
    code = (
        "import sys; from orchestrator.cli import build_parser; build_parser().parse_args(['gguf', 'inspect', 'x']);"
        "heavy = [m for m in ('numpy', 'gguf', 'torch', 'transformers', 'safetensors') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_convert_then_inspect(small_model, tmp_path, capsys):
    out = tmp_path / "small.gguf"
    template = tmp_path / "trained.jinja"
    template.write_text("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")
    assert (
        main(["gguf", "convert", str(small_model), str(out), "--type", "Q8_0", "--chat-template", str(template)]) == 0
    )
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "Q8_0" in printed and "the training template" in printed

    assert main(["gguf", "inspect", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "qwen3" in printed and "file type:       Q8_0" in printed and "context length:  2048" in printed
    assert "eos token:" in printed and "<|im_start|>{{ m.role }}" in printed
    assert "OK (header and gguf.GGUFReader read-back)" in printed

    assert main(["gguf", "inspect", str(out), "--quick", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["chat_template"] == template.read_text() and info["verified"] and info["tensor_types"]["Q8_0"] == 15


def test_inspect_flags_a_truncated_file(small_model, tmp_path, capsys):
    from orchestrator.gguf import convert_model, inspect_gguf

    path = convert_model(small_model, tmp_path / "t.gguf", "f16").path
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 4096)
    info = inspect_gguf(path)
    assert not info["verified"] and any("past the end" in p for p in info["problems"])
    assert main(["gguf", "inspect", str(path), "--quick"]) == 1
    assert "PROBLEMS" in capsys.readouterr().out


def test_cli_refusals_exit_2_with_one_line(tmp_path, small_model, capsys):
    assert main(["gguf", "convert", str(tmp_path), str(tmp_path / "x.gguf")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no config.json" in err and err.count("\n") == 1
    assert main(["gguf", "convert", str(small_model), str(tmp_path / "x.gguf"), "--type", "q9"]) == 2
    assert main(["gguf", "inspect", str(tmp_path / "missing.gguf")]) == 2
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all, really not")
    assert main(["gguf", "inspect", str(tmp_path / "junk.gguf")]) == 2
    assert "not a GGUF file (it does not start with the GGUF magic)" in capsys.readouterr().err


def test_adapter_through_the_cli(tmp_path, tiny_model, capsys):
    from test_gguf_adapter import write_adapter

    write_adapter(tmp_path / "adapter", tiny_model)
    out = tmp_path / "adapter.gguf"
    assert main(["gguf", "convert", str(tmp_path / "adapter"), str(out), "--adapter", "--base", str(tiny_model)]) == 0
    assert "qwen3 adapter, F16" in capsys.readouterr().out
    assert main(["gguf", "convert", str(tmp_path / "adapter"), str(tmp_path / "m.gguf")]) == 2
    assert "--adapter" in capsys.readouterr().err


def fake_llama_quantize(folder):
    """A stand-in for the llama-quantize binary: records its arguments and copies input to output."""
    folder.mkdir(parents=True)
    tool = folder / "llama-quantize"
    tool.write_text(
        f"#!{sys.executable}\nimport json, shutil, sys\n"
        "print(json.dumps(sys.argv[1:]))\nshutil.copyfile(sys.argv[1], sys.argv[2])\n"
    )
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return tool


def test_kquant_runs_llama_quantize_from_llama_cpp_dir(small_model, tmp_path, monkeypatch):
    from orchestrator.gguf import convert_model

    tool = fake_llama_quantize(tmp_path / "llama.cpp" / "build" / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path / "llama.cpp"))
    out = tmp_path / "q.gguf"
    result = convert_model(small_model, out, "q5_k_m")
    assert result.kquant_route == "llama-quantize" and result.requested_type == "q5_k_m"
    log = (tmp_path / "q.gguf.llama-quantize.log").read_text().strip()
    src, dst, ftype, threads = json.loads(log)
    assert ftype == "Q5_K_M" and threads == str(os.cpu_count()) and src.endswith(".bf16.gguf")
    assert dst != str(out)  # written under a temporary name, then renamed
    assert sorted(p.name for p in tmp_path.iterdir() if "gguf" in p.name) == ["q.gguf", "q.gguf.llama-quantize.log"]
    assert str(tool) in " ".join(result.notes)
