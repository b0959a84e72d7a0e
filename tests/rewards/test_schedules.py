import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himed.rewards.schedules import (
    ConstantSchedule,
    CosineDecaySchedule,
    LinearDecaySchedule,
    StepSchedule,
    build_schedule,
    register_schedule,
    schedule_names,
)


def test_default_is_the_papers_linear_schedule():
    schedule = build_schedule(None)
    assert isinstance(schedule, LinearDecaySchedule)
    assert (schedule.total_steps, schedule.alpha_min) == (10000, 0.1)


@pytest.mark.parametrize(
    ("step", "low"),
    [(0, 1.0), (2500, 0.75), (5000, 0.5), (9000, 0.1), (9500, 0.1), (10000, 0.1), (50000, 0.1)],
)
def test_linear_matches_eq_10(step, low):
    alphas = build_schedule({"name": "linear"}).alphas(step)
    assert alphas["low"] == pytest.approx(low)
    assert alphas["high"] == pytest.approx(1 - low)


def test_linear_floor_is_alpha_min():
    schedule = build_schedule({"name": "linear", "total_steps": 100, "alpha_min": 0.3})
    assert schedule.alpha_low(50) == pytest.approx(0.5)
    assert schedule.alpha_low(80) == pytest.approx(0.3)


def test_constant_ignores_the_step():
    schedule = build_schedule({"name": "constant", "alpha_low": 0.3})
    assert isinstance(schedule, ConstantSchedule)
    assert {schedule.alpha_low(t) for t in (0, 7, 10**6)} == {0.3}
    assert schedule.params() == {"name": "constant", "alpha_low": 0.3}


def test_cosine_endpoints_and_midpoint():
    schedule = build_schedule({"name": "cosine", "total_steps": 100, "alpha_min": 0.2})
    assert isinstance(schedule, CosineDecaySchedule)
    assert schedule.alpha_low(0) == pytest.approx(1.0)
    assert schedule.alpha_low(50) == pytest.approx(0.2 + 0.8 * 0.5)
    assert schedule.alpha_low(25) == pytest.approx(0.2 + 0.8 * (1 + math.cos(math.pi / 4)) / 2)
    assert schedule.alpha_low(100) == pytest.approx(0.2)
    assert schedule.alpha_low(1000) == pytest.approx(0.2)


def test_step_schedule_changes_at_boundaries():
    schedule = build_schedule({"name": "step", "boundaries": [10, 20], "values": [1.0, 0.5, 0.2]})
    assert isinstance(schedule, StepSchedule)
    assert [schedule.alpha_low(t) for t in (0, 9, 10, 19, 20, 1000)] == [1.0, 1.0, 0.5, 0.5, 0.2, 0.2]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "linear", "alpha_min": 1.5}, "alpha_min must be in [0, 1]"),
        ({"name": "linear", "total_steps": 0}, "total_steps must be > 0"),
        ({"name": "cosine", "total_steps": -3}, "total_steps must be > 0"),
        ({"name": "linear", "total_step": 10}, "unknown key(s) ['total_step']"),
        ({"name": "linear", "total_steps": "1e4"}, "schedule.total_steps: expected an integer"),
        ({"name": "constant", "alpha_low": -0.1}, "alpha_low must be in [0, 1]"),
        ({"name": "constant", "alpha_min": 0.1}, "unknown key(s) ['alpha_min']"),
        ({"name": "step", "boundaries": [10]}, "missing 1 required"),
        ({"name": "step", "boundaries": [10], "values": [1.0]}, "len(values) == len(boundaries) + 1"),
        ({"name": "step", "boundaries": [20, 10], "values": [1, 1, 1]}, "strictly increasing"),
        ({"name": "step", "boundaries": [0], "values": [1, 1]}, "strictly increasing steps > 0"),
        ({"name": "step", "boundaries": [5], "values": [1, 2]}, "values[1] must be in [0, 1]"),
        ({"name": "warmup"}, "unknown schedule 'warmup'; known schedules: constant, cosine, linear, step"),
    ],
)
def test_bad_parameters_say_how_to_fix(config, message):
    with pytest.raises(ValueError) as error:
        build_schedule(config)
    assert message in str(error.value)


@pytest.mark.parametrize("step", [-1, float("nan"), float("inf"), True, "3"])
def test_bad_steps_are_rejected(step):
    with pytest.raises(ValueError, match="step must be a finite number >= 0"):
        build_schedule(None).alpha_low(step)


def test_duplicate_schedule_names_are_rejected():
    assert "linear" in schedule_names()
    with pytest.raises(ValueError, match="already registered"):
        register_schedule("linear")(LinearDecaySchedule)


def test_params_round_trip_through_build_schedule():
    for config in (
        {"name": "linear", "total_steps": 300, "alpha_min": 0.05},
        {"name": "cosine", "total_steps": 10, "alpha_min": 0.0},
        {"name": "constant", "alpha_low": 1.0},
        {"name": "step", "boundaries": [3, 9], "values": [0.9, 0.4, 0.0]},
    ):
        schedule = build_schedule(config)
        assert schedule.params() == config
        assert build_schedule(schedule.params()) == schedule


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(["linear", "cosine"]),
    total_steps=st.integers(1, 10**6),
    alpha_min=st.floats(0, 1),
    t1=st.integers(0, 2 * 10**6),
    t2=st.integers(0, 2 * 10**6),
)
def test_decaying_schedules_are_monotone_and_bounded(name, total_steps, alpha_min, t1, t2):
    schedule = build_schedule({"name": name, "total_steps": total_steps, "alpha_min": alpha_min})
    early, late = sorted((t1, t2))
    a_early, a_late = schedule.alpha_low(early), schedule.alpha_low(late)
    assert alpha_min - 1e-12 <= a_late <= a_early + 1e-12 <= 1 + 1e-12
    alphas = schedule.alphas(late)
    assert alphas["low"] + alphas["high"] == pytest.approx(1.0)
    assert 0 <= alphas["high"] <= 1
