"""The pipeline's reward summary of evaluation predictions."""

import json

import pytest

from himed.data.loaders import load_rows
from himed.data.sections import render_target
from himed.rewards.summary import reward_block_from_recipe, score_predictions

BLOCK = {
    "schedule": {"name": "linear", "total_steps": 10, "alpha_min": 0.2},
    "rewards": [{"name": "format"}, {"name": "token"}, {"name": "semantic", "kwargs": {"judge": "labeler"}}],
}


def test_perfect_predictions_outscore_broken_ones(demo_dir):
    rows = load_rows("r2gen", demo_dir, "test")
    by_id = {row["id"]: row for row in rows}
    perfect = [{"id": r["id"], "prediction": render_target(r["findings"], r["impression"])} for r in rows]
    broken = [{"id": r["id"], "prediction": "no tags at all"} for r in rows]
    good, bad = score_predictions(perfect, by_id, BLOCK), score_predictions(broken, by_id, BLOCK)
    assert good["reward/format"] == 1.0 and bad["reward/format"] == -1.0
    assert good["reward/token"] == pytest.approx(1.0)
    # Start of the schedule: low level only (format + token); end: 0.2 x low + 0.8 x semantic.
    assert good["reward_total_start"] == pytest.approx(2.0)
    assert good["reward_total_end"] == pytest.approx(0.2 * 2.0 + 0.8 * good["reward/semantic"])
    assert bad["reward_total_start"] < good["reward_total_start"]
    assert good["reward/format/failure_rate"] == 0.0


def test_unknown_prediction_id_is_an_error(demo_dir):
    rows = load_rows("r2gen", demo_dir, "test")
    with pytest.raises(ValueError, match="no row"):
        score_predictions([{"id": "nope", "prediction": "x"}], {r["id"]: r for r in rows}, BLOCK)


def test_reward_block_from_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps({"learning_rate": 1, **BLOCK}))
    assert reward_block_from_recipe(path) == BLOCK
    path.write_text("learning_rate: 1\n")
    with pytest.raises(ValueError, match="no 'rewards'"):
        reward_block_from_recipe(path)


def test_reward_total_end_is_at_the_end_of_a_step_schedule(demo_dir):
    """Bug: reward_total_end was taken at step 0 for schedules without total_steps (step, constant)."""
    rows = load_rows("r2gen", demo_dir, "test")
    by_id = {row["id"]: row for row in rows}
    perfect = [{"id": r["id"], "prediction": render_target(r["findings"], r["impression"])} for r in rows]
    block = {
        "schedule": {"name": "step", "boundaries": [5, 9], "values": [1.0, 0.5, 0.25]},
        "rewards": [{"name": "format"}, {"name": "semantic", "kwargs": {"judge": "labeler"}}],
    }
    summary = score_predictions(perfect, by_id, block)
    assert summary["reward_total_start"] == pytest.approx(1.0)  # alpha_low = 1: format only
    assert summary["reward_total_end"] == pytest.approx(0.25 * 1.0 + 0.75 * summary["reward/semantic"])
    assert summary["reward/semantic"] > 1.0  # so that the two ends differ
