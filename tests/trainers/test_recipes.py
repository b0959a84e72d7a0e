"""Every YAML under recipes/ loads and validates against the real dataclasses, without training (torchtune habit)."""

from pathlib import Path

import pytest
import yaml
from trl import GRPOConfig, ModelConfig, SFTConfig

from himed.rewards.composite import CompositeReward
from himed.rewards.config import RewardsConfig
from himed.trainers.config import (
    DataArguments,
    RewardArguments,
    SFTStageArguments,
    first_line_command,
    parse_recipe,
)
from himed.trainers.pipeline import PipelineConfig

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
# Device-only settings (bf16 on a GPU) cannot be validated on a CPU machine; everything else is.
CPU_OVERRIDES = ["--bf16", "false", "--use_cpu", "true"]


def recipe_kind(path: Path) -> str:
    return path.stem.split("_")[0]


def test_recipes_exist_for_every_setup():
    setups = {path.parent.name for path in RECIPES}
    assert {"quickstart", "qwen2.5-vl-3b", "qwen2.5-vl-7b"} <= setups
    for setup in setups:
        stems = {path.stem for path in RECIPES if path.parent.name == setup}
        assert {"sft", "grpo", "pipeline"} <= stems, setup


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    command = first_line_command(path)
    assert str(path.relative_to(ROOT)) in command
    kind = recipe_kind(path)
    if kind == "pipeline":
        config = PipelineConfig.from_file(path.relative_to(ROOT))
        assert config.stages
        return
    if kind == "grpo":
        data, rewards, grpo, model = parse_recipe(
            [DataArguments, RewardArguments, GRPOConfig, ModelConfig], ["--config", str(path), *CPU_OVERRIDES]
        )
        config = RewardsConfig.from_dict(rewards.reward_block(), where=str(path))
        components = CompositeReward.from_config(config, sections=data.sections).components
        assert [c.name for c in components] == config.names
        assert grpo.report_to in ([], ["none"], "none")
    else:
        assert kind == "sft"
        data, stage, sft, model = parse_recipe(
            [DataArguments, SFTStageArguments, SFTConfig, ModelConfig], ["--config", str(path), *CPU_OVERRIDES]
        )
        # sft_<stage>.yaml runs that stage (sft_weighted: weighted); sft.yaml runs the cold start.
        assert stage.stage == (path.stem.split("_", 1)[1] if "_" in path.stem else "cold_start")
    assert model.model_name_or_path
    assert data.data_path


def test_unknown_recipe_key_is_an_error(tmp_path):
    recipe = yaml.safe_load((ROOT / "recipes/quickstart/sft.yaml").read_text())
    recipe["learnig_rate"] = 0.1
    path = tmp_path / "bad.yaml"
    path.write_text("# python recipes/sft.py --config bad.yaml\n" + yaml.safe_dump(recipe))
    with pytest.raises(ValueError, match="learnig_rate"):
        parse_recipe([DataArguments, SFTStageArguments, SFTConfig, ModelConfig], ["--config", str(path)])


def test_command_line_overrides_yaml():
    data, stage, sft, model = parse_recipe(
        [DataArguments, SFTStageArguments, SFTConfig, ModelConfig],
        ["--config", str(ROOT / "recipes/quickstart/sft.yaml"), "--learning_rate", "0.5", "--think", "labels"],
    )
    assert sft.learning_rate == 0.5
    assert stage.think == "labels"


def test_bad_field_values_are_errors():
    with pytest.raises(ValueError, match="on_bad_rows"):
        DataArguments(data_path="x", on_bad_rows="ignore")
    with pytest.raises(ValueError, match="unknown section"):
        DataArguments(data_path="x", sections=["think", "findings"])
    with pytest.raises(ValueError, match="think"):
        SFTStageArguments(think="always")
    with pytest.raises(ValueError, match="rewards"):
        RewardArguments().reward_block()


def test_pipeline_rejects_unknown_keys(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("output_dir: x\nbase_model: y\nstages: []\nstagse: []\n")
    with pytest.raises(ValueError, match="stagse"):
        PipelineConfig.from_file(path)
