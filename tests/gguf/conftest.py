"""Fixtures of the GGUF tests: a small Qwen3 (hidden 64, 2 layers, a 1,056-token vocabulary)."""

from __future__ import annotations

import shutil

import pytest
from test_gguf_support import build_model


@pytest.fixture(scope="session")
def small_model(tiny_model, tmp_path_factory):
    """Shared and read-only: tests that change it take ``model_copy``."""
    return build_model("qwen3", tmp_path_factory.mktemp("small") / "small", tiny_model)


@pytest.fixture
def model_copy(small_model, tmp_path):
    return shutil.copytree(small_model, tmp_path / "model")
