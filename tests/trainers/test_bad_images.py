"""A truncated JPEG in a training split (passes PIL's verify, fails to decode) never kills a run without a name.

- ``on_bad_rows: skip``: SFT and GRPO runs finish; the study is counted and named in the log.
- ``on_bad_rows: error``: the run stops at the first decode with an error naming the study and the file.
"""

import json
import logging
import shutil
from pathlib import Path

import pytest
from PIL import Image
from trl import ModelConfig

from himed.data.decode_guard import ImageDecodeError
from himed.models.image_budget import current_budget
from himed.models.loading import load_processor
from himed.trainers.config import DataArguments, RewardArguments, SFTStageArguments
from himed.trainers.grpo import run_grpo
from himed.trainers.sft import run_sft
from tests.trainers.test_grpo import grpo_config
from tests.trainers.test_sft_stages import _args as sft_config

TRAIN_STUDIES = 4  # every study is drawn within the first two steps of both runs below


def truncated_jpeg(source: Path, target: Path) -> Path:
    """``source`` re-encoded as JPEG with the last third of its body cut off (PIL's verify still passes it)."""
    with Image.open(source) as image:
        image.convert("L").save(target, quality=90)
    data = target.read_bytes()
    target.write_bytes(data[: len(data) * 2 // 3])
    with Image.open(target) as image:
        image.verify()
    with pytest.raises(OSError), Image.open(target) as image:
        image.load()
    return target


def break_study(demo_dir: Path, root: Path, split: str, index: int) -> tuple[Path, str, Path]:
    """A copy of the demo dataset in ``root`` whose ``split[index]`` study's first image is a truncated JPEG:
    (folder, study id, file)."""
    shutil.copytree(demo_dir, root)
    annotation = json.loads((root / "annotation.json").read_text())
    entry = annotation[split][index]
    bad = truncated_jpeg(root / "images" / entry["image_path"][0], root / "images" / entry["id"] / "broken.jpg")
    entry["image_path"][0] = f"{entry['id']}/broken.jpg"
    (root / "annotation.json").write_text(json.dumps(annotation))
    return root, entry["id"], bad


@pytest.fixture()
def broken_demo(tmp_path, demo_dir):
    """The demo dataset with the second training study's image replaced by a truncated JPEG."""
    return break_study(demo_dir, tmp_path / "data", "train", 1)


def sft_args(tmp_path, model_dir):
    config = sft_config(tmp_path / "sft", max_steps=2, learning_rate=1e-3, report_to="none", seed=0)
    return SFTStageArguments(), config, ModelConfig(model_name_or_path=str(model_dir))


def grpo_args(tmp_path, model_dir):
    config = grpo_config(
        tmp_path, num_generations=2, per_device_train_batch_size=4, max_completion_length=8, max_steps=2
    )
    rewards = RewardArguments(rewards=[{"name": "format"}, {"name": "token"}])
    return rewards, config, ModelConfig(model_name_or_path=str(model_dir))


BUDGET = {"min_pixels": 28 * 28 * 2, "max_pixels": 28 * 28 * 8}  # smaller than the tiny model folder's


def data_args(root, on_bad):
    return DataArguments(data_path=str(root), max_train_samples=TRAIN_STUDIES, on_bad_rows=on_bad, **BUDGET)


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_skip_finishes_and_names_the_study(stage, tmp_path, tiny_model_dir, broken_demo, caplog):
    root, study, bad = broken_demo
    with caplog.at_level(logging.INFO):
        if stage == "sft":
            stage_args, config, model = sft_args(tmp_path, tiny_model_dir)
            trainer = run_sft(data_args(root, "skip"), stage_args, config, model)
        else:
            trainer = run_grpo(data_args(root, "skip"), *grpo_args(tmp_path, tiny_model_dir))
    assert trainer.state.global_step == 2
    assert (tmp_path / stage / "model.safetensors").is_file()
    # The recipe's image budget won over the model folder's and was saved with the stage's output.
    assert current_budget(load_processor(tmp_path / stage)) == (BUDGET["min_pixels"], BUDGET["max_pixels"])
    skipped = [r.getMessage() for r in caplog.records if "skipped study" in r.getMessage()]
    assert len(skipped) == 1, skipped  # counted once, however many times the study was drawn
    assert f"skipped study {study} (1 skipped so far" in skipped[0] and str(bad) in skipped[0]
    assert "1 studies skipped for undecodable images: " + study in caplog.text  # the end-of-stage count
    assert "train split: visual tokens per study: mean " in caplog.text  # the start-of-stage line


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_error_stops_naming_the_study_and_file(stage, tmp_path, tiny_model_dir, broken_demo):
    root, study, bad = broken_demo
    with pytest.raises(ImageDecodeError) as caught:
        if stage == "sft":
            run_sft(data_args(root, "error"), *sft_args(tmp_path, tiny_model_dir))
        else:
            run_grpo(data_args(root, "error"), *grpo_args(tmp_path, tiny_model_dir))
    assert caught.value.study_id == study
    assert str(bad) in str(caught.value) and "truncated" in str(caught.value)
    assert not (tmp_path / stage / "model.safetensors").exists()


def test_decode_check_finds_it_before_training(tmp_path, tiny_model_dir, broken_demo):
    root, study, bad = broken_demo
    from himed.data.rows import BadRowError

    args = DataArguments(data_path=str(root), on_bad_rows="error", check_images="decode")
    with pytest.raises(BadRowError, match=rf"id '{study}'.*{bad}.*truncated"):
        run_sft(args, *sft_args(tmp_path, tiny_model_dir))
