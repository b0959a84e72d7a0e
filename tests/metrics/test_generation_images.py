"""himed evaluate --model with real images: a truncated JPEG under error/skip, and the image budget in both backends."""

from __future__ import annotations

import json
import sys
import types

import pytest

from himed.cli import main
from himed.metrics.generation import GenerationSettings, HFGenerator, VLLMGenerator
from himed.models.image_budget import current_budget
from tests.trainers.test_bad_images import break_study


@pytest.fixture()
def broken_test_split(tmp_path, demo_dir):
    return break_study(demo_dir, tmp_path / "data", "test", 0)


def evaluate_args(root, tiny_model_dir, out_dir, *extra):
    return [
        "evaluate",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(root),
        "--out-dir",
        str(out_dir),
        "--max-new-tokens",
        "4",
        "--meteor",
        "nltk",
        "--limit",
        "4",
        *extra,
    ]


def test_evaluate_error_names_the_study_and_file(tmp_path, tiny_model_dir, broken_test_split, capsys):
    root, study, bad = broken_test_split
    assert main(evaluate_args(root, tiny_model_dir, tmp_path / "out")) != 0
    assert f"study {study}: image {bad} cannot be decoded (OSError: image file is truncated" in capsys.readouterr().err


def test_evaluate_skip_scores_the_rest(tmp_path, tiny_model_dir, broken_test_split, caplog):
    root, study, _ = broken_test_split
    out = tmp_path / "out"
    assert main(evaluate_args(root, tiny_model_dir, out, "--on-bad-rows", "skip", "--max-pixels", "3136")) == 0
    ids = [json.loads(line)["id"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert study not in ids and len(ids) == 3
    assert json.loads((out / "metrics.json").read_text())["n"] == 3
    assert f"skipped study {study}" in caplog.text
    assert json.loads((out / "generation.json").read_text())["max_pixels"] == 3136


def test_hf_generator_applies_the_budget(tiny_model_dir):
    generator = HFGenerator(str(tiny_model_dir), device="cpu", min_pixels=784, max_pixels=50_176)
    assert current_budget(generator.processor) == (784, 50_176)


def test_vllm_generator_passes_the_budget_as_mm_processor_kwargs(tiny_model_dir, monkeypatch):
    seen = {}
    fake = types.ModuleType("vllm")
    fake.LLM = lambda **kwargs: seen.update(kwargs)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    generator = VLLMGenerator(str(tiny_model_dir), max_images=2, min_pixels=784, max_pixels=50_176)
    assert seen["mm_processor_kwargs"] == {"min_pixels": 784, "max_pixels": 50_176}
    assert current_budget(generator.processor) == (784, 50_176)
    VLLMGenerator(str(tiny_model_dir), max_images=2)
    assert seen["mm_processor_kwargs"] is None  # no budget given: vLLM reads the model folder's


def test_settings_without_a_budget_record_as_before():
    settings = GenerationSettings(model="m", data="d", data_format="r2gen", split="test", sections=["finding"])
    assert "max_pixels" not in settings.as_dict() and "min_pixels" not in settings.as_dict()
