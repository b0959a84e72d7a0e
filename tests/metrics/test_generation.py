"""The --model path: batched generation appended to predictions.jsonl, resuming by id, then scoring."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from himed.metrics.evaluate import evaluate_predictions_file
from himed.metrics.generation import GenerationSettings, VLLMGenerator, generate_predictions


def make_rows(n: int) -> list[dict]:
    image = Image.new("L", (28, 28), 128)
    return [
        {
            "id": f"study{i}",
            "images": [image],
            "views": ["PA"],
            "findings": f"Finding number {i}. The lungs are clear.",
            "impression": "No acute process." if i % 2 else "",
        }
        for i in range(n)
    ]


class EchoGenerator:
    """Writes a report naming the study's first prompt text; fails on call ``fail_on`` (an interruption)."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls, self.fail_on, self.batch_sizes = 0, fail_on, []

    def generate(self, prompts, images, max_new_tokens):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt
        self.batch_sizes.append(len(prompts))
        assert all(len(study) == 1 and study[0].mode == "RGB" for study in images)
        return [
            f"<think>t</think><finding>The lungs are clear. {len(p)}</finding><impression>No acute process.</impression>"
            for p in prompts
        ]


def settings(**overrides) -> GenerationSettings:
    values = {
        "model": "m",
        "data": "d",
        "data_format": "r2gen",
        "split": "test",
        "sections": ["think", "finding", "impression"],
    }
    return GenerationSettings(**{**values, **overrides})


def read_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_an_interrupted_run_resumes_without_repeating_ids(tmp_path: Path) -> None:
    rows = make_rows(7)
    with pytest.raises(KeyboardInterrupt):
        generate_predictions(rows, tmp_path, settings(), batch_size=3, generator=EchoGenerator(fail_on=2))
    path = tmp_path / "predictions.jsonl"
    assert read_ids(path) == ["study0", "study1", "study2"]
    # An interruption in the middle of a write leaves half a line: it is dropped, and that study is generated again.
    with path.open("a") as file:
        file.write('{"id": "study3", "predi')
    second = EchoGenerator()
    generate_predictions(rows, tmp_path, settings(), batch_size=3, generator=second)
    assert read_ids(path) == [f"study{i}" for i in range(7)]
    assert second.batch_sizes == [3, 1]
    record = json.loads(path.read_text().splitlines()[1])
    assert record["reference"] == "Finding number 1. The lungs are clear. No acute process."
    # Nothing left to do: no generator is needed at all.
    generate_predictions(rows, tmp_path, settings(), generator=None)
    result = evaluate_predictions_file(path, tmp_path, rows=rows, allow_empty=True, meteor="nltk")
    assert result["n"] == 7 and result["metrics"]["format_rate"] == 1.0


def test_resuming_with_other_settings_or_other_data_is_an_error(tmp_path: Path) -> None:
    rows = make_rows(4)
    with pytest.raises(KeyboardInterrupt):
        generate_predictions(rows, tmp_path, settings(), batch_size=2, generator=EchoGenerator(fail_on=2))
    with pytest.raises(ValueError, match=r"other settings \(max_new_tokens: 256 -> 64\)"):
        generate_predictions(rows, tmp_path, settings(max_new_tokens=64), generator=EchoGenerator())
    other = [dict(row, id=f"other{i}") for i, row in enumerate(rows)]
    with pytest.raises(ValueError, match=r"lines 1, 2: id not in the dataset split"):
        generate_predictions(other, tmp_path, settings(), generator=EchoGenerator())


def test_vllm_backend_without_vllm_says_how_to_install() -> None:
    if subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True).returncode == 0:
        pytest.skip("vllm is installed here")
    with pytest.raises(ValueError, match=r"--backend vllm needs the vllm package"):
        VLLMGenerator("model", max_images=1)


@pytest.mark.slow
def test_tiny_model_batched_equals_one_by_one_and_scores(tmp_path: Path) -> None:
    """Left padding must not change greedy outputs: batch of 3 == three batches of 1, on a real tiny Qwen2.5-VL."""
    from himed.cli import main

    assert main(["data", "demo", "--out-dir", str(tmp_path / "demo"), "--n", "40"]) == 0
    assert main(["model", "tiny", "--arch", "qwen2_5_vl", "--out-dir", str(tmp_path / "tiny")]) == 0
    common = [
        "--model",
        str(tmp_path / "tiny"),
        "--data",
        str(tmp_path / "demo"),
        "--split",
        "test",
        "--meteor",
        "nltk",
        "--max-new-tokens",
        "16",
        "--device",
        "cpu",
    ]
    assert main(["evaluate", *common, "--out-dir", str(tmp_path / "batched"), "--batch-size", "3"]) == 0
    assert main(["evaluate", *common, "--out-dir", str(tmp_path / "single"), "--batch-size", "1"]) == 0
    batched = (tmp_path / "batched" / "predictions.jsonl").read_text().splitlines()
    single = (tmp_path / "single" / "predictions.jsonl").read_text().splitlines()
    assert len(batched) >= 3 and batched == single
    result = json.loads((tmp_path / "batched" / "metrics.json").read_text())
    assert result["n"] == len(batched) and result["config"]["generation"]["max_new_tokens"] == 16
