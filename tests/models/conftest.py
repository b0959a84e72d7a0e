"""The Qwen3-VL tiny model for the model tests (the Qwen2.5-VL one, tiny_model_dir, is in the root conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Qwen3-VL counterpart of ``tiny_model_dir``."""
    from himed.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen3_vl"), arch="qwen3_vl", seed=0)
