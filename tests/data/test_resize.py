"""The pre-resized image cache gives the processor exactly the pixel values the originals give at that budget."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from himed.cli import main
from himed.data.loaders import load_rows
from himed.data.resize import MANIFEST, resized_image
from himed.models.image_budget import apply_image_budget, resize_target

MIN_PIXELS, MAX_PIXELS = 28 * 28 * 16, 28 * 28 * 160


def qwen_image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return apply_image_budget(Qwen2VLImageProcessorPil(), MIN_PIXELS, MAX_PIXELS)


def write_jpeg(path: Path, width: int, height: int, seed: int, mode: str = "L") -> Path:
    rng = np.random.default_rng(seed)
    shape = (height, width) if mode == "L" else (height, width, 3)
    gradient = np.linspace(30, 220, width).reshape((1, width) + (() if mode == "L" else (1,)))
    pixels = gradient + rng.normal(0, 20, shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8), mode).save(path, quality=85)
    return path


@pytest.fixture()
def dataset(tmp_path):
    """An R2Gen folder of 3 studies with full-size-ish JPEGs (grayscale and one colour), one with two views."""
    root = tmp_path / "data"
    entries = []
    for i, (size, mode) in enumerate([((900, 760), "L"), ((1000, 800), "RGB"), ((640, 1200), "L")]):
        views = 2 if i == 0 else 1
        paths = [
            write_jpeg(root / "images" / f"s{i}" / f"{v}.jpg", *size, seed=10 * i + v, mode=mode) for v in range(views)
        ]
        entries.append(
            {
                "id": f"s{i}",
                "findings": "Clear lungs.",
                "impression": "Normal.",
                "split": "train",
                "image_path": [str(p.relative_to(root / "images")) for p in paths],
            }
        )
    (root / "annotation.json").write_text(json.dumps({"train": entries[:2], "test": entries[2:]}))
    return root


def test_cached_pixel_values_equal_the_originals(dataset, tmp_path):
    processor = qwen_image_processor()
    out = tmp_path / "cache"
    args = ["data", "resize", "--data", str(dataset), "--splits", "train,test", "--out-dir", str(out)]
    assert main([*args, "--min-pixels", str(MIN_PIXELS), "--max-pixels", str(MAX_PIXELS)]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert (manifest["min_pixels"], manifest["max_pixels"], manifest["factor"]) == (MIN_PIXELS, MAX_PIXELS, 28)
    assert manifest["studies"] == {"train": 2, "test": 1} and manifest["images"] == 4
    originals = {r["id"]: r for split in ("train", "test") for r in load_rows("r2gen", dataset, split)}
    cached = {r["id"]: r for split in ("train", "test") for r in load_rows("jsonl", out, split)}
    assert set(cached) == set(originals)
    for study, row in originals.items():
        assert cached[study]["findings"] == row["findings"]
        for original, small in zip(row["images"], cached[study]["images"], strict=True):
            with Image.open(original) as a, Image.open(small) as b:
                assert b.size[::-1] == resize_target(a.height, a.width, processor)
                expected = processor(images=[a.convert("RGB")], return_tensors="np")
                got = processor(images=[b.convert("RGB")], return_tensors="np")
            np.testing.assert_array_equal(got["image_grid_thw"], expected["image_grid_thw"])
            np.testing.assert_array_equal(got["pixel_values"], expected["pixel_values"])  # identical, not close


def test_grayscale_is_stored_as_one_channel(dataset):
    processor = qwen_image_processor()
    gray = resized_image(str(dataset / "images/s0/0.jpg"), processor)
    colour = resized_image(str(dataset / "images/s1/0.jpg"), processor)
    assert (gray.mode, colour.mode) == ("L", "RGB")


def test_undecodable_image_is_named_or_skipped(dataset, tmp_path):
    path = dataset / "images/s1/0.jpg"
    path.write_bytes(path.read_bytes()[:3000])
    args = ["data", "resize", "--data", str(dataset), "--splits", "train", "--max-pixels", str(MAX_PIXELS)]
    assert main([*args, "--out-dir", str(tmp_path / "a")]) != 0
    assert main([*args, "--out-dir", str(tmp_path / "b"), "--on-bad-rows", "skip"]) == 0
    manifest = json.loads((tmp_path / "b" / MANIFEST).read_text())
    assert manifest["skipped_studies"] == ["s1"] and manifest["studies"] == {"train": 1}
