"""GRPO with TRL's colocated vLLM rollout on CPU, for real: tiny model, demo data, 3 optimizer steps per variant.

The rollout must agree with the trainer (docs/vllm.md, "The logp gap"): with float32 on both sides TRL's
``sampling/sampling_logp_difference/mean`` stays <= 1e-3 at every logged step. Each of the four causes found would
break that bound on these runs: bfloat16 rollout (~1e-2), image placeholders expanded twice (~1e-1), right-padded
``mm_token_type_ids`` (~1e-3 on the shorter prompts of a batch: prompt lengths differ here) and vision-encoder
outputs cached across a weight sync (~0.4 on a repeated image: 4 studies, 2 per step, so step 3 repeats images).
"""

import json
import math

import pytest
import torch

from himed.trainers.grpo import run_grpo
from tests.trainers.test_grpo import ROLLOUTS, changed_parameters, make_args

pytestmark = pytest.mark.vllm

MAX_LOGP_GAP = 1e-3  # issue 12's bound
# What agreement measures here after the fixes: ~1e-7 (float32 rounding). 1e-4 still catches the right-padded
# mm_token_type_ids cause, whose ~1e-3 per padded row averages to ~5e-4 per batch (below issue 12's bound).
FLOAT32_LOGP_GAP = 1e-4
STEPS = 3


def colocate_args(tmp_path, model_dir, data_dir, data_overrides=None, **overrides):
    """tests/trainers/test_grpo.py's arguments with vLLM colocate, float32, 4 studies and a checkpoint at the end."""
    options = dict(save_strategy="steps", save_steps=STEPS, max_steps=STEPS, **ROLLOUTS["vllm"])
    data, reward, grpo_args, model = make_args(
        tmp_path, model_dir, data_dir, [{"name": "format"}, {"name": "token"}], **{**options, **overrides}
    )
    data.max_train_samples = 4  # 2 studies per step: step 3 repeats step 1's images (the encoder-cache cause)
    for name, value in (data_overrides or {}).items():
        setattr(data, name, value)
    model.dtype = "float32"
    return data, reward, grpo_args, model


@pytest.mark.parametrize("variant", ["one_image", "two_images", "with_text"])
def test_colocate_grpo_trains_and_rollout_agrees_with_trainer(tmp_path, tiny_model_dir, demo_variants, variant):
    trainer = run_grpo(*colocate_args(tmp_path, tiny_model_dir, demo_variants[variant]))
    engine = trainer.vllm_generation.llm.llm_engine.model_config
    assert engine.dtype == torch.float32 == trainer.model.dtype  # the recipe's dtype reached the rollout engine

    state_file = tmp_path / "grpo" / f"checkpoint-{STEPS}" / "trainer_state.json"
    assert state_file.is_file()
    state = json.loads(state_file.read_text())
    assert state["global_step"] == STEPS
    logs = [entry for entry in state["log_history"] if "loss" in entry]
    assert len(logs) == STEPS
    for entry in logs:
        assert math.isfinite(entry["loss"])
        for name in ("format", "token"):
            assert math.isfinite(entry[f"rewards/{name}/mean"]), name
        gap = entry["sampling/sampling_logp_difference/mean"]
        assert gap <= MAX_LOGP_GAP, f"step {entry['step']}: rollout and trainer disagree (logp gap {gap:.3g})"
        assert gap <= FLOAT32_LOGP_GAP, f"step {entry['step']}: logp gap {gap:.3g} is above float32 rounding"
    assert changed_parameters(trainer.model, tiny_model_dir) > 0
