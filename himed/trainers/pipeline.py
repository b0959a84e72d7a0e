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

Each stage runs as its own process (``launcher`` + the stage's module + ``--config recipe``), with
``--model_name_or_path`` set to the previous stage's output (the base model for the first) and ``--output_dir`` set
to ``output_dir/<name>``; ``overrides`` become more flags. A stage whose output holds ``stage_complete.json`` is not
run again, so an interrupted pipeline resumes where it stopped. After the base model and after each stage the
policy is evaluated (``himed evaluate --model``) into ``output_dir/<name>/eval``, and ``output_dir/comparison.md``
puts the runs side by side (base -> SFT -> RL, as HiMed-RL's fig. 4). Relative paths are relative to the directory
the command runs in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

# Stage kind -> the module whose main() trains it (run with `python -m` or `accelerate launch -m`).
STAGE_MODULES = {"sft": "himed.trainers.sft", "grpo": "himed.trainers.grpo"}
COMPLETE_MARKER = "stage_complete.json"


def _from_mapping(cls, mapping: Any, where: str):
    if not isinstance(mapping, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    try:
        return cls(**mapping)
    except TypeError as error:
        raise ValueError(f"{where}: {error}") from None


@dataclass
class StageConfig:
    name: str = field(metadata={"help": "Stage name; its output goes to output_dir/<name>."})
    kind: str = field(metadata={"help": f"One of {sorted(STAGE_MODULES)}."})
    recipe: str = field(metadata={"help": "The stage's recipe YAML."})
    overrides: dict[str, Any] = field(default_factory=dict, metadata={"help": "Extra --key value flags."})
    evaluate: bool = field(default=True, metadata={"help": "Evaluate this stage's output."})
    launcher: str | None = field(default=None, metadata={"help": "This stage's launcher (default: the pipeline's)."})

    def __post_init__(self):
        if self.kind not in STAGE_MODULES:
            raise ValueError(f"stage {self.name!r}: kind must be one of {sorted(STAGE_MODULES)}, got {self.kind!r}")
        if not Path(self.recipe).is_file():
            raise FileNotFoundError(f"stage {self.name!r}: recipe {self.recipe} not found")


@dataclass
class EvaluationConfig:
    data_path: str = field(metadata={"help": "Dataset for evaluation."})
    data_format: str = field(default="r2gen", metadata={"help": "Loader name, as in recipes."})
    split: str = field(default="test", metadata={"help": "Split to evaluate."})
    max_samples: int | None = field(default=None, metadata={"help": "Evaluate the first N rows only."})
    max_new_tokens: int = field(default=128, metadata={"help": "Generation budget per report."})
    batch_size: int = field(default=16, metadata={"help": "Generation batch size."})
    clean: str = field(default="none", metadata={"help": "Text normalisation: mimic_cxr, iu_xray or none."})
    extra_args: list[str] = field(default_factory=list, metadata={"help": "More `himed evaluate` flags."})
    rewards: str | None = field(
        default=None,
        metadata={"help": "A recipe (or score config) whose reward block also scores each stage's predictions."},
    )


@dataclass
class PipelineConfig:
    output_dir: str = field(metadata={"help": "Root folder of the run."})
    base_model: str = field(metadata={"help": "Model the first stage starts from."})
    stages: list[StageConfig] = field(metadata={"help": "Training stages, in order."})
    launcher: str = field(default="python", metadata={"help": "How stages are launched: python, or accelerate ..."})
    prepare: list[list[str]] = field(default_factory=list, metadata={"help": "himed sub-commands to run first."})
    evaluate: EvaluationConfig | None = field(default=None, metadata={"help": "Evaluation after each stage."})
    evaluate_base: bool = field(default=True, metadata={"help": "Also evaluate the base model."})

    @classmethod
    def from_file(cls, path: str | Path) -> PipelineConfig:
        with open(path) as handle:
            raw = yaml.safe_load(handle)
        config = _from_mapping(cls, raw, str(path))
        config.stages = [_from_mapping(StageConfig, s, f"{path}: stages[{i}]") for i, s in enumerate(config.stages)]
        names = [stage.name for stage in config.stages]
        if len(set(names)) != len(names) or "base" in names:
            raise ValueError(f"{path}: stage names must be distinct and not 'base': {names}")
        if config.evaluate is not None:
            config.evaluate = _from_mapping(EvaluationConfig, config.evaluate, f"{path}: evaluate")
        for i, step in enumerate(config.prepare):
            if not isinstance(step, list) or not all(isinstance(arg, str) for arg in step):
                raise ValueError(f"{path}: prepare[{i}] must be a list of strings (a himed sub-command)")
        return config


def stage_command(config: PipelineConfig, stage: StageConfig, model_path: str, output_dir: Path) -> list[str]:
    """The command line that trains one stage."""
    launcher = shlex.split(stage.launcher or config.launcher)
    if launcher in (["python"], ["python3"]):
        launcher = [sys.executable]
    command = [*launcher, "-m", STAGE_MODULES[stage.kind], "--config", stage.recipe]
    command += ["--model_name_or_path", model_path, "--output_dir", str(output_dir)]
    for key, value in stage.overrides.items():
        command += [f"--{key}", json.dumps(value) if isinstance(value, dict | list) else str(value)]
    return command


def _prepare_marker(config: PipelineConfig, step: list[str]) -> Path:
    digest = hashlib.sha256(json.dumps(step).encode()).hexdigest()[:16]
    return Path(config.output_dir) / ".prepared" / f"{digest}.json"


def run_prepare(config: PipelineConfig) -> None:
    """Run each preparation command once: a marker written after it succeeds makes later runs skip it."""
    from himed.cli import main as himed_main

    for step in config.prepare:
        marker = _prepare_marker(config, step)
        if marker.is_file():
            logger.info("prepare: `himed %s` already done, skipping", " ".join(step))
            continue
        logger.info("prepare: himed %s", " ".join(step))
        code = himed_main(step)
        if code:
            raise RuntimeError(f"prepare step `himed {' '.join(step)}` failed with exit code {code}")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"command": step}))


def run_evaluation(config: PipelineConfig, model_path: str, out_dir: Path) -> Path | None:
    if config.evaluate is None:
        return None
    evaluation = config.evaluate
    metrics_path = out_dir / "metrics.json"
    if metrics_path.is_file():
        if evaluation.rewards and not (out_dir / "rewards.json").is_file():
            add_reward_summary(evaluation, out_dir)
        return metrics_path
    from himed.cli import main as himed_main

    args = ["evaluate", "--model", model_path, "--data", evaluation.data_path, "--data-format", evaluation.data_format]
    args += ["--split", evaluation.split, "--out-dir", str(out_dir), "--clean", evaluation.clean]
    args += ["--max-new-tokens", str(evaluation.max_new_tokens), "--batch-size", str(evaluation.batch_size)]
    if evaluation.max_samples is not None:
        args += ["--limit", str(evaluation.max_samples)]
    args += evaluation.extra_args
    code = himed_main(args)
    if code:
        raise RuntimeError(f"`himed {' '.join(args)}` failed with exit code {code}")
    if evaluation.rewards:
        add_reward_summary(evaluation, out_dir)
    return metrics_path


def add_reward_summary(evaluation: EvaluationConfig, out_dir: Path) -> dict[str, float]:
    """Score the stage's predictions with the reward block and add the summary to its metrics.json."""
    from himed.data.loaders import load_rows
    from himed.trainers.evaluation_rewards import reward_block_from_recipe, score_predictions

    predictions = [json.loads(line) for line in (out_dir / "predictions.jsonl").read_text().splitlines() if line]
    rows = load_rows(evaluation.data_format, evaluation.data_path, evaluation.split, check_images=False)
    summary = score_predictions(
        predictions, {row["id"]: row for row in rows}, reward_block_from_recipe(evaluation.rewards)
    )
    metrics_path = out_dir / "metrics.json"
    result = json.loads(metrics_path.read_text())
    result["metrics"].update(summary)
    result.setdefault("config", {})["rewards_from"] = evaluation.rewards
    metrics_path.write_text(json.dumps(result, indent=2))
    (out_dir / "rewards.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_pipeline(config: PipelineConfig) -> dict[str, Any]:
    root = Path(config.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    run_prepare(config)
    evaluations: dict[str, Path] = {}
    timings: dict[str, float] = {}
    if config.evaluate_base and config.evaluate is not None:
        started = time.perf_counter()
        evaluations["base"] = run_evaluation(config, config.base_model, root / "base" / "eval")
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
            evaluations[stage.name] = run_evaluation(config, model_path, output_dir / "eval")
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
