"""What himed's GRPO trainer costs per step over a plain TRL GRPOTrainer (target: <= 1.05x).

Both trainers get the same tiny model (random weights, fixed seed), the same demo rows, the same reward callables
built from the same reward block, and the same GRPOConfig; himed adds the per-step schedule, the failure-rate
logging and the per-group imputation. The learning rate is 0 (the optimizer step still runs), so both trainers
sample the same completions from the same initial policy. Steps are timed with a callback (on_step_begin -> on_step_end); the first
steps are warm-up and not counted. The two trainers alternate in rounds so that machine noise hits both alike.

    OMP_NUM_THREADS=1 python benchmarks/trainer_overhead.py [--steps 12] [--rounds 3] [--output benchmarks/results/trainer_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from himed.data.demo import generate_demo  # noqa: E402
from himed.data.examples import grpo_dataset  # noqa: E402
from himed.data.loaders import load_rows  # noqa: E402
from himed.models.loading import load_policy, load_processor  # noqa: E402
from himed.models.tiny import build_tiny_model  # noqa: E402
from himed.rewards.composite import CompositeReward  # noqa: E402
from himed.trainers.grpo import HimedGRPOTrainer  # noqa: E402

REWARD_BLOCK = {
    "schedule": {"name": "linear", "total_steps": 100, "alpha_min": 0.1},
    "rewards": [
        {"name": "token"},
        {"name": "concept"},
        {"name": "format"},
        {"name": "clinical", "kwargs": {"reference_labels": "row"}},
        {"name": "consistency"},
        {"name": "semantic", "kwargs": {"judge": {"backend": "labeler"}}},
    ],
}


class StepTimer(TrainerCallback):
    def __init__(self):
        self.durations: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.durations.append(time.perf_counter() - self._start)


def make_args(output_dir: str, steps: int) -> GRPOConfig:
    return GRPOConfig(
        output_dir=output_dir,
        use_cpu=True,
        bf16=False,
        # Learning rate 0: both policies stay the initial model, so with the same seed both trainers sample the same
        # completions and step times differ only by the trainer's own work (a learning policy changes completion
        # lengths, and generation dominates a step).
        learning_rate=0.0,
        num_generations=8,
        per_device_train_batch_size=32,
        max_completion_length=48,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        gradient_checkpointing=False,
        seed=0,
    )


def time_trainer(kind: str, model_dir: Path, dataset, steps: int, warmup: int) -> list[float]:
    torch.manual_seed(0)
    processor = load_processor(model_dir)
    model = load_policy(model_dir)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as output_dir:
        args = make_args(output_dir, steps)
        reward = CompositeReward.from_config(REWARD_BLOCK, sections=("think", "finding", "impression"))
        if kind == "himed":
            trainer = HimedGRPOTrainer(
                model=model,
                processing_class=processor,
                train_dataset=dataset,
                args=args,
                reward=reward,
                callbacks=[timer],
            )
        else:
            components = reward.components
            args.reward_weights = [component.weight for component in components]
            trainer = GRPOTrainer(
                model=model,
                processing_class=processor,
                train_dataset=dataset,
                reward_funcs=[component.fn for component in components],
                args=args,
                callbacks=[timer],
            )
        trainer.train()
    return timer.durations[warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="steps per trainer per round")
    parser.add_argument("--warmup", type=int, default=2, help="first steps of each run not counted")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of (TRL, himed)")
    parser.add_argument("--output", default="benchmarks/results/trainer_overhead.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        work = Path(workdir)
        generate_demo(work / "demo", n=120, seed=0)
        build_tiny_model(work / "tiny", arch="qwen2_5_vl", seed=0)
        dataset = grpo_dataset(load_rows("r2gen", work / "demo", "train"))
        times: dict[str, list[float]] = {"trl": [], "himed": []}
        for round_index in range(args.rounds):
            for kind in ("trl", "himed") if round_index % 2 == 0 else ("himed", "trl"):
                times[kind] += time_trainer(kind, work / "tiny", dataset, args.steps, args.warmup)
                print(f"round {round_index} {kind}: median step {statistics.median(times[kind]):.3f} s", flush=True)

    trl_median, himed_median = statistics.median(times["trl"]), statistics.median(times["himed"])
    result = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/trainer_overhead.py "
        f"--steps {args.steps} --warmup {args.warmup} --rounds {args.rounds}",
        "setup": "tiny qwen2_5_vl, 4 prompts x 8 generations, 48 new tokens, 6 rewards (token, concept, format, "
        "clinical, consistency, semantic/labeler), CPU, 1 thread",
        "trl_step_median_s": round(trl_median, 4),
        "himed_step_median_s": round(himed_median, 4),
        "trl_step_mean_s": round(statistics.mean(times["trl"]), 4),
        "himed_step_mean_s": round(statistics.mean(times["himed"]), 4),
        "steps_counted": {kind: len(values) for kind, values in times.items()},
        "ratio_median": round(himed_median / trl_median, 4),
        "target": "<= 1.05",
    }
    print(json.dumps(result, indent=2))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
