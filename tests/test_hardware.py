import types

import pytest

from orchestrator import hardware
from orchestrator.errors import UsageError
from orchestrator.hardware import Hardware


def test_this_machine_is_detected_as_cpu():
    found = hardware.detect()
    assert found.backend == "cpu" and found.precision == "fp32" and found.torch_version


def test_rocm_is_recognised_from_the_torch_build(monkeypatch):
    import torch

    props = types.SimpleNamespace(name="AMD Radeon RX 7900 XTX", total_memory=24 * 2**30)
    monkeypatch.setattr(torch.version, "hip", "6.2.41133", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    found = hardware.detect()
    assert (found.backend, found.precision, found.gpu_memory_gib) == ("rocm", "bf16", [24.0])
    assert found.describe() == "ROCM: AMD Radeon RX 7900 XTX (24 GiB) (bf16)"


def test_precision_follows_the_gpu():
    assert Hardware("cuda", ["T4"], [15.0], bf16=False).precision == "fp16"
    assert Hardware("cuda", ["A100"], [80.0], bf16=True).precision == "bf16"


def test_asking_for_a_missing_backend_is_a_clear_error():
    cpu = Hardware("cpu")
    assert hardware.resolve("auto", cpu) is cpu
    assert hardware.resolve("cpu", Hardware("cuda", ["A100"], [80.0], True)).backend == "cpu"
    with pytest.raises(UsageError, match="hardware: cuda was asked for but this machine offers CPU"):
        hardware.resolve("cuda", cpu)
    with pytest.raises(UsageError, match="ROCm build of torch"):
        hardware.resolve("rocm", cpu)
