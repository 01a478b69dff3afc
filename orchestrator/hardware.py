"""What machine this is: NVIDIA CUDA, AMD ROCm or CPU, the GPUs, their memory, and bf16 support."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.errors import UsageError

log = logging.getLogger(__name__)


@dataclass
class Hardware:
    backend: str  # "cuda" | "rocm" | "cpu"
    gpus: list[str] = field(default_factory=list)
    gpu_memory_gib: list[float] = field(default_factory=list)
    bf16: bool = False
    torch_version: str = ""

    @property
    def precision(self) -> str:
        """bf16 where the GPU supports it, fp16 on other GPUs, fp32 on the CPU."""
        if self.backend == "cpu":
            return "fp32"
        return "bf16" if self.bf16 else "fp16"

    def describe(self) -> str:
        if self.backend == "cpu":
            return "CPU (fp32)"
        names = ", ".join(f"{n} ({m:.0f} GiB)" for n, m in zip(self.gpus, self.gpu_memory_gib, strict=True))
        return f"{self.backend.upper()}: {names} ({self.precision})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "precision": self.precision}


def detect() -> Hardware:
    """Probe torch. A ROCm build of torch reports its GPUs through ``torch.cuda`` with ``torch.version.hip`` set.
    Without torch (the train extra not installed) no GPU can be used: the CPU, with no torch version."""
    try:
        import torch
    except ImportError:
        return Hardware("cpu")

    backend = "rocm" if getattr(torch.version, "hip", None) else "cuda"
    if not torch.cuda.is_available():
        return Hardware("cpu", torch_version=torch.__version__)
    count = torch.cuda.device_count()
    props = [torch.cuda.get_device_properties(i) for i in range(count)]
    return Hardware(
        backend=backend,
        gpus=[p.name for p in props],
        gpu_memory_gib=[round(p.total_memory / 2**30, 1) for p in props],
        bf16=bool(torch.cuda.is_bf16_supported()),
        torch_version=torch.__version__,
    )


def resolve(requested: str, detected: Hardware | None = None, *, assume: bool = False) -> Hardware:
    """The hardware a recipe runs on: ``auto`` takes what is detected; a named backend must be present,
    unless ``assume`` (a dry run on another machine): then a bf16-capable GPU of that kind is assumed."""
    found = detected or detect()
    if requested in ("auto", found.backend):
        return found
    if requested == "cpu":
        return Hardware("cpu", torch_version=found.torch_version)
    if assume:
        return Hardware(requested, [f"{requested.upper()} GPU (assumed, not detected here)"], [0.0], bf16=True)
    hint = {
        "cuda": "install a CUDA build of torch and check `nvidia-smi`",
        "rocm": "install a ROCm build of torch and check `rocm-smi`",
    }[requested]
    if not found.torch_version:
        hint = f"torch is not installed; install the train extra (pip install -e '.[train]') or {hint}"
    raise UsageError(
        f"hardware: {requested} was asked for but this machine offers {found.describe()}; {hint}, or set hardware: auto"
    )
