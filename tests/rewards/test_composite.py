import asyncio
import math
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from himed.rewards.composite import CompositeReward, RewardComponent, failure_rates, impute, total
from himed.rewards.config import RewardsConfig
from himed.rewards.schedules import build_schedule

GOOD = "<think>t</think><finding>The heart is enlarged.</finding><impression>Cardiomegaly.</impression>"


def build_reward_functions(config, sections=None):
    return CompositeReward.from_config(config, sections=sections).components


def effective_weights(components, schedule, step):
    return CompositeReward(components, build_schedule(schedule)).weights(step)


def naive_impute(matrix, group_size, mode):
    """The definition of docs/rewards.md (imputation), one value at a time."""
    out = [list(row) for row in matrix]
    n, k = len(matrix), len(matrix[0]) if matrix else 0
    for start in range(0, n, group_size):
        for j in range(k):
            values = [matrix[i][j] for i in range(start, start + group_size)]
            ok = [v for v in values if math.isfinite(v)]
            fill = 0.0 if mode == "zero" or not ok else sum(ok) / len(ok)
            for i in range(start, start + group_size):
                if not math.isfinite(matrix[i][j]):
                    out[i][j] = fill
    return out


values = st.one_of(st.floats(-10, 10), st.just(float("nan")), st.just(float("inf")))


@settings(max_examples=150, deadline=None)
@given(
    groups=st.integers(1, 4),
    group_size=st.integers(1, 5),
    k=st.integers(1, 4),
    data=st.data(),
    mode=st.sampled_from(["group_mean", "zero"]),
    use_torch=st.booleans(),
)
def test_vectorised_impute_matches_naive_loop(groups, group_size, k, data, mode, use_torch):
    n = groups * group_size
    matrix = data.draw(st.lists(st.lists(values, min_size=k, max_size=k), min_size=n, max_size=n))
    expected = np.array(naive_impute(matrix, group_size, mode))
    if use_torch:
        result = impute(torch.tensor(matrix, dtype=torch.float64), group_size, mode)
        assert isinstance(result, torch.Tensor) and result.dtype == torch.float64
        result = result.numpy()
    else:
        result = impute(np.array(matrix), group_size, mode)
        assert isinstance(result, np.ndarray)
    assert result.shape == (n, k)
    assert np.isfinite(result).all()
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)


def test_group_mean_leaves_the_failed_completion_at_the_group_baseline():
    rewards = torch.tensor([[1.0, 0.5], [float("nan"), 0.75], [0.0, float("nan")], [float("nan"), float("nan")]])
    filled = impute(rewards, group_size=2)
    assert filled.tolist() == [[1.0, 0.5], [1.0, 0.75], [0.0, 0.0], [0.0, 0.0]]
    assert not torch.isnan(rewards[0]).any()  # the input is not modified in place
    assert torch.isnan(rewards[1, 0])


def test_impute_keeps_float32_and_rejects_bad_groups():
    rewards = torch.tensor([[float("nan")], [2.0]], dtype=torch.float32)
    assert impute(rewards, 2).dtype == torch.float32
    assert impute(rewards, 2, "zero").tolist() == [[0.0], [2.0]]
    with pytest.raises(ValueError, match="group_size must be a positive integer dividing the 2 rows"):
        impute(rewards, 3)
    with pytest.raises(ValueError, match="impute mode must be one of group_mean, zero"):
        impute(rewards, 2, "mean")
    with pytest.raises(ValueError, match="matrix"):
        impute(np.zeros(4), 2)


def test_failure_rates_per_component():
    rewards = [[1.0, None], [None, None], [0.5, 2.0], [0.0, float("nan")]]
    assert failure_rates(rewards) == [0.25, 0.75]
    assert failure_rates(torch.tensor([[1.0, float("nan")]])) == [0.0, 1.0]
    assert failure_rates(np.zeros((0, 3))) == [0.0, 0.0, 0.0]


def test_total_is_eq_8_9():
    weights = effective_weights(
        [
            RewardComponent("a", None, "low", 1.0),
            RewardComponent("b", None, "low", 0.5),
            RewardComponent("c", None, "high", 2.0),
        ],
        {"name": "linear", "total_steps": 100, "alpha_min": 0.1},
        step=25,
    )
    assert weights == pytest.approx([0.75, 0.375, 0.5])
    row = [0.2, 0.4, 0.9]
    expected = 0.75 * (1.0 * 0.2 + 0.5 * 0.4) + 0.25 * (2.0 * 0.9)
    assert total(row, weights) == pytest.approx(expected)
    matrix = total(np.array([row, [0, 0, 1]]), weights)
    np.testing.assert_allclose(matrix, [expected, 0.5])
    assert total(torch.tensor([row]), weights).tolist() == pytest.approx([expected])


def test_total_is_nan_only_when_a_needed_value_failed():
    assert math.isnan(total([0.5, None], [1.0, 1.0]))
    assert total([0.5, None], [1.0, 0.0]) == 0.5  # a zero weight does not need its value
    with pytest.raises(ValueError, match="2 reward components but 3 weights"):
        total([1, 2], [1, 1, 1])


def test_effective_weights_follow_the_schedule_over_training():
    components = [RewardComponent("low", None, "low", 1.0), RewardComponent("high", None, "high", 1.0)]
    schedule = build_schedule({"name": "linear", "total_steps": 10, "alpha_min": 0.1})
    assert effective_weights(components, schedule, 0) == [1.0, 0.0]
    assert effective_weights(components, schedule, 5) == pytest.approx([0.5, 0.5])
    assert effective_weights(components, schedule, 100) == pytest.approx([0.1, 0.9])


@pytest.fixture
def user_rewards(tmp_path, monkeypatch):
    (tmp_path / "user_rewards_mod.py").write_text(
        textwrap.dedent(
            """
            import asyncio

            def length_reward(completions, scale=1.0, **columns):
                return [scale * len(c) for c in completions]

            def sectioned(completions, sections=("x",), **columns):
                return [float(len(sections))] * len(completions)

            async def slow_reward(completions, **columns):
                await asyncio.sleep(0)
                return [1.0 for _ in completions]

            class Described:
                level = "high"
                weight = 0.25

                def __init__(self, offset=0.0):
                    self.offset = offset
                    self.calls = 0

                def __call__(self, completions, **columns):
                    self.calls += 1
                    return [self.offset for _ in completions]

                def describe(self):
                    return {"calls": self.calls}
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_rewards_mod"


def test_build_reward_functions_names_levels_weights_and_sections(user_rewards):
    config = RewardsConfig.from_dict(
        {
            "rewards": [
                {"name": "format"},
                {"name": f"{user_rewards}:length_reward", "kwargs": {"scale": 2.0}, "weight": 0.5},
                {"name": f"{user_rewards}:sectioned"},
                {"name": f"{user_rewards}:Described", "as": "described", "kwargs": {"offset": 0.3}},
            ]
        }
    )
    components = build_reward_functions(config, sections=["think", "finding"])
    assert [c.name for c in components] == ["format", "length_reward", "sectioned", "described"]
    assert [c.fn.__name__ for c in components] == ["format", "length_reward", "sectioned", "described"]
    assert [(c.level, c.weight) for c in components] == [("low", 1.0), ("low", 0.5), ("low", 1.0), ("high", 0.25)]
    findings_only = "<think>a</think><finding>b</finding>"
    assert components[0].fn([findings_only, GOOD], reference=["b", "b"]) == [1.0, -1.0]
    assert components[1].fn(["abc"]) == [6.0]
    assert components[2].fn(["abc"]) == [2.0]  # the recipe's sections reached the function
    assert components[3].score_completions(["a", "b"]) == [{"value": 0.3}, {"value": 0.3}]
    assert components[3].describe() == {"calls": 1}
    assert components[0].describe() == {}


def test_entry_kwargs_sections_win_over_the_recipe():
    config = RewardsConfig.from_dict({"rewards": [{"name": "format", "kwargs": {"sections": ["think", "finding"]}}]})
    (component,) = build_reward_functions(config, sections=["think", "finding", "impression"])
    assert component.fn.sections == ("think", "finding")


def test_bad_kwargs_name_the_entry():
    config = RewardsConfig.from_dict(
        {"rewards": [{"name": "format", "as": "fmt", "kwargs": {"sections": ["think", "summary"]}}]}
    )
    with pytest.raises(ValueError, match=r"rewards\[0\] \(fmt\): unknown section 'summary'"):
        build_reward_functions(config)


def test_async_rewards_are_resolved_outside_an_event_loop(user_rewards):
    (component,) = build_reward_functions({"rewards": [{"name": f"{user_rewards}:slow_reward"}]})
    assert component.is_async
    assert component.score_completions(["a", "b"]) == [{"value": 1.0}, {"value": 1.0}]
    assert asyncio.run(component.fn(["a"])) == [1.0]


def test_score_completions_keeps_parts_from_reward_classes():
    (component,) = build_reward_functions({"rewards": [{"name": "token"}]})
    (row,) = component.score_completions([GOOD], reference=["The heart is enlarged. Cardiomegaly."])
    assert row["value"] == pytest.approx(1.0)
    assert {"p1", "p4", "bp"} <= set(row)


@settings(max_examples=60, deadline=None)
@given(group_size=st.integers(2, 6), data=st.data())
def test_group_mean_imputation_keeps_the_group_mean_of_scored_values(group_size, data):
    """Why group_mean is neutral: the group's mean (GRPO's baseline) is the mean of the values that were scored."""
    column = data.draw(
        st.lists(st.one_of(st.floats(-5, 5), st.just(float("nan"))), min_size=group_size, max_size=group_size)
    )
    filled = impute(np.array(column)[:, None], group_size)[:, 0]
    scored = [v for v in column if not math.isnan(v)]
    assert filled.mean() == pytest.approx(sum(scored) / len(scored) if scored else 0.0, abs=1e-9)
    for before, after in zip(column, filled, strict=True):
        if not math.isnan(before):
            assert after == before
