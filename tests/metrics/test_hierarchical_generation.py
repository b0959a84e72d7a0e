"""``himed evaluate --hierarchical``: the findings pass, then the impression pass conditioned on the findings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from himed.data.sections import parse_strict
from himed.metrics.generation import GenerationSettings, HFGenerator, generate_hierarchical, generate_predictions


def make_rows(n: int) -> list[dict]:
    image = Image.new("RGB", (28, 28), 128)
    return [
        {"id": f"s{i}", "images": [image], "views": ["PA"], "findings": f"Finding {i}.", "impression": "Normal."}
        for i in range(n)
    ]


class TwoTurnGenerator:
    """Answers the findings turn with the study's index and the impression turn by quoting the findings answer."""

    def __init__(self) -> None:
        self.calls: list[list] = []

    def generate(self, prompts, images, max_new_tokens):
        self.calls.append(prompts)
        if prompts[0][-1]["content"][-1]["text"].startswith("Write the impression"):
            # Quote the number of the findings answer: proves the second pass sees the first one.
            return [f"<impression>after {p[-2]['content'][0]['text'][-12:-10]}</impression>" for p in prompts]
        return [f"<think>t</think>\n<finding>lungs {i}</finding>" for i in range(len(prompts))]


def settings(**overrides) -> GenerationSettings:
    values = {"model": "m", "data": "d", "data_format": "r2gen", "split": "test"}
    return GenerationSettings(**{**values, "sections": ["think", "finding", "impression"], **overrides})


def test_two_passes_condition_the_impression_on_the_findings(tmp_path: Path):
    generator = TwoTurnGenerator()
    path = generate_predictions(make_rows(3), tmp_path, settings(hierarchical=True), batch_size=2, generator=generator)
    assert [len(call) for call in generator.calls] == [2, 2, 1, 1]  # findings then impression, per batch
    second = generator.calls[1][1]
    assert second[-2] == {"role": "assistant", "content": [{"type": "text", "text": generator_answer(1)}]}
    predictions = [json.loads(line)["prediction"] for line in path.read_text().splitlines()]
    assert predictions[1] == generator_answer(1) + "\n<impression>after  1</impression>"
    assert all(parse_strict(text) is not None for text in predictions)
    assert json.loads((tmp_path / "generation.json").read_text())["hierarchical"] is True


def generator_answer(index: int) -> str:
    return f"<think>t</think>\n<finding>lungs {index}</finding>"


def test_plain_generation_records_no_flag_and_hierarchical_needs_an_impression(tmp_path: Path):
    assert "hierarchical" not in settings().as_dict()  # generation.json of earlier runs still resumes
    with pytest.raises(ValueError, match="impression section"):
        generate_predictions(make_rows(1), tmp_path, settings(hierarchical=True, sections=["think", "finding"]))


def test_cli_hierarchical_needs_a_model(tmp_path: Path, capsys):
    from himed.cli import main

    predictions = tmp_path / "p.jsonl"
    predictions.write_text(json.dumps({"prediction": "a", "reference": "a"}) + "\n")
    code = main(["evaluate", "--predictions", str(predictions), "--out-dir", str(tmp_path / "o"), "--hierarchical"])
    assert code == 2 and "--hierarchical is a way of generating" in capsys.readouterr().err


def test_tiny_model_runs_both_passes(tiny_model_dir):
    generator = HFGenerator(str(tiny_model_dir), device="cpu")
    texts = generate_hierarchical(generator, make_rows(2), ["think", "finding", "impression"], max_new_tokens=3)
    assert len(texts) == 2 and all(isinstance(text, str) and "\n" in text for text in texts)
