"""The circuit breaker on reward failure rates: its bookkeeping, its config block, and a GRPO run whose judge dies."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest

from himed.rewards.config import CircuitBreakerConfig, RewardsConfig
from himed.trainers.circuit_breaker import (
    CircuitBreaker,
    RewardCircuitOpen,
    Trip,
    component_counters,
    trip_message,
    unwatched_names,
)

TESTS = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- bookkeeping ---------------------------------------------------------------------------------------------------


def test_opens_after_patience_consecutive_failing_steps_and_closes_on_recovery():
    breaker = CircuitBreaker({"threshold": 0.5, "patience": 3}, ["token", "semantic"])
    assert breaker.observe(0, [0.0, 0.9]) == [] and breaker.observe(1, [0.0, 1.0]) == []
    assert breaker.open_flags() == {"token": 0.0, "semantic": 0.0}
    trips = breaker.observe(2, [0.0, 0.75])
    assert trips == [Trip("semantic", 2, (0.9, 1.0, 0.75), first_time=True)]
    assert breaker.open_flags() == {"token": 0.0, "semantic": 1.0}
    assert breaker.observe(3, [0.0, 1.0]) == []  # still open: it opened once, it is reported once
    assert breaker.observe(4, [0.0, 0.5]) == [] and breaker.open_flags()["semantic"] == 0.0  # 0.5 is not above
    for step in (5, 6):
        assert breaker.observe(step, [0.0, 1.0]) == []
    assert breaker.observe(7, [0.0, 1.0]) == [Trip("semantic", 7, (1.0, 1.0, 1.0), first_time=False)]


def test_a_good_step_resets_the_streak():
    breaker = CircuitBreaker({"threshold": 0.2, "patience": 2}, ["judge"])
    for step, rate in enumerate([0.3, 0.1, 0.3, 0.1, 0.3]):
        assert breaker.observe(step, [rate]) == []
    assert breaker.observe(5, [0.3])[0].rates == (0.3, 0.3)


def test_disabled_breaker_never_opens_and_rates_must_match_components():
    breaker = CircuitBreaker({"enabled": False, "patience": 1}, ["semantic"])
    assert breaker.observe(0, [1.0]) == [] and breaker.open_flags() == {"semantic": 0.0}
    with pytest.raises(ValueError, match="2 failure rates for 1 reward components"):
        breaker.observe(1, [1.0, 0.0])


def test_ignored_and_not_applicable_components_are_not_watched():
    from himed.rewards.composite import CompositeReward

    config = RewardsConfig.from_dict(
        {
            "rewards": [{"name": "format"}, {"name": "consistency"}, {"name": "token"}],
            "circuit_breaker": {"patience": 1, "ignore": ["token"]},
        }
    )
    components = CompositeReward.from_config(config).components
    # consistency's None means "no sections to compare" (already scored by format), not a failure.
    assert unwatched_names(components) == ["consistency"]
    breaker = CircuitBreaker(config.circuit_breaker, config.names, unwatched=unwatched_names(components))
    assert breaker.watched == ["format"]
    assert breaker.observe(0, [0.0, 1.0, 1.0]) == [] and breaker.open_flags() == {"format": 0.0}
    assert [trip.name for trip in breaker.observe(1, [1.0, 1.0, 1.0])] == ["format"]
    with pytest.raises(ValueError, match="'semantic' is not a reward entry name"):
        RewardsConfig.from_dict({"rewards": [{"name": "format"}], "circuit_breaker": {"ignore": ["semantic"]}})


def test_message_names_component_rates_counters_and_checkpoint():
    config = CircuitBreakerConfig(threshold=0.5, patience=2)
    trip = Trip("semantic", 4, (1.0, 0.88), first_time=True)
    counters = {"judge/failures": 16.0, "judge/failures/server_error": 16.0}
    message = trip_message(trip, config, counters, "out/checkpoint-4")
    assert "'semantic'" in message and "steps 3-4" in message and "1.00, 0.88" in message
    assert "judge/failures/server_error=16" in message and "out/checkpoint-4" in message
    assert "resume_from_checkpoint" in message
    warned = trip_message(trip, CircuitBreakerConfig(action="warn"), {}, None)
    assert "Training continues" in warned and "none reported" in warned


def test_component_counters_keep_failure_related_numbers_only():
    class Judged:
        def metrics(self):
            return {"judge/calls": 3.0, "judge/failures/timeout": 2.0, "judge/latency_p50": 0.1, "judge/model": "x"}

    class Broken:
        def metrics(self):
            raise RuntimeError("gone")

    assert component_counters(Judged()) == {"judge/calls": 3.0, "judge/failures/timeout": 2.0}
    assert component_counters(lambda completions: []) == {}
    assert "RuntimeError" in component_counters(Broken())["metrics_error"]


# -- config ----------------------------------------------------------------------------------------------------------


def test_config_block_defaults_round_trip_and_errors():
    config = RewardsConfig.from_dict({"rewards": [{"name": "format"}]})
    assert config.circuit_breaker == CircuitBreakerConfig(enabled=True, threshold=0.5, patience=3, action="stop")
    custom = RewardsConfig.from_dict(
        {"rewards": [{"name": "format"}], "circuit_breaker": {"threshold": 0.25, "patience": 5, "action": "warn"}}
    )
    assert RewardsConfig.from_dict(custom.to_dict()) == custom
    assert custom.to_dict()["circuit_breaker"] == {
        "enabled": True,
        "threshold": 0.25,
        "patience": 5,
        "action": "warn",
        "ignore": [],
    }
    bad = [
        ({"patience": 0}, "patience"),
        ({"patience": 2.5}, "patience"),
        ({"threshold": 1.0}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"action": "ignore"}, "action: must be one of stop, warn"),
        ({"enabled": "yes"}, "enabled"),
        ({"ignore": "token"}, "ignore"),
        ({"treshold": 0.5}, "unknown key 'treshold'"),
    ]
    for block, expected in bad:
        with pytest.raises(ValueError, match=expected) as error:
            RewardsConfig.from_dict({"rewards": [{"name": "format"}], "circuit_breaker": block}, where="r.yaml")
        assert str(error.value).startswith("r.yaml: circuit_breaker")


def test_recipe_reward_arguments_carry_the_block():
    from himed.trainers.config import RewardArguments

    block = RewardArguments(rewards=[{"name": "format"}], circuit_breaker={"action": "warn"}).reward_block()
    assert RewardsConfig.from_dict(block).circuit_breaker.action == "warn"
    cli = RewardArguments(rewards='[{"name": "format"}]', circuit_breaker='{"patience": 7}').reward_block()
    assert RewardsConfig.from_dict(cli).circuit_breaker.patience == 7


# -- a GRPO run whose judge dies ---------------------------------------------------------------------------------------

DIES_AT_STEP = 2
PATIENCE = 2


@pytest.fixture
def dying_judge(monkeypatch):
    """A scripted judge server answering ``good`` until the trainer reaches step DIES_AT_STEP, then HTTP 500."""
    from himed.trainers.grpo import HimedGRPOTrainer

    server_module = _load("himed_breaker_judge_server", TESTS / "verifiers" / "conftest.py")
    server = server_module.ScriptedJudgeServer(lifetime=300.0, record=False).start()
    monkeypatch.setenv("HIMED_TEST_BREAKER_KEY", "sk-breaker-test-0000")
    original = HimedGRPOTrainer.apply_schedule

    server.dies = True

    def apply_schedule(trainer, step, mode="train"):
        if server.dies and step >= DIES_AT_STEP:
            server.default_mode = "500"
        return original(trainer, step, mode)

    monkeypatch.setattr(HimedGRPOTrainer, "apply_schedule", apply_schedule)
    try:
        yield server
    finally:
        server.stop()


def _breaker_args(tmp_path, tiny_model_dir, demo_dir, server, action, max_steps):
    make_args = _load("himed_breaker_grpo_tests", TESTS / "trainers" / "test_grpo.py").make_args
    judge = {
        "backend": "openai",
        "base_url": server.url,
        "model": "test-judge",
        "api_key_env": "HIMED_TEST_BREAKER_KEY",
        "timeout": 5.0,
        "max_retries": 0,
    }
    rewards = [{"name": "format"}, {"name": "semantic", "kwargs": {"judge": judge}}]
    data, reward, grpo, model = make_args(
        tmp_path,
        tiny_model_dir,
        demo_dir,
        rewards,
        max_steps=max_steps,
        num_generations=2,
        per_device_train_batch_size=4,
        max_completion_length=16,
    )
    reward.circuit_breaker = {"threshold": 0.5, "patience": PATIENCE, "action": action}
    return data, reward, grpo, model


def test_dead_judge_stops_the_run_with_a_checkpoint_naming_the_component(
    tmp_path, tiny_model_dir, demo_dir, dying_judge
):
    from himed.trainers.grpo import run_grpo

    with pytest.raises(RewardCircuitOpen) as error:
        run_grpo(*_breaker_args(tmp_path, tiny_model_dir, demo_dir, dying_judge, "stop", max_steps=8))
    stop_step = DIES_AT_STEP + PATIENCE - 1
    message = str(error.value)
    assert error.value.component == "semantic" and "'semantic'" in message
    assert "judge/failures/server_error=" in message and "judge/calls=" in message
    checkpoint = tmp_path / "grpo" / f"checkpoint-{stop_step}"
    assert error.value.checkpoint == str(checkpoint) and str(checkpoint) in message
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] == stop_step
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "optimizer.pt").is_file()
    assert (checkpoint / "himed_rewards.json").is_file()
    # The failing step was logged before the save: the breaker's metric says open, the format reward never failed.
    last = state["log_history"][-1]
    assert last["rewards/semantic/breaker_open"] == 1.0 and last["rewards/format/breaker_open"] == 0.0
    assert last["rewards/semantic/failure_rate"] > 0.5
    assert not (tmp_path / "grpo" / "model.safetensors").exists()  # the run did not go on to save a final model

    # The judge comes back: the run resumes from the breaker's checkpoint and finishes.
    dying_judge.dies, dying_judge.default_mode = False, "good"
    data, reward, grpo, model = _breaker_args(tmp_path, tiny_model_dir, demo_dir, dying_judge, "stop", stop_step + 2)
    grpo.resume_from_checkpoint = "last"
    resumed = run_grpo(data, reward, grpo, model)
    steps = [entry["step"] for entry in resumed.state.log_history if "loss" in entry]
    assert steps[-2:] == [stop_step + 1, stop_step + 2] and (tmp_path / "grpo" / "model.safetensors").is_file()


def test_warn_action_warns_once_and_finishes(tmp_path, tiny_model_dir, demo_dir, dying_judge, caplog):
    from himed.trainers.grpo import run_grpo

    max_steps = DIES_AT_STEP + PATIENCE + 1
    with caplog.at_level(logging.WARNING, logger="himed.trainers.grpo"):
        trainer = run_grpo(*_breaker_args(tmp_path, tiny_model_dir, demo_dir, dying_judge, "warn", max_steps))
    warnings = [r for r in caplog.records if r.name == "himed.trainers.grpo" and "'semantic' failed" in r.message]
    assert len(warnings) == 1 and "Training continues" in warnings[0].message
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == max_steps and all(math.isfinite(entry["loss"]) for entry in logs)
    opened = [entry["rewards/semantic/breaker_open"] for entry in logs]
    assert opened == [0.0] * (DIES_AT_STEP + PATIENCE - 1) + [1.0] * (max_steps - DIES_AT_STEP - PATIENCE + 1)
    assert (tmp_path / "grpo" / "model.safetensors").is_file()


def test_a_bad_block_fails_recipe_validation_before_anything_loads(tmp_path):
    from trl import GRPOConfig, ModelConfig

    from himed.trainers.config import DataArguments, RewardArguments
    from himed.trainers.grpo import validate

    # Neither the model folder nor the data exist: validation must fail on the block before looking for them.
    reward = RewardArguments(rewards=[{"name": "format"}], circuit_breaker={"treshold": 0.5})
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none")
    with pytest.raises(ValueError, match="circuit_breaker: unknown key 'treshold'"):
        validate(DataArguments(data_path=str(tmp_path / "no-data")), reward, args, ModelConfig("no-model"))


@pytest.mark.slow
def test_two_processes_stop_together_with_one_checkpoint(tmp_path, tiny_model_dir, demo_dir):
    """torchrun, 2 ranks: both see the same gathered rates, open at the same step, save once together and exit."""
    distributed = _load("himed_breaker_distributed_tests", TESTS / "trainers" / "test_distributed.py")
    recipe = distributed.write_recipe(
        tmp_path,
        tiny_model_dir,
        demo_dir,
        max_steps=8,
        rewards=[{"name": "format"}, {"name": "tests.trainers.flaky_rewards:dies_at_step_2", "as": "dies"}],
        circuit_breaker={"patience": 2},
    )
    env = distributed.environment(tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
    command = [*torchrun, env["MASTER_PORT"], "-m", "himed.trainers.grpo", "--config", str(recipe)]
    result = subprocess.run(command, cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert result.stderr.count("RewardCircuitOpen: reward component 'dies'") >= 2  # raised on both ranks
    state = json.loads((tmp_path / "out" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and state["log_history"][-1]["rewards/dies/breaker_open"] == 1.0
    assert not (tmp_path / "out" / "model.safetensors").exists()
