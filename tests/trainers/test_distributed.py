"""Slow: GRPO in several processes (torchrun + gloo, DeepSpeed ZeRO-2 on CPU), and kill-and-resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from himed.rewards.schedules import build_schedule

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
SCHEDULE = {"name": "linear", "total_steps": 6, "alpha_min": 0.1}


def write_recipe(tmp_path, tiny_model_dir, demo_dir, **overrides) -> Path:
    recipe = {
        "model_name_or_path": str(tiny_model_dir),
        "data_path": str(demo_dir),
        "max_train_samples": 24,
        "output_dir": str(tmp_path / "out"),
        "use_cpu": True,
        "bf16": False,
        "learning_rate": 1e-3,
        "num_generations": 4,
        "per_device_train_batch_size": 4,
        "max_completion_length": 16,
        "max_steps": 2,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "gradient_checkpointing": False,
        "seed": 0,
        "schedule": SCHEDULE,
        "rewards": [
            {"name": "format"},
            {"name": "token"},
            {"name": "tests.trainers.flaky_rewards:record_ids", "as": "order", "weight": 0.0},
        ],
    }
    recipe.update(overrides)
    path = tmp_path / "grpo.yaml"
    path.write_text("# python -m himed.trainers.grpo --config grpo.yaml\n" + yaml.safe_dump(recipe))
    return path


def environment(tmp_path) -> dict:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        PYTHONPATH=f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}",
        HIMED_TEST_ID_LOG=str(tmp_path / "ids.jsonl"),
        TORCH_EXTENSIONS_DIR=str(tmp_path / "torch_extensions"),
        MASTER_PORT=str(29500 + os.getpid() % 1000),
    )
    return env


def logged_steps(output_dir: Path) -> list[dict]:
    states = sorted(output_dir.glob("checkpoint-*/trainer_state.json"))
    state_file = output_dir / "trainer_state.json"
    path = state_file if state_file.is_file() else states[-1]
    return [entry for entry in json.loads(path.read_text())["log_history"] if "loss" in entry]


def run(command, tmp_path, timeout=900):
    result = subprocess.run(
        command, cwd=ROOT, env=environment(tmp_path), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_grpo_two_processes_torchrun(tmp_path, tiny_model_dir, demo_dir):
    recipe = write_recipe(tmp_path, tiny_model_dir, demo_dir, save_strategy="steps", save_steps=2)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
    run(
        [*torchrun, environment(tmp_path)["MASTER_PORT"], "-m", "himed.trainers.grpo", "--config", str(recipe)],
        tmp_path,
    )
    steps = logged_steps(tmp_path / "out" / "checkpoint-2")
    assert len(steps) == 2
    # Both ranks scored their share of each generation batch: 2 ranks x 4 completions per step.
    records = [json.loads(line) for line in (tmp_path / "ids.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(len(record["ids"]) == 4 for record in records)


def test_grpo_deepspeed_zero2_on_cpu(tmp_path, tiny_model_dir, demo_dir):
    pytest.importorskip("deepspeed", reason="install the deepspeed extra: pip install -e '.[deepspeed]'")
    config = yaml.safe_load((ROOT / "launch" / "zero2.yaml").read_text())
    config.update(
        num_processes=2, use_cpu=True, mixed_precision="no", main_process_port=int(environment(tmp_path)["MASTER_PORT"])
    )
    accelerate_config = tmp_path / "zero2_cpu.yaml"
    accelerate_config.write_text(yaml.safe_dump(config))
    recipe = write_recipe(tmp_path, tiny_model_dir, demo_dir, save_strategy="steps", save_steps=2)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config)]
    run([*launch, "-m", "himed.trainers.grpo", "--config", str(recipe)], tmp_path)
    steps = logged_steps(tmp_path / "out" / "checkpoint-2")
    assert len(steps) == 2 and all(entry["loss"] == entry["loss"] for entry in steps)
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_kill_and_resume_continues_schedule_and_data_order(tmp_path, tiny_model_dir, demo_dir):
    # Reference: an uninterrupted 4-step run records the data order it saw.
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    recipe = write_recipe(reference_dir, tiny_model_dir, demo_dir, max_steps=4)
    run([sys.executable, "-m", "himed.trainers.grpo", "--config", str(recipe)], reference_dir)
    reference_order = [json.loads(line)["ids"] for line in (reference_dir / "ids.jsonl").read_text().splitlines()]

    # Interrupted run: killed (SIGKILL) as soon as checkpoint-2 is complete, then resumed with `last`.
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    recipe = write_recipe(resumed_dir, tiny_model_dir, demo_dir, max_steps=4, save_strategy="steps", save_steps=2)
    command = [sys.executable, "-m", "himed.trainers.grpo", "--config", str(recipe)]
    slowed = {**environment(resumed_dir), "HIMED_TEST_SLOW_AFTER_STEP": "2", "HIMED_TEST_STEP_DELAY": "5"}
    process = subprocess.Popen(command, cwd=ROOT, env=slowed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint_state = resumed_dir / "out" / "checkpoint-2" / "trainer_state.json"
    deadline = time.time() + 600
    while not checkpoint_state.is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert checkpoint_state.is_file(), "the run ended or timed out before writing checkpoint-2"
    time.sleep(0.5)  # let the checkpoint's other files land
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (resumed_dir / "out" / "model.safetensors").is_file()  # it really was cut short

    run([*command, "--resume_from_checkpoint", "last"], resumed_dir)
    steps = logged_steps(resumed_dir / "out")
    schedule = build_schedule(SCHEDULE)
    resumed_steps = [entry for entry in steps if entry["step"] > 2]
    assert resumed_steps, steps
    for entry in resumed_steps:
        # The schedule continues at the checkpoint's step: the weight at step s was set at global step s - 1.
        assert entry["schedule/alpha_low"] == pytest.approx(schedule.alpha_low(entry["step"] - 1))
    # The data order after resuming is the uninterrupted run's.
    records = [json.loads(line) for line in (resumed_dir / "ids.jsonl").read_text().splitlines()]
    after_resume = [record["ids"] for record in records if record["step"] >= 2][-2:]
    assert after_resume == reference_order[2:]
