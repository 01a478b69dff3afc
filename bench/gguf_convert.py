"""Benchmark the built-in GGUF converter on a random-weight model with the real Qwen3-0.6B shape.

    .venv/bin/python bench/gguf_convert.py [--types bf16,q8_0,f16] [--work DIR] [--runs N]
    LLAMA_CPP_DIR=/path/to/llama.cpp .venv/bin/python bench/gguf_convert.py

The model (hidden 1024, 28 layers, 16 heads, 8 KV heads, head_dim 128, intermediate 3072, vocab 151936,
tied embeddings; about 1.2 GB of bf16) is written once into the work folder with the real Qwen3
tokenizer. Each conversion runs in its own process, on a warm page cache; wall time and that process's
peak RSS are measured. With LLAMA_CPP_DIR set, llama.cpp's convert_hf_to_gguf.py converts the same model
in the same run, the ratios are printed, and every tensor's bytes are compared between the two files.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHAPE = dict(hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128, ffn=3072, vocab=151_936)
CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "hidden_size": SHAPE["hidden"],
    "intermediate_size": SHAPE["ffn"],
    "num_hidden_layers": SHAPE["layers"],
    "num_attention_heads": SHAPE["heads"],
    "num_key_value_heads": SHAPE["kv_heads"],
    "head_dim": SHAPE["head_dim"],
    "vocab_size": SHAPE["vocab"],
    "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "hidden_act": "silu",
    "attention_bias": False,
    "torch_dtype": "bfloat16",
}


def tensor_shapes() -> dict[str, tuple[int, ...]]:
    h, hd, ffn = SHAPE["hidden"], SHAPE["head_dim"], SHAPE["ffn"]
    q, kv = SHAPE["heads"] * hd, SHAPE["kv_heads"] * hd
    shapes = {"model.embed_tokens.weight": (SHAPE["vocab"], h), "model.norm.weight": (h,)}
    for i in range(SHAPE["layers"]):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, q),
            p + "self_attn.q_norm.weight": (hd,),
            p + "self_attn.k_norm.weight": (hd,),
            p + "mlp.gate_proj.weight": (ffn, h),
            p + "mlp.up_proj.weight": (ffn, h),
            p + "mlp.down_proj.weight": (h, ffn),
        }
    return dict(sorted(shapes.items()))


def build_model(folder: Path) -> Path:
    """Write the random bf16 model as one safetensors file, tensor by tensor (bounded memory)."""
    import numpy as np

    from orchestrator.tiny import TOKENIZER_FILES, tokenizer_dir

    marker = folder / "bench_shape.json"
    if marker.is_file() and json.loads(marker.read_text()) == SHAPE:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shapes = tensor_shapes()
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(0)
    with open(folder / "model.safetensors", "wb") as out:
        out.write(struct.pack("<Q", len(raw)) + raw)
        for shape in shapes.values():
            values = rng.standard_normal(int(np.prod(shape)), dtype=np.float32) * np.float32(0.02)
            if len(shape) == 1:
                values += np.float32(1.0)
            (values.view(np.uint32) >> 16).astype(np.uint16).tofile(out)  # bf16 by truncation
    (folder / "config.json").write_text(json.dumps(CONFIG, indent=2))
    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir() / name, folder / name)
    marker.write_text(json.dumps(SHAPE))
    return folder


# A small process starts each conversion and reports its wall time and peak RSS. Linux carries a parent's
# RSS high-water mark into a forked child, so measuring straight from this (larger) process would
# inflate the figures; the launcher itself stays small.
LAUNCHER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=sys.stderr)
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - start
print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "wall": wall, "rss_kb": usage.ru_maxrss}))
"""


def measure(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; returns (wall seconds, peak RSS in MB) of that process."""
    with tempfile.TemporaryFile() as log:
        done = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], stdout=subprocess.PIPE, stderr=log, cwd=REPO)
        report = json.loads(done.stdout)
        if report["rc"] != 0:
            log.seek(0)
            raise SystemExit(f"failed: {' '.join(cmd)}\n{log.read().decode(errors='replace')[-3000:]}")
    return report["wall"], report["rss_kb"] / 1024


def ours(model: Path, out: Path, out_type: str) -> list[str]:
    code = (
        "import sys; from orchestrator.gguf import convert_model; convert_model(sys.argv[1], sys.argv[2], sys.argv[3])"
    )
    return [sys.executable, "-c", code, str(model), str(out), out_type]


def llama_cpp(model: Path, out: Path, out_type: str, llama_dir: Path) -> list[str]:
    return [
        sys.executable,
        str(llama_dir / "convert_hf_to_gguf.py"),
        str(model),
        "--outfile",
        str(out),
        "--outtype",
        out_type,
    ]


def compare(a: Path, b: Path) -> str:
    """Tensor-by-tensor byte comparison (name, type, shape, data) and the metadata keys that differ."""
    from orchestrator.gguf.header import read_gguf_header

    ha, hb = read_gguf_header(a), read_gguf_header(b)
    ta, tb = {t.name: t for t in ha.tensors}, {t.name: t for t in hb.tensors}
    if ta.keys() != tb.keys():
        return f"different tensor names: {sorted(ta.keys() ^ tb.keys())[:5]}"
    diffs = []
    with open(a, "rb") as fa, open(b, "rb") as fb:
        ma, mb = mmap.mmap(fa.fileno(), 0, access=mmap.ACCESS_READ), mmap.mmap(fb.fileno(), 0, access=mmap.ACCESS_READ)
        for name, x in ta.items():
            y = tb[name]
            same = (x.qtype, x.dims) == (y.qtype, y.dims)
            same = same and ma[x.offset : x.offset + x.n_bytes] == mb[y.offset : y.offset + y.n_bytes]
            if not same:
                diffs.append(name)
        ma.close()
        mb.close()
    keys = sorted(k for k in ha.kv.keys() | hb.kv.keys() if not same_value(ha.kv.get(k), hb.kv.get(k)))
    data = f"tensor bytes identical ({len(ta)} tensors)" if not diffs else f"{len(diffs)} tensors differ: {diffs[:4]}"
    return f"{data}; metadata keys that differ: {', '.join(keys) or 'none'}"


def same_value(x, y) -> bool:
    import numpy as np

    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return np.array_equal(np.asarray(x), np.asarray(y))
    return x == y


def warm(folder: Path) -> None:
    for path in folder.glob("*.safetensors"):
        with open(path, "rb") as handle:
            while handle.read(64 << 20):
                pass


def run(args: argparse.Namespace) -> None:
    work = Path(args.work)
    model = build_model(work / "qwen3-0.6b-shape")
    size = sum(p.stat().st_size for p in model.glob("*.safetensors"))
    llama_dir = Path(os.environ["LLAMA_CPP_DIR"]) if os.environ.get("LLAMA_CPP_DIR") else None
    if llama_dir and not (llama_dir / "convert_hf_to_gguf.py").is_file():
        raise SystemExit(f"{llama_dir}: no convert_hf_to_gguf.py (LLAMA_CPP_DIR must be a llama.cpp checkout)")
    print(f"model: {model} ({size / 1e9:.2f} GB bf16 safetensors), {os.cpu_count()} CPUs, runs per figure: {args.runs}")
    for out_type in args.types.split(","):
        warm(model)
        mine = best(args.runs, ours(model, work / f"ours-{out_type}.gguf", out_type))
        line = f"{out_type.upper():5} ours:      {mine[0]:6.2f} s  {mine[1]:7.0f} MB peak RSS  "
        print(line + f"{(work / f'ours-{out_type}.gguf').stat().st_size / 1e9:.3f} GB")
        if llama_dir is None:
            continue
        warm(model)
        theirs = best(args.runs, llama_cpp(model, work / f"llama-{out_type}.gguf", out_type, llama_dir))
        print(
            f"{out_type.upper():5} llama.cpp: {theirs[0]:6.2f} s  {theirs[1]:7.0f} MB peak RSS  "
            f"{(work / f'llama-{out_type}.gguf').stat().st_size / 1e9:.3f} GB"
        )
        print(f"      ratio ours/llama.cpp: wall {mine[0] / theirs[0]:.2f}x, peak RSS {mine[1] / theirs[1]:.2f}x")
        print(f"      {compare(work / f'ours-{out_type}.gguf', work / f'llama-{out_type}.gguf')}")


def best(runs: int, cmd: list[str]) -> tuple[float, float]:
    results = [measure(cmd) for _ in range(runs)]
    return min(r[0] for r in results), max(r[1] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--types", default="bf16,q8_0,f16", help="comma-separated output types")
    parser.add_argument("--work", default="/tmp/gguf-bench", help="folder for the model and the outputs")
    parser.add_argument("--runs", type=int, default=1, help="runs per figure (best wall time is reported)")
    sys.path.insert(0, str(REPO))
    run(parser.parse_args())


if __name__ == "__main__":
    main()
