"""The image budget: recipe values reach the real Qwen-VL image processor, are saved, and are counted in tokens."""

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image

from himed.data.rows import BadRowError
from himed.models.image_budget import (
    QWEN_SHIPPED_MAX_PIXELS,
    QWEN_SHIPPED_MIN_PIXELS,
    apply_image_budget,
    check_visual_tokens,
    current_budget,
    image_budget_kwargs,
    visual_tokens,
)
from himed.models.loading import load_processor
from himed.trainers.config import DataArguments

ROOT = Path(__file__).resolve().parents[2]
QWEN_STAGE_RECIPES = sorted(p for p in (ROOT / "recipes").glob("qwen*/*.yaml") if p.stem != "pipeline")


def write_jpeg(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A real baseline JPEG of the given size (smooth gradient plus noise, grayscale like a radiograph)."""
    rng = np.random.default_rng(seed)
    row = np.linspace(40, 220, width, dtype=np.float32)
    pixels = row[None, :] + rng.normal(0, 10, (height, width)).astype(np.float32)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "L").save(path, quality=85)
    return path


def recipe_budget(path: Path) -> DataArguments:
    values = yaml.safe_load(path.read_text())
    keys = ("min_pixels", "max_pixels", "max_visual_tokens_per_study")
    return DataArguments(**{key: values[key] for key in keys if key in values})


def shipped_qwen_processor(tiny_model_dir):
    """The tiny model's processor with Qwen2.5-VL-3B-Instruct's shipped image settings (patch 14, merge 2)."""
    processor = load_processor(tiny_model_dir)
    image = processor.image_processor
    image.patch_size, image.merge_size, image.temporal_patch_size = 14, 2, 2
    return apply_image_budget(processor, QWEN_SHIPPED_MIN_PIXELS, QWEN_SHIPPED_MAX_PIXELS)


@pytest.mark.parametrize("path", QWEN_STAGE_RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_qwen_stage_recipe_sets_a_budget(path):
    budget = recipe_budget(path)
    assert budget.max_pixels is not None and budget.min_pixels is not None
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("max_pixels:"))
    reason = " ".join(line for line in lines[max(0, at - 12) : at] if line.startswith("#"))
    assert "visual tokens" in reason and "A100" in reason  # the reason is written next to the value


def test_3b_recipe_budget_on_a_real_3000_by_2500_jpeg(tmp_path, tiny_model_dir):
    budget = recipe_budget(ROOT / "recipes/qwen2.5-vl-3b/grpo.yaml")
    processor = shipped_qwen_processor(tiny_model_dir)
    jpeg = write_jpeg(tmp_path / "cxr.jpg", width=2500, height=3000)
    assert visual_tokens(3000, 2500, processor) > 9000  # the shipped default: why a budget is needed

    apply_image_budget(processor, budget.min_pixels, budget.max_pixels)
    with Image.open(jpeg) as opened:
        image = opened.convert("RGB")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    t, h, w = inputs["image_grid_thw"][0].tolist()
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    placeholders = int((inputs["input_ids"] == image_token).sum())
    assert placeholders == t * h * w // 4  # visual tokens after the 2 x 2 merge, as the language model sees them
    assert placeholders <= 2048
    assert placeholders == visual_tokens(3000, 2500, processor)  # header-based count = the processor's count


def test_budget_is_saved_and_wins_over_the_model_folder(tmp_path, tiny_model_dir):
    processor = load_processor(tiny_model_dir)
    folder_low, folder_high = current_budget(processor)
    apply_image_budget(processor, None, None)
    assert current_budget(processor) == (folder_low, folder_high)
    apply_image_budget(processor, None, folder_high * 2)  # one bound given: the other stays the folder's
    assert current_budget(processor) == (folder_low, folder_high * 2)
    apply_image_budget(processor, 5000, 200_000)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    size = saved["image_processor"]["size"] if "image_processor" in saved else None
    if size is None:
        size = json.loads((tmp_path / "preprocessor_config.json").read_text())["size"]
    assert size == {"shortest_edge": 5000, "longest_edge": 200_000}
    assert current_budget(load_processor(tmp_path)) == (5000, 200_000)


def test_budget_maps_onto_older_processor_forms():
    # transformers 4.x image processors hold size as a plain dict plus min_pixels/max_pixels attributes.
    old = SimpleNamespace(size={"shortest_edge": 3136, "longest_edge": 12845056}, min_pixels=3136, max_pixels=12845056)
    old.patch_size, old.merge_size = 14, 2
    apply_image_budget(SimpleNamespace(image_processor=old), 200704, 1003520)
    assert old.size == {"shortest_edge": 200704, "longest_edge": 1003520}
    assert (old.min_pixels, old.max_pixels) == (200704, 1003520)


def test_bad_budgets_are_errors():
    with pytest.raises(ValueError, match="must not exceed"):
        DataArguments(min_pixels=10_000, max_pixels=1000)
    with pytest.raises(ValueError, match="positive integer"):
        DataArguments(max_pixels=0)
    with pytest.raises(ValueError, match="check_images"):
        DataArguments(check_images="thorough")
    assert DataArguments(check_images=True).check_images == "verify"
    assert DataArguments(check_images="false").check_images == "none"


def test_image_budget_kwargs_for_vllm():
    assert image_budget_kwargs(DataArguments()) == {}
    assert image_budget_kwargs(DataArguments(min_pixels=200704, max_pixels=1003520)) == {
        "min_pixels": 200704,
        "max_pixels": 1003520,
    }
    assert image_budget_kwargs(DataArguments(max_pixels=1003520)) == {"max_pixels": 1003520}


def test_visual_tokens_log_line_and_per_study_limit(tmp_path, tiny_model_dir, caplog):
    processor = apply_image_budget(load_processor(tiny_model_dir), 28 * 28, 56 * 56 * 4)
    small = write_jpeg(tmp_path / "small.jpg", 56, 56)
    large = write_jpeg(tmp_path / "large.jpg", 600, 500, seed=1)
    rows = [{"id": "s1", "images": [str(small)]}, {"id": "s2", "images": [str(large), str(large)]}]
    per_image = visual_tokens(500, 600, processor)
    assert visual_tokens(56, 56, processor) == 4
    with caplog.at_level(logging.INFO, logger="himed.models.image_budget"):
        kept = check_visual_tokens(rows, processor, name="train")
    assert kept == rows
    mean = (4 + 2 * per_image) / 2
    assert f"visual tokens per study: mean {mean:.1f}, max {2 * per_image} (all 2 studies" in caplog.text

    with pytest.raises(BadRowError, match="study s2.*visual tokens, above max_visual_tokens_per_study 10"):
        check_visual_tokens(rows, processor, max_per_study=10)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        kept = check_visual_tokens(rows, processor, max_per_study=10, on_bad="skip")
    assert [row["id"] for row in kept] == ["s1"]
    assert "skipped 1 studies over max_visual_tokens_per_study 10: s2" in caplog.text
