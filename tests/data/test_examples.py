"""Study rows -> TRL datasets: columns, lazily decoded images, labels as JSON, tagged targets."""

import json

from PIL import Image

from himed.data.examples import grpo_dataset, sft_dataset, target_completion
from himed.data.loaders import load_rows
from himed.data.sections import parse_strict


def test_grpo_dataset_columns_and_images(demo_dir):
    rows = load_rows("r2gen", demo_dir, "train")[:6]
    dataset = grpo_dataset(rows)
    example = dataset[0]
    assert set(dataset.column_names) == {"id", "prompt", "images", "reference", "findings", "impression", "labels"}
    assert all(isinstance(image, Image.Image) for image in example["images"])
    slots = [part for message in example["prompt"] for part in message["content"] if part["type"] == "image"]
    assert len(slots) == len(example["images"]) == len(rows[0]["images"])
    assert json.loads(example["labels"]) == rows[0]["labels"]
    assert example["reference"].startswith(rows[0]["findings"])


def test_sft_targets_parse_strictly_with_and_without_think(demo_dir):
    rows = load_rows("r2gen", demo_dir, "train")[:6]
    for think in ("labels", "empty"):
        dataset = sft_dataset(rows, think=think)
        for example, row in zip(dataset, rows, strict=True):
            parsed = parse_strict(example["completion"][0]["content"])
            assert parsed is not None
            assert parsed["finding"] == row["findings"]
            assert (parsed["think"] == "") == (think == "empty" or not row["labels"])


def test_findings_only_target():
    row = {"id": "x", "findings": "Lungs are clear.", "impression": "", "labels": {}}
    target = target_completion(row, sections=("think", "finding"), think="empty")
    assert parse_strict(target, ("think", "finding")) == {"think": "", "finding": "Lungs are clear."}
