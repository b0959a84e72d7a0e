import dataclasses

import pytest

from himed.rewards.config import RewardEntryConfig, RewardsConfig, ScheduleConfig

DESIGN_BLOCK = """
schedule: {name: linear, total_steps: 10000, alpha_min: 0.1}
rewards:
  - {name: format}
  - {name: format, as: format_findings_only, kwargs: {sections: [think, finding]}, level: high, weight: 0.5}
impute: zero
"""


def test_yaml_block_parses_into_typed_dataclasses(tmp_path):
    path = tmp_path / "rewards.yaml"
    path.write_text(DESIGN_BLOCK)
    config = RewardsConfig.from_yaml(path)
    assert config.names == ["format", "format_findings_only"]
    assert config.schedule == ScheduleConfig(name="linear", params={"total_steps": 10000, "alpha_min": 0.1})
    assert config.impute == "zero"
    second = config.rewards[1]
    assert (second.name, second.alias, second.level, second.weight) == ("format", "format_findings_only", "high", 0.5)
    assert second.kwargs == {"sections": ["think", "finding"]}
    assert RewardsConfig.from_dict(config.to_dict()) == config


def test_level_and_weight_default_to_the_registered_values():
    config = RewardsConfig.from_dict({"rewards": [{"name": "format"}, {"name": "token"}]})
    assert [(e.level, e.weight) for e in config.rewards] == [("low", 1.0), ("low", 1.0)]
    assert config.schedule.build().alpha_low(5000) == pytest.approx(0.5)  # default: the paper's linear schedule
    assert config.impute == "group_mean"


def test_every_field_has_help():
    for cls in (ScheduleConfig, RewardEntryConfig, RewardsConfig):
        for field in dataclasses.fields(cls):
            assert field.metadata.get("help"), f"{cls.__name__}.{field.name} has no help"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            {"rewards": [{"name": "format"}], "schedul": {}},
            "cfg.yaml: unknown key 'schedul'; allowed keys: schedule, rewards, impute",
        ),
        ({"rewards": [{"name": "format", "kwarg": {}}]}, "cfg.yaml: rewards[0]: unknown key 'kwarg'"),
        (
            {"rewards": [{"name": "format"}, {"name": "format"}]},
            "cfg.yaml: rewards[1]: duplicate reward name 'format' (also rewards[0])",
        ),
        ({"rewards": [{"name": "format"}, {"name": "token", "as": "format"}]}, "duplicate reward name 'format'"),
        (
            {"rewards": [{"name": "no_such_reward"}]},
            "cfg.yaml: rewards[0].name: unknown reward 'no_such_reward'; registered rewards:",
        ),
        ({"rewards": [{"kwargs": {}}]}, "cfg.yaml: rewards[0]: missing 'name'"),
        ({"rewards": [{"name": "format", "level": "mid"}]}, "cfg.yaml: rewards[0].level: must be one of low, high"),
        ({"rewards": [{"name": "format", "weight": "1"}]}, "cfg.yaml: rewards[0].weight: expected a finite number"),
        ({"rewards": [{"name": "format", "weight": float("nan")}]}, "rewards[0].weight: expected a finite number"),
        ({"rewards": [{"name": "format", "as": "a/b"}]}, "rewards[0].as: expected a non-empty name without '/'"),
        ({"rewards": [{"name": "format", "kwargs": [1]}]}, "rewards[0].kwargs: expected a mapping"),
        ({"rewards": ["format"]}, "rewards[0]: expected a mapping"),
        ({"rewards": []}, "'rewards' must be a non-empty list"),
        ({}, "'rewards' must be a non-empty list"),
        ({"rewards": [{"name": "format"}], "impute": "mean"}, "impute must be one of group_mean, zero"),
        (
            {"rewards": [{"name": "format"}], "schedule": {"name": "linear", "alpha_min": 2}},
            "cfg.yaml: schedule: alpha_min must be in [0, 1]",
        ),
        (
            {"rewards": [{"name": "format"}], "schedule": {"name": "linear", "alpha": 2}},
            "cfg.yaml: schedule: unknown key(s) ['alpha']",
        ),
        (
            {"rewards": [{"name": "format"}], "schedule": {"name": "exp"}},
            "cfg.yaml: schedule.name: unknown schedule 'exp'",
        ),
        ({"rewards": [{"name": "missing_module_xyz:fn"}]}, "cannot import module 'missing_module_xyz'"),
        (
            {"rewards": [{"name": "format", "kwargs": {"section": ["think", "finding"]}}]},
            "cfg.yaml: rewards[0].kwargs: unknown key 'section' for reward 'format'; accepted: sections",
        ),
    ],
)
def test_errors_name_the_file_and_field(block, message):
    with pytest.raises(ValueError) as error:
        RewardsConfig.from_dict(block, where="cfg.yaml")
    assert message in str(error.value)


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rewards: [ {name: format\n")
    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        RewardsConfig.from_yaml(bad)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        RewardsConfig.from_yaml(tmp_path / "missing.yaml")


def test_from_names_builds_default_entries():
    config = RewardsConfig.from_names(["format", " token"])
    assert config.names == ["format", "token"]
    with pytest.raises(ValueError, match="--rewards: give comma-separated reward names"):
        RewardsConfig.from_names(["format", ""])
    with pytest.raises(ValueError, match="--rewards: rewards\\[1\\]: duplicate"):
        RewardsConfig.from_names(["format", "format"])


def test_dataclass_construction_validates_too():
    with pytest.raises(ValueError, match="unknown schedule"):
        ScheduleConfig(name="nope")
    with pytest.raises(ValueError, match="level must be one of low, high"):
        RewardEntryConfig(name="format", level="middle")
    with pytest.raises(ValueError, match="at least one reward entry"):
        RewardsConfig(rewards=[])
