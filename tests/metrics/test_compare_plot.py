"""himed compare and himed plot on synthetic runs and a synthetic trainer_state.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from himed.cli import main
from himed.metrics.compare import compare_table, load_runs
from himed.metrics.plot import panel_keys, plot_training


def write_run(folder: Path, metrics: dict, **config) -> Path:
    folder.mkdir(parents=True)
    base = {"clean": "mimic_cxr", "section": "report", "meteor": "meteor-1.5 jar", "labeler": "rules"}
    result = {"metrics": metrics, "config": {**base, **config}, "n": 10}
    (folder / "metrics.json").write_text(json.dumps(result))
    return folder / "metrics.json"


@pytest.fixture
def three_runs(tmp_path: Path) -> list[Path]:
    return [
        write_run(tmp_path / "base", {"bleu_4": 0.05, "ce_micro_f1_14": 0.20}),
        write_run(tmp_path / "sft", {"bleu_4": 0.10, "ce_micro_f1_14": 0.30}),
        write_run(tmp_path / "rl", {"bleu_4": 0.12, "ce_micro_f1_14": 0.45, "consistency_rate": 0.9}),
    ]


def test_compare_table_columns_rows_and_deltas(three_runs: list[Path]) -> None:
    table = compare_table(load_runs(three_runs))
    lines = table.splitlines()
    assert lines[0] == "| metric | base | sft | Δ sft | rl | Δ rl |"
    assert "| bleu_4 | 0.0500 | 0.1000 | +0.0500 | 0.1200 | +0.0700 |" in lines
    assert "| ce_micro_f1_14 | 0.2000 | 0.3000 | +0.1000 | 0.4500 | +0.2500 |" in lines
    assert "| consistency_rate | - | - | - | 0.9000 | - |" in lines
    assert "Not comparable" not in table


def test_compare_flags_runs_that_are_not_comparable(tmp_path: Path, capsys) -> None:
    a = write_run(tmp_path / "a", {"bleu_4": 0.1})
    b = write_run(tmp_path / "b", {"bleu_4": 0.2}, clean="iu_xray")
    assert main(["compare", str(a), str(tmp_path / "b"), "--names", "first,second"]) == 0
    out = capsys.readouterr().out
    assert "| metric | first | second | Δ second |" in out
    assert "Not comparable: runs differ in clean (first=mimic_cxr, second=iu_xray)" in out
    assert b.exists()


def test_compare_errors(tmp_path: Path, capsys, three_runs: list[Path]) -> None:
    assert main(["compare", str(three_runs[0]), "--names", "a,b"]) == 2
    assert "--names gives 2 names for 1 runs" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"metrics": {"bleu_4": "high"}}))
    assert main(["compare", str(bad)]) == 2
    assert "'bleu_4' is not a number" in capsys.readouterr().err


def synthetic_state(steps: int = 40) -> dict:
    history = []
    for step in range(1, steps + 1):
        alpha_low = max(1 - step / 50, 0.1)
        entry = {
            "step": step,
            "loss": 0.1,
            "rewards/token/mean": 0.2 + 0.005 * step,
            "rewards/concept/mean": 0.3 + 0.004 * step,
            "rewards/semantic/mean": 1.0 + 0.03 * step,
            "rewards/semantic/failure_rate": 0.1 if step % 7 == 0 else 0.0,
            "reward": alpha_low * 0.6 + (1 - alpha_low) * (1.0 + 0.03 * step),
            "schedule/alpha_low": alpha_low,
            "schedule/alpha_high": 1 - alpha_low,
            "semantic/judge/failure_rate": 0.2 if step % 5 == 0 else 0.0,
            "semantic/judge/latency_p95": 3.5,
        }
        history.append(entry)
    history.append({"step": steps, "train_runtime": 12.0})  # the final summary entry has none of the keys
    return {"global_step": steps, "log_history": history}


def test_plot_draws_every_panel(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "trainer_state.json").write_text(json.dumps(synthetic_state()))
    output = tmp_path / "curves.png"
    assert main(["plot", "--log-dir", str(tmp_path / "run"), "--output", str(output)]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and output.stat().st_size > 20_000
    keys = panel_keys(synthetic_state()["log_history"])
    assert list(keys) == ["reward components", "total reward", "schedule", "failure rates"]
    assert keys["failure rates"] == ["rewards/semantic/failure_rate", "semantic/judge/failure_rate"]


def test_plot_uses_the_newest_checkpoint_and_skips_absent_panels(tmp_path: Path) -> None:
    for step in (5, 20):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        state = {"log_history": [{"step": s, "reward": 0.1 * s} for s in range(1, step + 1)]}
        (folder / "trainer_state.json").write_text(json.dumps(state))
    assert plot_training(tmp_path, tmp_path / "p.png") == ["total reward"]


def test_plot_errors(tmp_path: Path, capsys) -> None:
    assert main(["plot", "--log-dir", str(tmp_path), "--output", str(tmp_path / "p.png")]) == 2
    assert "trainer_state.json: not found" in capsys.readouterr().err
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": []}))
    assert main(["plot", "--log-dir", str(tmp_path), "--output", str(tmp_path / "p.png")]) == 2
    assert "no log history" in capsys.readouterr().err
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "loss": 0.3}]}))
    assert main(["plot", "--log-dir", str(tmp_path), "--output", str(tmp_path / "p.png")]) == 2
    assert "none of rewards/<name>/mean" in capsys.readouterr().err


def rising_state(steps: int = 40) -> dict:
    """Every component's mean rises, but the low level (two rewards near 2) outweighs the high one (near 0.5): the
    scheduled total falls as alpha_low decays, the fixed-weight total rises."""
    history = []
    for step in range(0, steps + 1, 5):
        alpha_low = max(1 - step / 40, 0.1)
        means = {"token": 2.0 + 0.001 * step, "concept": 2.0 + 0.001 * step, "semantic": 0.5 + 0.01 * step}
        entry = {"step": step, **{f"rewards/{name}/mean": value for name, value in means.items()}}
        entry["reward"] = alpha_low * (means["token"] + means["concept"]) + (1 - alpha_low) * means["semantic"]
        entry |= {"rewards/token/weight": alpha_low, "rewards/concept/weight": alpha_low}
        entry["rewards/semantic/weight"] = 1 - alpha_low
        history.append(entry)
    return {"global_step": steps, "log_history": history}


def write_provenance(folder: Path) -> None:
    rewards = {
        "schedule": {"name": "linear", "total_steps": 40, "alpha_min": 0.1},
        "rewards": [{"name": "token"}, {"name": "concept"}, {"name": "semantic", "weight": 2.0}],
    }
    components = [
        {"name": "token", "level": "low", "weight": 1.0},
        {"name": "concept", "level": "low", "weight": 1.0},
        {"name": "semantic", "level": "high", "weight": 2.0},
    ]
    (folder / "himed_rewards.json").write_text(json.dumps({"rewards": rewards, "components": components}))


def test_plot_draws_the_total_at_the_end_of_schedule_weights(tmp_path: Path) -> None:
    from himed.metrics.plot import FIXED_TOTAL_LABEL, panel_series

    folder = tmp_path / "run"
    folder.mkdir()
    state = rising_state()
    (folder / "trainer_state.json").write_text(json.dumps(state))
    write_provenance(folder)
    lines = panel_series(folder / "trainer_state.json", state["log_history"])["total reward"]
    scheduled_label, fixed_label = list(lines)
    assert fixed_label == FIXED_TOTAL_LABEL and "not a learning curve" in scheduled_label
    steps, fixed = lines[fixed_label]
    assert steps == list(range(0, 41, 5))
    # End weights: alpha_low(40) = 0.1 on token and concept (weight 1), alpha_high = 0.9 on semantic (weight 2).
    expected = [0.1 * 2 * (2.0 + 0.001 * s) + 0.9 * 2.0 * (0.5 + 0.01 * s) for s in steps]
    assert fixed == pytest.approx(expected)
    scheduled = lines[scheduled_label][1]
    assert all(b < a for a, b in zip(scheduled, scheduled[1:], strict=False)), "the scheduled total falls"
    assert all(b > a for a, b in zip(fixed, fixed[1:], strict=False)), (
        "the fixed-weight total rises with every component"
    )
    assert plot_training(folder, tmp_path / "p.png") == ["reward components", "total reward"]


def test_without_provenance_the_fixed_total_uses_the_last_logged_weights(tmp_path: Path) -> None:
    from himed.metrics.plot import LAST_WEIGHTS_LABEL, panel_series

    state = rising_state()
    lines = panel_series(tmp_path / "trainer_state.json", state["log_history"])["total reward"]
    steps, fixed = lines[LAST_WEIGHTS_LABEL]
    # The last logged step is 40: alpha_low 0.1 on token and concept, 0.9 on semantic (logged effective weights).
    assert fixed == pytest.approx([0.1 * 2 * (2.0 + 0.001 * s) + 0.9 * (0.5 + 0.01 * s) for s in steps])
    # No weights logged at all: no fixed-weight line, the plain total only.
    bare = [{"step": 1, "reward": 0.5, "rewards/token/mean": 0.5}]
    assert list(panel_series(tmp_path / "trainer_state.json", bare)["total reward"]) == ["reward"]
