"""``himed pipeline FILE.yaml``: preparation steps, training stages in order, evaluation after each, a comparison.

A pipeline YAML::

    # himed pipeline recipes/quickstart/pipeline.yaml
    output_dir: runs/quickstart
    launcher: python                   # or: accelerate launch --config_file launch/zero2.yaml
    prepare:                           # himed sub-commands, each run once (a marker records success)
      - [data, demo, --out-dir, runs/quickstart/demo]
      - [model, tiny, --arch, qwen2_5_vl, --out-dir, runs/quickstart/tiny-model]
    base_model: runs/quickstart/tiny-model
    evaluate: {data_path: runs/quickstart/demo, split: test, max_samples: 200}
    stages:
      - {name: sft, kind: sft, recipe: recipes/quickstart/sft.yaml}
      - {name: grpo, kind: grpo, recipe: recipes/quickstart/grpo.yaml, overrides: {max_steps: 100}}

The pipeline YAML is read into ``himed.trainers.config.PipelineConfig``. Before anything runs, every stage's recipe
is validated as the stage will run it (``himed.trainers.validation``) and every preparation step is parsed, so a
typo in the last stage's reward block fails in seconds, not after the first stage has trained. Each stage runs as
its own process (``launcher`` + the stage's module + ``--config recipe``), with
``--model_name_or_path`` set to the previous stage's output (the base model for the first) and ``--output_dir`` set
to ``output_dir/<name>``; ``overrides`` become more flags. A stage whose output holds ``stage_complete.json`` is not
run again, so an interrupted pipeline resumes where it stopped. After the base model and after each stage the
policy is evaluated (``himed evaluate --model``) into ``output_dir/<name>/eval``, and ``output_dir/comparison.md``
puts the runs side by side (base -> SFT -> RL, as HiMed-RL's fig. 4). Relative paths are relative to the directory
the command runs in. Preparation steps and evaluations are ``himed`` sub-commands of the data, model and metrics
areas, run in this process by calling their handlers (not through ``himed.cli``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shlex
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from himed.trainers.config import EvaluationConfig, PipelineConfig, StageConfig
from himed.trainers.stages import STAGE_MODULES
from himed.trainers.validation import validate_pipeline

__all__ = ["EvaluationConfig", "PipelineConfig", "StageConfig", "run_pipeline", "stage_command"]

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "stage_complete.json"


class _CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors raise ValueError (naming the step) instead of exiting the process."""

    def error(self, message: str):
        raise ValueError(f"{self.prog}: {message}")


def himed_commands() -> argparse.ArgumentParser:
    """A parser of the ``himed`` sub-commands a pipeline runs: data and model preparation, evaluation."""
    from himed.data import commands as data_commands
    from himed.metrics import commands as metrics_commands
    from himed.models import commands as model_commands

    parser = _CommandParser(prog="himed")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (data_commands, model_commands, metrics_commands):
        module.add_commands(subparsers)
    return parser


def run_himed_command(args: list[str], parser: argparse.ArgumentParser | None = None) -> None:
    """Run ``himed ARGS`` in this process by calling the sub-command's handler; a non-zero exit code raises."""
    parsed = (parser or himed_commands()).parse_args(args)
    code = parsed.handler(parsed)
    if code:
        raise RuntimeError(f"`himed {shlex.join(args)}` failed with exit code {code}")


def stage_command(config: PipelineConfig, stage: StageConfig, model_path: str, output_dir: Path) -> list[str]:
    """The command line that trains one stage."""
    launcher = shlex.split(stage.launcher or config.launcher)
    if launcher in (["python"], ["python3"]):
        launcher = [sys.executable]
    return [
        *launcher,
        "-m",
        STAGE_MODULES[stage.kind],
        "--config",
        stage.recipe,
        *stage.flags(model_path, str(output_dir)),
    ]


def _prepare_marker(config: PipelineConfig, step: list[str]) -> Path:
    digest = hashlib.sha256(json.dumps(step).encode()).hexdigest()[:16]
    return Path(config.output_dir) / ".prepared" / f"{digest}.json"


def run_prepare(config: PipelineConfig, parser: argparse.ArgumentParser) -> None:
    """Run each preparation command once: a marker written after it succeeds makes later runs skip it."""
    for step in config.prepare:
        marker = _prepare_marker(config, step)
        if marker.is_file():
            logger.info("prepare: `himed %s` already done, skipping", " ".join(step))
            continue
        logger.info("prepare: himed %s", " ".join(step))
        run_himed_command(step, parser)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"command": step}))


def evaluation_args(evaluation: EvaluationConfig, model_path: str, out_dir: Path) -> list[str]:
    """``himed evaluate --model ...`` for one policy, as the pipeline's evaluate block configures it."""
    args = ["evaluate", "--model", model_path, "--data", evaluation.data_path, "--data-format", evaluation.data_format]
    args += ["--split", evaluation.split, "--out-dir", str(out_dir), "--clean", evaluation.clean]
    args += ["--max-new-tokens", str(evaluation.max_new_tokens), "--batch-size", str(evaluation.batch_size)]
    if evaluation.max_samples is not None:
        args += ["--limit", str(evaluation.max_samples)]
    return args + evaluation.extra_args


def run_evaluation(
    config: PipelineConfig, model_path: str, out_dir: Path, parser: argparse.ArgumentParser, reward=None
) -> Path | None:
    """Evaluate one policy into out_dir (unless done before) and add the reward summary when configured."""
    if config.evaluate is None:
        return None
    evaluation = config.evaluate
    metrics_path = out_dir / "metrics.json"
    evaluated_before = metrics_path.is_file()
    if not evaluated_before:
        run_himed_command(evaluation_args(evaluation, model_path, out_dir), parser)
    if evaluation.rewards and not (evaluated_before and (out_dir / "rewards.json").is_file()):
        add_reward_summary(evaluation, out_dir, reward)
    return metrics_path


def check_pipeline(config: PipelineConfig, parser: argparse.ArgumentParser):
    """Everything checkable before the first step runs: each preparation step and the evaluation parse, each
    stage's recipe validates as it will run (himed.trainers.validation). Returns the reward summary's composite
    (built once here), or None."""
    for step in config.prepare:
        parser.parse_args(step)
    validate_pipeline(config)
    if config.evaluate is None:
        return None
    parser.parse_args(evaluation_args(config.evaluate, config.base_model, Path(config.output_dir) / "base"))
    if not config.evaluate.rewards:
        return None
    from himed.rewards.summary import reward_from_recipe

    return reward_from_recipe(config.evaluate.rewards)


def add_reward_summary(evaluation: EvaluationConfig, out_dir: Path, reward=None) -> dict[str, float]:
    """Score the stage's predictions with the reward (default: built from ``evaluation.rewards``, a recipe, with
    its sections) and add the summary to its metrics.json."""
    from himed.data.jsonl import read_jsonl
    from himed.data.loaders import load_rows
    from himed.rewards.summary import reward_from_recipe, score_predictions

    reward = reward or reward_from_recipe(evaluation.rewards)
    predictions = [record for _, record in read_jsonl(out_dir / "predictions.jsonl")]
    rows = load_rows(evaluation.data_format, evaluation.data_path, evaluation.split, check_images=False)
    summary = score_predictions(predictions, {row["id"]: row for row in rows}, reward)
    metrics_path = out_dir / "metrics.json"
    result = json.loads(metrics_path.read_text())
    result["metrics"].update(summary)
    result.setdefault("config", {})["rewards_from"] = evaluation.rewards
    metrics_path.write_text(json.dumps(result, indent=2))
    (out_dir / "rewards.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_pipeline(config: PipelineConfig) -> dict[str, Any]:
    parser = himed_commands()
    reward = check_pipeline(config, parser)
    root = Path(config.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    run_prepare(config, parser)
    evaluations: dict[str, Path] = {}
    timings: dict[str, float] = {}
    if config.evaluate_base and config.evaluate is not None:
        started = time.perf_counter()
        evaluations["base"] = run_evaluation(config, config.base_model, root / "base" / "eval", parser, reward)
        timings["base/eval"] = time.perf_counter() - started
    model_path = config.base_model
    for stage in config.stages:
        output_dir = root / stage.name
        marker = output_dir / COMPLETE_MARKER
        if marker.is_file():
            logger.info("stage %s: complete (%s), not run again", stage.name, marker)
        else:
            command = stage_command(config, stage, model_path, output_dir)
            logger.info("stage %s: %s", stage.name, shlex.join(command))
            started = time.perf_counter()
            result = subprocess.run(command, check=False)
            if result.returncode != 0:
                raise RuntimeError(
                    f"stage {stage.name!r} failed (exit code {result.returncode}): {shlex.join(command)}"
                )
            timings[stage.name] = time.perf_counter() - started
            marker.write_text(json.dumps({"stage": asdict(stage), "seconds": timings[stage.name]}, indent=2))
        model_path = str(output_dir)
        if stage.evaluate and config.evaluate is not None:
            started = time.perf_counter()
            evaluations[stage.name] = run_evaluation(config, model_path, output_dir / "eval", parser, reward)
            timings[f"{stage.name}/eval"] = time.perf_counter() - started
    summary: dict[str, Any] = {"final_model": model_path, "timings_s": timings}
    if evaluations:
        from himed.metrics.compare import compare_table, load_runs

        table = compare_table(load_runs([str(path) for path in evaluations.values()], names=list(evaluations)))
        (root / "comparison.md").write_text(table + "\n")
        print(table)
        summary["comparison"] = str(root / "comparison.md")
    (root / "pipeline_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
