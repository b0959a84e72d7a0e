"""GRPO on CPU with the tiny model: all CPU rewards + the offline judge, scheduled weights, imputation, LoRA."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from trl import GRPOConfig, ModelConfig

from himed.rewards.schedules import build_schedule
from himed.trainers.config import DataArguments, RewardArguments
from himed.trainers.grpo import PROVENANCE_FILE, run_grpo
from himed.trainers.stages import check_patient_data_policy

ROOT = Path(__file__).resolve().parents[2]
SCHEDULE = {"name": "linear", "total_steps": 4, "alpha_min": 0.1}
ALL_CPU_REWARDS = [
    {"name": "token"},
    {"name": "concept", "kwargs": {"meteor": "nltk"}},
    {"name": "format"},
    {"name": "clinical", "kwargs": {"labeler": "rules", "reference_labels": "row"}},
    {"name": "consistency"},
    {"name": "semantic", "kwargs": {"judge": {"backend": "labeler"}}},
    {"name": "tests.trainers.flaky_rewards:every_other_none", "as": "flaky", "weight": 0.5},
]


def grpo_config(tmp_path, **overrides) -> GRPOConfig:
    """A short GRPO run on CPU writing to ``tmp_path/grpo``; ``overrides`` replace any of its settings."""
    options = dict(
        output_dir=str(tmp_path / "grpo"),
        use_cpu=True,
        bf16=False,
        learning_rate=1e-3,
        num_generations=4,
        per_device_train_batch_size=8,
        max_completion_length=24,
        max_steps=3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        gradient_checkpointing=False,
        seed=0,
    )
    options.update(overrides)
    return GRPOConfig(**options)


def make_args(tmp_path, tiny_model_dir, demo_dir, rewards, **grpo_overrides):
    data = DataArguments(data_path=str(demo_dir), max_train_samples=16)
    reward = RewardArguments(schedule=SCHEDULE, rewards=rewards)
    return data, reward, grpo_config(tmp_path, **grpo_overrides), ModelConfig(model_name_or_path=str(tiny_model_dir))


def changed_parameters(model, tiny_model_dir) -> int:
    initial = load_file(str(tiny_model_dir / "model.safetensors"))
    current = {name: p.detach() for name, p in model.named_parameters()}
    return sum(1 for name, value in initial.items() if name in current and not torch.equal(value, current[name]))


# The same test body with HF generation (default suite) and with TRL's colocated vLLM rollout (marker vllm, run in
# .venv-vllm): a failing reward, the schedule and imputation must behave the same whichever engine generates.
ROLLOUTS = {"hf": {}, "vllm": {"use_vllm": True, "vllm_mode": "colocate", "vllm_max_model_length": 1024}}


@pytest.mark.parametrize("rollout", ["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_grpo_trains_with_scheduled_weights_and_imputation(tmp_path, tiny_model_dir, demo_dir, monkeypatch, rollout):
    monkeypatch.syspath_prepend(str(ROOT))  # so that tests.trainers.flaky_rewards imports by its dotted path
    trainer = run_grpo(*make_args(tmp_path, tiny_model_dir, demo_dir, ALL_CPU_REWARDS, **ROLLOUTS[rollout]))
    assert getattr(trainer, "vllm_generation", None) is not None or rollout == "hf"
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3
    schedule = build_schedule(SCHEDULE)
    names = ["token", "concept", "format", "clinical", "consistency", "semantic", "flaky"]
    levels = {"semantic": "high"}
    weights = {"flaky": 0.5, "consistency": 0.5}
    for step, entry in enumerate(logs):
        assert math.isfinite(entry["loss"])
        # The weight logged at step t is alpha_level(t) * w_i (HiMed-RL eq. 8-10), t = the step it was generated at.
        assert entry["schedule/alpha_low"] == pytest.approx(schedule.alpha_low(step))
        assert entry["schedule/alpha_high"] == pytest.approx(1 - schedule.alpha_low(step))
        for name in names:
            alpha = schedule.alphas(step)[levels.get(name, "low")]
            assert entry[f"rewards/{name}/weight"] == pytest.approx(alpha * weights.get(name, 1.0))
            assert math.isfinite(entry[f"rewards/{name}/mean"]), name
            assert f"rewards/{name}/failure_rate" in entry
        # Half of the flaky component failed and was imputed: the logged mean stays finite, the rate says so.
        assert entry["rewards/flaky/failure_rate"] == pytest.approx(0.5)
        assert entry["rewards/token/failure_rate"] == 0.0
        assert math.isfinite(entry["reward"])
    assert changed_parameters(trainer.model, tiny_model_dir) > 0
    provenance = (tmp_path / "grpo" / PROVENANCE_FILE).read_text()
    assert '"semantic"' in provenance and "effective_weights" in provenance
    assert (tmp_path / "grpo" / "model.safetensors").is_file()


def test_grpo_with_lora_saves_adapter_and_merged_model(tmp_path, tiny_model_dir, demo_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    # A reward whose describe() raises must not crash the save (bug: provenance() called describe() unguarded).
    broken = {"name": "tests.trainers.flaky_rewards:BrokenDescribe", "as": "broken", "weight": 0.0}
    data, reward, grpo, model = make_args(
        tmp_path, tiny_model_dir, demo_dir, [{"name": "format"}, {"name": "token"}, broken], max_steps=2
    )
    model.use_peft = True
    model.lora_r = 4
    model.lora_alpha = 8
    model.lora_target_modules = ["q_proj", "v_proj"]
    run_grpo(data, reward, grpo, model)
    assert grpo.reward_weights is None  # the trainer sets its own weights; the caller's config is not modified
    output = tmp_path / "grpo"
    assert (output / "adapter" / "adapter_config.json").is_file()
    adapter = load_file(str(output / "adapter" / "adapter_model.safetensors"))
    lora_b = [value for name, value in adapter.items() if "lora_B" in name]
    assert lora_b and any(value.abs().sum() > 0 for value in lora_b)  # lora_B starts at zero: non-zero = trained
    merged = load_file(str(output / "model.safetensors"))
    assert not any("lora" in name for name in merged)
    assert changed_parameters_in(merged, tiny_model_dir) > 0
    provenance = json.loads((output / "adapter" / PROVENANCE_FILE).read_text())
    assert "describe is broken" in provenance["descriptions"]["broken"]["describe_error"]


def changed_parameters_in(state, tiny_model_dir) -> int:
    initial = load_file(str(tiny_model_dir / "model.safetensors"))
    return sum(1 for name, value in initial.items() if name in state and not torch.equal(value, state[name]))


def test_patient_data_policy_blocks_remote_logging():
    args = GRPOConfig(output_dir="unused", use_cpu=True, bf16=False, report_to="wandb", log_completions=True)
    with pytest.raises(ValueError, match="allow_remote_patient_data"):
        check_patient_data_policy(args, allow_remote_patient_data=False)
    check_patient_data_policy(args, allow_remote_patient_data=True)
    local = GRPOConfig(output_dir="unused", use_cpu=True, bf16=False, report_to="tensorboard", log_completions=True)
    check_patient_data_policy(local, allow_remote_patient_data=False)
