"""Hi-MrGn's findings-impression consistency term on the tiny model: masks, exactness at weight 0, learning, GA."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from himed.data.examples import hierarchical_dataset
from himed.models.loading import load_policy, load_processor
from himed.trainers.config import SFTStageArguments
from himed.trainers.hierarchical import (
    FINDINGS_MASK,
    IMPRESSION_MASK,
    HierarchicalSFTTrainer,
    consistency_infonce,
    hierarchical_pair,
)
from tests.trainers.test_sft_stages import _args as sft_args

STUDIES = [
    ("The heart is enlarged. No pneumothorax.", "Cardiomegaly."),
    ("Lungs are clear. Small left pleural effusion.", "Left effusion."),
    ("Patchy opacity at the right base.", "Right basal pneumonia."),
    ("Normal cardiomediastinal silhouette.", "No acute disease."),
]
ROWS = [
    {
        "id": f"s{i}",
        "images": [Image.new("RGB", (112, 112), (40 * i, 90, 200 - 40 * i))],
        "views": ["PA"],
        "findings": findings,
        "impression": impression,
        "labels": {"Cardiomegaly": 1} if i == 0 else {},  # a <think> rationale to skip with think: labels
    }
    for i, (findings, impression) in enumerate(STUDIES)
]


def make_trainer(tiny_model_dir, output_dir, weight=1.0, think="empty", **overrides):
    return HierarchicalSFTTrainer(
        model=load_policy(tiny_model_dir),
        args=sft_args(output_dir, **overrides),
        train_dataset=hierarchical_dataset(ROWS, think=think),
        processing_class=load_processor(tiny_model_dir),
        consistency_weight=weight,
        consistency_temperature=0.1,
    )


def fixed_batch(trainer):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])


@pytest.mark.parametrize("think", ["empty", "labels"])
def test_masks_cover_exactly_the_finding_and_impression_texts(tiny_model_dir, tmp_path, think):
    trainer = make_trainer(tiny_model_dir, tmp_path, think=think)
    batch = fixed_batch(trainer)
    tokenizer = trainer.processing_class.tokenizer
    findings, impression = batch[FINDINGS_MASK], batch[IMPRESSION_MASK]
    for row, example_id in enumerate(trainer.train_dataset["id"]):
        study = STUDIES[int(example_id.split("/")[0][1:])]
        if example_id.endswith("/findings"):  # findings-only examples contribute nothing
            assert not findings[row].any() and not impression[row].any()
            continue
        ids = batch["input_ids"][row]
        assert tokenizer.decode(ids[findings[row]]) == study[0]
        assert tokenizer.decode(ids[impression[row]]) == study[1]
        assert (batch["labels"][row][findings[row]] == -100).all()  # findings are read in the prompt
        assert (batch["labels"][row][impression[row]] != -100).all()  # impression tokens are trained
    assert trainer.data_collator.unlocated == 0
    assert hierarchical_pair(trainer.train_dataset[0]) is None


def test_weight_zero_is_trl_loss_exactly_and_the_term_adds_weight_times_infonce(tiny_model_dir, tmp_path):
    from trl import SFTTrainer

    trainer = make_trainer(tiny_model_dir, tmp_path, weight=0.5)
    batch = fixed_batch(trainer)
    plain = {k: v for k, v in batch.items() if k not in (FINDINGS_MASK, IMPRESSION_MASK)}
    model = trainer.model.eval()
    with torch.no_grad():
        reference = SFTTrainer.compute_loss(trainer, model, dict(plain))
        with_term = trainer.compute_loss(model, dict(batch))
        trainer.consistency_weight = 0.0
        without = trainer.compute_loss(model, dict(batch))
        hidden = model(**{k: v for k, v in plain.items() if k != "labels"}, output_hidden_states=True).hidden_states
    assert torch.equal(without, reference)
    term, pairs = consistency_infonce(hidden[-1], batch[FINDINGS_MASK], batch[IMPRESSION_MASK], 0.1)
    assert pairs == 4 and float(term) > 0
    assert math.isclose(float(with_term - reference), 0.5 * float(term), rel_tol=1e-4)
    assert trainer._metrics["eval"]["consistency/pairs"] == [4.0]
    # A plain stage trainer (weight 0) keeps TRL's own collator: the batch carries no masks at all.
    untouched = make_trainer(tiny_model_dir, tmp_path, weight=0.0)
    assert FINDINGS_MASK not in fixed_batch(untouched)


def test_term_decreases_for_matching_pairs_on_a_fixed_batch(tiny_model_dir, tmp_path):
    """The whole loss (CE + weight x term) on one fixed batch: the term falls step after step (4 pairs, chance log 4)."""
    trainer = make_trainer(tiny_model_dir, tmp_path, weight=10.0)
    batch = fixed_batch(trainer)
    model = trainer.model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    terms = []
    for _ in range(5):
        optimizer.zero_grad()
        trainer.compute_loss(model, dict(batch)).backward()
        optimizer.step()
        terms.append(trainer._metrics["train"]["consistency/infonce"][-1])
    assert all(later < earlier for earlier, later in zip(terms, terms[1:], strict=False)), terms
    assert terms[-1] < 0.25 * terms[0] and terms[0] < math.log(4), terms


def test_consistency_stage_trains_under_gradient_accumulation(tiny_model_dir, demo_dir, tmp_path):
    from trl import ModelConfig

    from himed.trainers.config import DataArguments
    from himed.trainers.sft import run_sft

    data = DataArguments(data_path=str(demo_dir), max_train_samples=4, check_images=False)
    stage = SFTStageArguments(stage="hierarchical", think="empty", consistency_weight=1.0)
    args = sft_args(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=2)
    trainer = run_sft(data, stage, args, ModelConfig(model_name_or_path=str(tiny_model_dir), dtype="float32"))
    assert isinstance(trainer, HierarchicalSFTTrainer)
    entry = next(entry for entry in trainer.state.log_history if "loss" in entry)
    assert math.isfinite(entry["loss"]) and math.isfinite(entry["grad_norm"])
    assert "consistency/infonce" in entry and entry["consistency/pairs"] > 0
    assert trainer.data_collator.unlocated == 0


def test_config_validation():
    with pytest.raises(ValueError, match="hierarchical stage only"):
        SFTStageArguments(stage="cold_start", consistency_weight=0.1)
    with pytest.raises(ValueError, match="consistency_weight"):
        SFTStageArguments(stage="hierarchical", consistency_weight=-1.0)
    with pytest.raises(ValueError, match="consistency_temperature"):
        SFTStageArguments(stage="hierarchical", consistency_weight=1.0, consistency_temperature=0.0)
    assert SFTStageArguments().consistency_weight == 0.0
