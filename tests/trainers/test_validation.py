"""Validation before anything heavy: `himed validate` and every stage check a recipe without loading a model or data."""

from pathlib import Path

import pytest
import yaml

from himed.cli import main as himed_main
from himed.trainers.config import parse_recipe
from himed.trainers.grpo import RECIPE_ARGUMENTS, run_grpo
from himed.trainers.validation import recipe_kind, validate_recipe

ROOT = Path(__file__).resolve().parents[2]
JUDGE = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "judge", "concurency": 8}  # typo


def grpo_recipe(tmp_path, **overrides) -> Path:
    recipe = yaml.safe_load((ROOT / "recipes/quickstart/grpo.yaml").read_text())
    recipe.update(overrides, output_dir=str(tmp_path / "out"))
    path = tmp_path / "grpo.yaml"
    path.write_text(f"# python recipes/himed_grpo.py --config {path}\n" + yaml.safe_dump(recipe))
    return path


def test_judge_key_typo_fails_before_any_model_loads(tmp_path, never_load, capsys):
    path = grpo_recipe(tmp_path, rewards=[{"name": "format"}, {"name": "semantic", "kwargs": {"judge": JUDGE}}])
    with pytest.raises(ValueError, match=r"rewards\[1\] \(semantic\).*unknown keys \['concurency'\]"):
        validate_recipe(path)
    # The stage itself validates first: the same error, and the loaders above were never called.
    with pytest.raises(ValueError, match="concurency"):
        run_grpo(*parse_recipe(RECIPE_ARGUMENTS, ["--config", str(path)]))
    assert himed_main(["validate", str(path)]) == 2
    assert "unknown keys ['concurency']" in capsys.readouterr().err


def test_validate_command_prints_one_line(tmp_path, capsys):
    path = grpo_recipe(tmp_path)
    assert himed_main(["validate", str(path)]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("himed validate: OK:") and "semantic" in line


def test_bad_data_options_and_stage_needs_fail_in_validation(tmp_path):
    with pytest.raises(ValueError, match="data_format must be one of"):
        validate_recipe(grpo_recipe(tmp_path, data_format="r2gne"))
    with pytest.raises(ValueError, match="reports_csv: not an option of data_format 'r2gen'"):
        validate_recipe(grpo_recipe(tmp_path, reports_csv="x.csv"))
    with pytest.raises(ValueError, match="reward_weights"):
        validate_recipe(grpo_recipe(tmp_path, reward_weights=[1.0] * 6))
    recipe = yaml.safe_load((ROOT / "recipes/quickstart/sft_hierarchical.yaml").read_text())
    recipe["sections"] = ["think", "finding"]
    path = tmp_path / "sft_hierarchical.yaml"
    path.write_text(f"# python recipes/sft.py --config {path}\n" + yaml.safe_dump(recipe))
    with pytest.raises(ValueError, match="needs an impression section"):
        validate_recipe(path)


def test_recipe_kind_comes_from_the_first_line(tmp_path):
    assert recipe_kind(ROOT / "recipes/qwen2.5-vl-3b/grpo.yaml") == "grpo"
    assert recipe_kind(ROOT / "recipes/quickstart/sft_weighted.yaml") == "sft"
    assert recipe_kind(ROOT / "recipes/quickstart/pipeline.yaml") == "pipeline"
    path = tmp_path / "r.yaml"
    path.write_text("# train it\nlearning_rate: 1\n")
    with pytest.raises(ValueError, match="names no stage"):
        recipe_kind(path)


def test_reward_block_flags_are_yaml_or_json_strings(tmp_path):
    """RewardArguments holds a mapping/list from YAML, or a YAML/JSON string from a command-line flag."""
    flags = ["--rewards", '[{"name": "token"}]', "--schedule", "{name: constant, alpha_low: 0.5}"]
    result = validate_recipe(grpo_recipe(tmp_path), flags)
    assert result.checked.names == ["token"] and result.checked.weights(0) == [0.5]
    data, rewards, grpo, model = result.parsed
    assert isinstance(rewards.rewards, str) and isinstance(
        validate_recipe(grpo_recipe(tmp_path)).parsed[1].rewards, list
    )
