"""Where a GGUF is written: never over an input, one clear line for each I/O failure, no temporaries left
behind (those of killed runs included), and "is a folder" where a folder is given for a file."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
from test_gguf_support import dead_pid, leftovers

from orchestrator.cli import main


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def one_error_line(capsys, argv) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return code, err


@pytest.mark.parametrize("target", ["model.safetensors", "config.json", "tokenizer.json", "link", "hardlink"])
@pytest.mark.parametrize("out_type", ["q8_0", "q4_k_m"])
def test_output_that_is_an_input_is_refused(model_copy, tmp_path, capsys, monkeypatch, target, out_type):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # q4_k_m: the Ollama route, no llama-quantize
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    out = model_copy / target
    if target == "link":
        out = tmp_path / "link.gguf"
        out.symlink_to(model_copy / "model.safetensors")
    elif target == "hardlink":
        out = tmp_path / "hard.gguf"
        os.link(model_copy / "tokenizer_config.json", out)
    before = digest(model_copy)
    code, err = one_error_line(capsys, ["gguf", "convert", str(model_copy), str(out), "--type", out_type])
    assert code == 2 and str(out) in err and "is the input" in err, err
    assert digest(model_copy) == before and out.exists()
    assert [p.name for p in model_copy.iterdir() if p.name.startswith(".")] == []


def test_adapter_output_that_is_an_input_is_refused(tiny_model, tmp_path, capsys):
    from test_gguf_adapter import write_adapter

    folder = tmp_path / "adapter"
    write_adapter(folder, tiny_model)
    before = digest(folder)
    for out in (folder / "adapter_model.safetensors", folder / "adapter_config.json"):
        code, err = one_error_line(capsys, ["gguf", "convert", str(folder), str(out), "--adapter"])
        assert code == 2 and "is the input" in err, err
    assert digest(folder) == before


def test_output_whose_parent_is_a_file(small_model, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("a file")
    out = tmp_path / "notes.txt" / "m.gguf"
    code, err = one_error_line(capsys, ["gguf", "convert", str(small_model), str(out)])
    assert code in (1, 2) and str(out) in err and "is a file" in err, err
    assert (tmp_path / "notes.txt").read_text() == "a file"


def read_only_target(tmp_path: Path) -> Path:
    """A place this process cannot create files in: a mode 555 folder, or for root (who ignores permission
    bits) sysfs, which refuses new files to everyone."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o555)
        return folder / "m.gguf"
    return Path("/sys/orchestrator-test.gguf")


def test_output_in_a_read_only_place(small_model, tmp_path, capsys):
    out = read_only_target(tmp_path)
    code, err = one_error_line(capsys, ["gguf", "convert", str(small_model), str(out)])
    assert code == 1 and f"cannot write {out}" in err and "choose a" in err, err
    assert not out.exists()


def test_output_under_proc(small_model, capsys):
    out = Path("/proc/orchestrator-test.gguf")
    code, err = one_error_line(capsys, ["gguf", "convert", str(small_model), str(out)])
    assert code == 1 and f"cannot write {out}" in err and "disk space" not in err, err


def test_output_name_too_long(small_model, tmp_path, capsys):
    out = tmp_path / ("m" * 245 + ".gguf")  # fits; its temporary name (".NAME.<pid>.partial") never does
    code, err = one_error_line(capsys, ["gguf", "convert", str(small_model), str(out)])
    assert code == 1 and "use a shorter name" in err, err
    assert leftovers(tmp_path) == []


def test_file_size_limit(small_model, tmp_path):
    """EFBIG: Python ignores SIGXFSZ, so a write past ``ulimit -f`` raises OSError; the old file survives."""
    out = tmp_path / "m.gguf"
    out.write_bytes(b"previous")
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))\n"
        "from orchestrator.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, "gguf", "convert", str(small_model), str(out)], capture_output=True, text=True
    )
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1, run.stderr
    assert "file size limit" in run.stderr and str(out) in run.stderr
    assert out.read_bytes() == b"previous" and leftovers(tmp_path) == ["m.gguf"]


@pytest.mark.parametrize("tag", ["partial", "tmp", "bf16.gguf", "quantize"])
def test_stale_temporaries_of_killed_runs_are_removed(small_model, tmp_path, tag):
    from orchestrator.gguf import convert_model

    out = tmp_path / "m.gguf"
    stale = tmp_path / f".m.gguf.{dead_pid()}.{tag}"
    stale.write_bytes(os.urandom(4096))
    other = tmp_path / f".other.gguf.{dead_pid()}.partial"  # another target's: not ours to remove
    other.write_bytes(b"x")
    convert_model(small_model, out, "f16")
    assert not stale.exists() and other.exists()
    assert leftovers(tmp_path) == sorted([other.name, "m.gguf"])


def test_check_disk_counts_stale_temporaries_as_free(tmp_path, monkeypatch):
    import orchestrator.gguf.stream as stream

    out = tmp_path / "m.gguf"
    need = 10 << 20
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(stream.shutil, "disk_usage", lambda _: usage(1 << 40, 0, need + stream.DISK_MARGIN - 4096))
    with pytest.raises(stream.OrchestratorError, match="not enough disk space"):
        stream.check_disk(out, need)
    (tmp_path / f".m.gguf.{dead_pid()}.partial").write_bytes(os.urandom(1 << 20))
    stream.check_disk(out, need)  # the stale megabyte will be removed before writing: it counts as free


def test_inspect_a_folder_says_so(tmp_path, capsys):
    code, err = one_error_line(capsys, ["gguf", "inspect", str(tmp_path)])
    assert code == 2 and "is a folder; give the .gguf file" in err, err


def test_convert_a_file_given_for_the_model_folder(small_model, tmp_path, capsys):
    argv = ["gguf", "convert", str(small_model / "model.safetensors"), str(tmp_path / "m.gguf")]
    code, err = one_error_line(capsys, argv)
    assert code == 2 and "is a file, not a folder" in err and "no such" not in err, err


def test_convert_to_a_folder_says_so_before_reading_the_model(model_copy, tmp_path, capsys):
    (model_copy / "config.json").write_text("{broken")
    (tmp_path / "out").mkdir()
    code, err = one_error_line(capsys, ["gguf", "convert", str(model_copy), str(tmp_path / "out")])
    assert code == 2 and "is a folder; give the .gguf file" in err, err
