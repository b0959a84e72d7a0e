"""Supervised stages on the tiny model: the weighted loss against a hand computation, and each stage trains."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from himed.data.examples import sft_dataset, target_completion, weighted_spans
from himed.models.loading import load_policy, load_processor
from himed.trainers.config import SFTStageArguments
from himed.trainers.sft import STAGES

ROWS = [
    {
        "id": "a",
        "images": [Image.new("RGB", (112, 112), (90, 100, 110))],
        "views": ["PA"],
        "findings": "The heart is enlarged. No pneumothorax.",
        "impression": "Cardiomegaly.",
        "labels": {"Cardiomegaly": 1, "Pneumothorax": 0},
    },
    {
        "id": "b",
        "images": [Image.new("RGB", (112, 112), (20, 60, 200)), Image.new("RGB", (112, 112), (5, 5, 5))],
        "views": ["PA", "LATERAL"],
        "findings": "Lungs are clear. Possible small left pleural effusion.",
        "impression": "No acute disease.",
        "labels": {"Pleural Effusion": -1},
    },
]
LAMBDA = 1.75


def _args(output_dir, **overrides):
    from trl import SFTConfig

    values = {
        "output_dir": str(output_dir),
        "max_steps": 1,
        "report_to": [],
        "use_cpu": True,
        "bf16": False,
        "logging_steps": 1,
        "save_strategy": "no",
        "gradient_checkpointing": False,
        "dataloader_num_workers": 0,
        "per_device_train_batch_size": 2,
        "learning_rate": 1e-2,
        "max_length": None,
    }
    return SFTConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def weighted_trainer(tiny_model_dir, tmp_path_factory):
    from himed.trainers.weighted import WeightedSFTTrainer

    model, processor = load_policy(tiny_model_dir), load_processor(tiny_model_dir)
    dataset = sft_dataset(ROWS, think="empty", weighted=True)
    return WeightedSFTTrainer(
        model=model,
        args=_args(tmp_path_factory.mktemp("weighted")),
        train_dataset=dataset,
        processing_class=processor,
        positive_weight=LAMBDA,
    )


def test_stage_names_agree_between_config_and_trainer():
    # The stage names come from STAGES alone: each is accepted, and an unknown one is refused naming them all.
    assert [SFTStageArguments(stage=name).stage for name in STAGES] == list(STAGES)
    with pytest.raises(ValueError, match="stage must be one of " + ", ".join(STAGES)):
        SFTStageArguments(stage="rl")
    with pytest.raises(ValueError, match="positive_weight"):
        SFTStageArguments(stage="weighted", positive_weight=0.0)


def test_weights_are_exactly_the_positive_and_uncertain_sentences(weighted_trainer):
    tokenizer = weighted_trainer.processing_class.tokenizer
    batch = weighted_trainer.data_collator([weighted_trainer.train_dataset[i] for i in range(2)])
    weights, labels, ids = batch["token_weights"], batch["labels"], batch["input_ids"]
    # Weight 0 exactly where TRL puts no loss; 1 or lambda on every trained token.
    assert torch.equal(weights == 0, labels == -100)
    assert set(weights[labels != -100].tolist()) <= {1.0, LAMBDA}
    for row_index, row in enumerate(ROWS):
        target = target_completion(row, think="empty")
        expected = "".join(target[start:end] for start, end in weighted_spans(target))
        up = ids[row_index][weights[row_index] == LAMBDA]
        assert tokenizer.decode(up).replace(" ", "") == expected.replace(" ", "")
    assert expected.replace(" ", "") == "Possiblesmallleftpleuraleffusion."


def test_weighted_loss_equals_hand_computed_weighted_cross_entropy(weighted_trainer):
    trainer = weighted_trainer
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    model = trainer.model.eval()
    model_inputs = {k: v for k, v in batch.items() if k not in ("labels", "token_weights")}
    with torch.no_grad():
        logits = model(**model_inputs).logits
        loss = trainer.compute_loss(model, dict(batch))
    numerator = denominator = 0.0
    for row in range(logits.shape[0]):
        log_probs = torch.log_softmax(logits[row].double(), dim=-1)
        for t in range(1, logits.shape[1]):
            label = int(batch["labels"][row, t])
            if label == -100:
                continue
            weight = float(batch["token_weights"][row, t])
            numerator += weight * -float(log_probs[t - 1, label])
            denominator += weight
    assert denominator > int((batch["labels"] != -100).sum())  # some tokens were up-weighted
    assert math.isclose(float(loss), numerator / denominator, rel_tol=1e-4)
    model.train()


def test_hierarchical_impression_turn_trains_only_the_impression(tiny_model_dir):
    from trl import SFTTrainer

    from himed.data.examples import hierarchical_dataset

    processor = load_processor(tiny_model_dir)
    dataset = hierarchical_dataset(ROWS[:1], think="empty")
    assert dataset["id"] == ["a/findings", "a/impression"]
    trainer = SFTTrainer(
        model=load_policy(tiny_model_dir), args=_args("unused"), train_dataset=dataset, processing_class=processor
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    trained = [
        processor.tokenizer.decode(ids[labels != -100])
        for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True)
    ]
    assert trained == [
        "<think></think>\n<finding>The heart is enlarged. No pneumothorax.</finding><|im_end|>\n",
        "<impression>Cardiomegaly.</impression><|im_end|>\n",
    ]
    # The findings answer sits in the second prompt, as the assistant's first turn.
    assert "No pneumothorax.</finding><|im_end|>" in processor.tokenizer.decode(batch["input_ids"][1])


def test_unit_weight_reduces_to_trl_completion_loss(weighted_trainer):
    """lambda = 1: the weighted loss is TRL's own (fused-head) loss, so the weighted tokens are TRL's loss tokens."""
    from trl import SFTTrainer

    trainer = weighted_trainer
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    unit = dict(batch)
    unit["token_weights"] = (batch["labels"] != -100).float()
    plain = {k: v for k, v in batch.items() if k != "token_weights"}
    model = trainer.model.eval()
    with torch.no_grad():
        weighted = trainer.compute_loss(model, unit)
        reference = SFTTrainer.compute_loss(trainer, model, plain)
    model.train()
    assert math.isclose(float(weighted), float(reference), rel_tol=1e-4)


def test_accumulated_micro_batches_equal_one_batch(tiny_model_dir, tmp_path):
    """The denominator is the accumulated batch's total weight: 2 x 1 rows give the loss and gradient of 1 x 2."""
    from himed.trainers.weighted import WeightedSFTTrainer

    logged = []
    for batch_size, steps in ((2, 1), (1, 2)):
        trainer = WeightedSFTTrainer(
            model=load_policy(tiny_model_dir),
            args=_args(
                tmp_path / str(steps), per_device_train_batch_size=batch_size, gradient_accumulation_steps=steps
            ),
            train_dataset=sft_dataset(ROWS, think="empty", weighted=True),
            processing_class=load_processor(tiny_model_dir),
            positive_weight=LAMBDA,
        )
        trainer.train()
        logged.append(next(entry for entry in trainer.state.log_history if "loss" in entry))
    assert math.isclose(logged[0]["loss"], logged[1]["loss"], rel_tol=1e-4)
    assert math.isclose(logged[0]["grad_norm"], logged[1]["grad_norm"], rel_tol=1e-3)


@pytest.mark.parametrize("stage", ["weighted", "observation", "hierarchical"])
def test_stage_trains_and_changes_the_parameters(stage, tiny_model_dir, demo_dir, tmp_path):
    from trl import ModelConfig

    from himed.trainers.config import DataArguments
    from himed.trainers.sft import run_sft

    data = DataArguments(data_path=str(demo_dir), max_train_samples=2, check_images=False)
    model_args = ModelConfig(model_name_or_path=str(tiny_model_dir), dtype="float32")
    before = {name: p.detach().clone() for name, p in load_policy(tiny_model_dir).named_parameters()}
    trainer = run_sft(data, SFTStageArguments(stage=stage, think="empty"), _args(tmp_path), model_args)
    assert any("loss" in entry and math.isfinite(entry["loss"]) for entry in trainer.state.log_history)
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[name], after[name].detach()) for name in before)
