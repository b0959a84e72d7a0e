"""`himed pipeline`: prepare, SFT, GRPO, evaluation after each stage, comparison; a complete stage is not re-run."""

import json
from pathlib import Path

import pytest
import yaml

from himed.cli import main as himed_main
from himed.data.loaders import load_rows
from himed.data.sections import render_target
from himed.trainers.pipeline import (
    COMPLETE_MARKER,
    EvaluationConfig,
    PipelineConfig,
    add_reward_summary,
    stage_command,
)

ROOT = Path(__file__).resolve().parents[2]


def small_recipe(name: str, tmp_path: Path, **overrides) -> Path:
    recipe = yaml.safe_load((ROOT / "recipes" / "quickstart" / f"{name}.yaml").read_text())
    recipe.update(overrides)
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"# python recipes/{name}.py --config {path}\n" + yaml.safe_dump(recipe))
    return path


def test_stage_command_chains_models(tmp_path):
    recipe = small_recipe("sft", tmp_path)
    config = PipelineConfig(
        output_dir=str(tmp_path / "run"),
        base_model="base",
        stages=[],
        launcher="accelerate launch --config_file launch/zero2.yaml",
    )
    from himed.trainers.pipeline import StageConfig

    stage = StageConfig(
        name="sft", kind="sft", recipe=str(recipe), overrides={"max_steps": 3, "sections": ["think", "finding"]}
    )
    command = stage_command(config, stage, "prev/model", tmp_path / "run" / "sft")
    assert command[:4] == ["accelerate", "launch", "--config_file", "launch/zero2.yaml"]
    assert command[command.index("--model_name_or_path") + 1] == "prev/model"
    assert command[command.index("--max_steps") + 1] == "3"
    assert json.loads(command[command.index("--sections") + 1]) == ["think", "finding"]


def test_reward_summary_uses_the_recipe_sections(tmp_path, demo_dir):
    """Bug: the summary scored a findings-only recipe's predictions against the three-section format."""
    recipe = tmp_path / "findings_only.yaml"
    block = {"sections": ["think", "finding"], "rewards": [{"name": "format"}, {"name": "token"}]}
    recipe.write_text("# python recipes/himed_grpo.py --config findings_only.yaml\n" + yaml.safe_dump(block))
    rows = load_rows("r2gen", demo_dir, "test")[:6]
    out_dir = tmp_path / "eval"
    out_dir.mkdir()
    predictions = [
        {"id": row["id"], "prediction": render_target(row["findings"], sections=("think", "finding"))} for row in rows
    ]
    (out_dir / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
    (out_dir / "metrics.json").write_text(json.dumps({"metrics": {}, "config": {}, "n": len(rows)}))
    summary = add_reward_summary(EvaluationConfig(data_path=str(demo_dir), rewards=str(recipe)), out_dir)
    assert summary["reward/format"] == 1.0  # a strict parse against [think, finding]
    assert json.loads((out_dir / "metrics.json").read_text())["metrics"]["reward/format"] == 1.0


def test_evaluation_clean_default_is_the_evaluate_command_default():
    """Bug: the pipeline's evaluation cleaned with `none` by default, `himed evaluate` with `mimic_cxr`."""
    from himed.cli import build_parser

    args = build_parser().parse_args(["evaluate", "--predictions", "p.jsonl", "--out-dir", "out"])
    assert EvaluationConfig(data_path="unused").clean == args.clean


@pytest.mark.slow
def test_pipeline_runs_stages_evaluates_and_resumes(tmp_path, tiny_model_dir, demo_dir):
    common = {"model_name_or_path": "unused", "data_path": str(demo_dir), "max_train_samples": 16}
    sft = small_recipe("sft", tmp_path, max_steps=4, per_device_train_batch_size=4, warmup_steps=0, **common)
    grpo = small_recipe(
        "grpo",
        tmp_path,
        max_steps=2,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=16,
        save_strategy="no",
        **common,
    )
    run_dir = tmp_path / "run"
    pipeline = {
        "output_dir": str(run_dir),
        "base_model": str(tiny_model_dir),
        "evaluate": {
            "data_path": str(demo_dir),
            "split": "test",
            "max_samples": 4,
            "max_new_tokens": 16,
            "batch_size": 4,
        },
        "stages": [
            {"name": "sft", "kind": "sft", "recipe": str(sft)},
            {"name": "grpo", "kind": "grpo", "recipe": str(grpo)},
        ],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    assert himed_main(["pipeline", str(path)]) == 0
    for name in ("base", "sft", "grpo"):
        metrics = json.loads((run_dir / name / "eval" / "metrics.json").read_text())
        assert metrics["n"] == 4 and "bleu_4" in metrics["metrics"]
    table = (run_dir / "comparison.md").read_text()
    assert "sft" in table and "grpo" in table and "bleu_4" in table
    assert (run_dir / "grpo" / COMPLETE_MARKER).is_file()

    # A second run finds every stage complete and every evaluation done: nothing is trained again.
    before = (run_dir / "grpo" / "model.safetensors").stat().st_mtime_ns
    assert himed_main(["pipeline", str(path)]) == 0
    assert (run_dir / "grpo" / "model.safetensors").stat().st_mtime_ns == before
