"""Fixtures for trainer tests: a small demo dataset and a tiny random-weight model, built once per session."""

import pytest


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    from himed.data.demo import generate_demo

    out = tmp_path_factory.mktemp("demo")
    generate_demo(out, n=60, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from himed.models.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("tiny")
    build_tiny_model(out, arch="qwen2_5_vl", seed=0)
    return out
