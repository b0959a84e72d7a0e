"""Shared test set-up. Threads are pinned to one: on 2 cores, contention makes tiny-model steps 10-40x slower."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
# The image-check cache (himed.data.image_checks) goes to a fresh folder per test session, not ~/.cache.
os.environ.setdefault("HIMED_CACHE_DIR", __import__("tempfile").mkdtemp(prefix="himed-cache-"))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Qwen2.5-VL (default sizes, demo-corpus tokenizer, seed 0) built once per session."""
    from himed.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen2_5_vl"), arch="qwen2_5_vl", seed=0)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 procedural demo studies (R2Gen layout, seed 0), written once per session."""
    from himed.data.demo import generate_demo

    out = tmp_path_factory.mktemp("demo")
    generate_demo(out, n=60, seed=0)
    return out
