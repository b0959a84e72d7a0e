"""``himed plot``: training curves from the ``log_history`` of a Trainer's ``trainer_state.json``.

Panels, each drawn only when its keys were logged (x axis: the optimizer step of each log entry):

1. reward components: ``rewards/<name>/mean`` for every reward (TRL's per-function means, before weighting);
2. total reward: ``reward`` (TRL's weighted sum, i.e. HiMed-RL eq. 8-9 with the scheduled weights), and next to
   it the same per-component means summed at FIXED weights, the schedule's end weights
   ``w_i * alpha_level(T)`` (``fixed_weight_total``). The scheduled total is not a learning curve: as the weight
   moves from the several low-level rewards to the single high-level one it falls even when every component rises
   (eq. 8-10), so only the fixed-weight line can be read as "the policy got better". The end weights come from
   the run's ``himed_rewards.json`` (components, levels, weights and schedule, written with every checkpoint);
   without it, from the last logged ``rewards/<name>/weight`` (then labelled as the last logged weights);
3. schedule: ``schedule/alpha_low`` and ``schedule/alpha_high`` (HiMed-RL eq. 10, logged by himed's trainer);
4. failure rates: ``rewards/<name>/failure_rate`` (components imputed because they returned None) and the
   semantic judge's ``<reward>/judge/failure_rate`` (requests that failed after retries); the judge's other
   counters (calls, latency) are on another scale and are left out.

``--log-dir`` is a training output directory or a checkpoint; when it has no ``trainer_state.json`` itself, the
newest ``checkpoint-*`` inside it is used (Trainer writes the file with every checkpoint).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

_COMPONENT = re.compile(r"^rewards/(.+)/mean$")
_FAILURE = re.compile(r"^rewards/(.+)/failure_rate$")
# The semantic reward logs its judge's counters through TRL's log_metric as ``<reward>/judge/<counter>``.
_JUDGE_FAILURE = re.compile(r"^(?:(.+)/)?judge/failure_rate$")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
PROVENANCE_FILE = "himed_rewards.json"  # written by himed's GRPO trainer (trainers/grpo.py) next to the state
FIXED_TOTAL_LABEL = "total at the end-of-schedule weights (fixed; the learning curve)"
LAST_WEIGHTS_LABEL = "total at the last logged weights (fixed; no himed_rewards.json)"


def find_trainer_state(log_dir: str | Path) -> Path:
    """``log_dir/trainer_state.json``, else the newest checkpoint's; FileNotFoundError naming what was looked at."""
    log_dir = Path(log_dir)
    if log_dir.is_file() and log_dir.name == "trainer_state.json":
        return log_dir
    if not log_dir.is_dir():
        raise FileNotFoundError(f"{log_dir}: no such directory")
    path = log_dir / "trainer_state.json"
    if path.is_file():
        return path
    checkpoints = sorted(
        (int(m.group(1)), child)
        for child in log_dir.iterdir()
        if (m := _CHECKPOINT.match(child.name)) and (child / "trainer_state.json").is_file()
    )
    if checkpoints:
        return checkpoints[-1][1] / "trainer_state.json"
    raise FileNotFoundError(
        f"{path}: not found, and no checkpoint-*/trainer_state.json under {log_dir} "
        "(the Trainer writes it with each checkpoint)"
    )


def read_log_history(path: str | Path) -> list[dict]:
    path = Path(path)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from None
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list) or not history:
        raise ValueError(f"{path}: no log history (was anything logged? set logging_steps in the training config)")
    return [entry for entry in history if isinstance(entry, dict)]


def series(history: Sequence[Mapping], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key`` over the log entries that have it as a finite number."""
    steps, values = [], []
    for index, entry in enumerate(history):
        value = entry.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        steps.append(entry.get("step", index))
        values.append(float(value))
    return steps, values


def end_step(schedule) -> float:
    """The step from which a schedule's weights no longer change: ``total_steps`` (linear, cosine), the last
    boundary (step), 0 for a constant schedule."""
    params = schedule.params()
    if "total_steps" in params:
        return float(params["total_steps"])
    return float(max(params.get("boundaries") or [0]))


def end_weights(state_path: str | Path, history: Sequence[Mapping]) -> tuple[dict[str, float], str] | None:
    """({component: its weight at the schedule's end}, label) from the run's provenance file beside
    ``trainer_state.json``, else from the last logged ``rewards/<name>/weight`` values; None when neither exists."""
    provenance = Path(state_path).parent / PROVENANCE_FILE
    if provenance.is_file():
        from himed.rewards.config import RewardsConfig

        saved = json.loads(provenance.read_text(encoding="utf-8"))
        schedule = RewardsConfig.from_dict(saved["rewards"], where=str(provenance)).schedule.build()
        alphas = schedule.alphas(end_step(schedule))
        return {c["name"]: alphas[c["level"]] * float(c["weight"]) for c in saved["components"]}, FIXED_TOTAL_LABEL
    weights: dict[str, float] = {}
    for entry in history:
        for key, value in entry.items():
            if key.startswith("rewards/") and key.endswith("/weight") and isinstance(value, int | float):
                weights[key[len("rewards/") : -len("/weight")]] = float(value)
    return (weights, LAST_WEIGHTS_LABEL) if weights else None


def fixed_weight_total(history: Sequence[Mapping], weights: Mapping[str, float]) -> tuple[list[float], list[float]]:
    """(steps, values) of ``sum_i weights[i] * rewards/<i>/mean`` over the log entries that have every weighted
    component's mean (HiMed-RL eq. 8-9 with the weights held fixed)."""
    names = [name for name, weight in weights.items() if weight != 0.0]
    steps, values = [], []
    for index, entry in enumerate(history):
        means = [entry.get(f"rewards/{name}/mean") for name in names]
        if not names or not all(
            isinstance(m, int | float) and not isinstance(m, bool) and math.isfinite(m) for m in means
        ):
            continue
        steps.append(entry.get("step", index))
        values.append(sum(weights[name] * float(mean) for name, mean in zip(names, means, strict=True)))
    return steps, values


def panel_series(state_path: str | Path, history: Sequence[Mapping]) -> dict[str, dict[str, tuple[list, list]]]:
    """Every panel's lines, ``{title: {label: (steps, values)}}``: what ``plot_training`` draws."""
    panels = {title: {_label(key): series(history, key) for key in keys} for title, keys in panel_keys(history).items()}
    weights = end_weights(state_path, history)
    if weights is not None:
        steps, values = fixed_weight_total(history, weights[0])
        if steps:
            panels.setdefault("total reward", {})
            if "reward" in panels["total reward"]:
                panels["total reward"] = {
                    "scheduled total (weights move to the high level: not a learning curve)": panels["total reward"][
                        "reward"
                    ]
                }
            panels["total reward"][weights[1]] = (steps, values)
    order = ["reward components", "total reward", "schedule", "failure rates"]
    return {title: panels[title] for title in order if title in panels}


def panel_keys(history: Sequence[Mapping]) -> dict[str, list[str]]:
    """The keys each panel draws, in first-logged order; panels without keys are absent."""
    seen: list[str] = []
    for entry in history:
        seen += [key for key in entry if key not in seen]
    panels = {
        "reward components": [k for k in seen if _COMPONENT.match(k)],
        "total reward": [k for k in seen if k == "reward"],
        "schedule": [k for k in ("schedule/alpha_low", "schedule/alpha_high") if k in seen],
        "failure rates": [k for k in seen if _FAILURE.match(k) or _JUDGE_FAILURE.match(k)],
    }
    return {title: keys for title, keys in panels.items() if keys}


def _label(key: str) -> str:
    if match := _COMPONENT.match(key):
        return match.group(1)
    if match := _FAILURE.match(key):
        return f"{match.group(1)} (reward returned None)"
    if match := _JUDGE_FAILURE.match(key):
        return f"{match.group(1) or 'judge'}: judge failures"
    return key.removeprefix("schedule/")


def plot_training(log_dir: str | Path, output: str | Path) -> list[str]:
    """Draw the panels into ``output`` (PNG); returns the panel titles drawn."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on training machines
    import matplotlib.pyplot as plt

    path = find_trainer_state(log_dir)
    history = read_log_history(path)
    panels = panel_series(path, history)
    if not panels:
        raise ValueError(
            f"{path}: the log history has none of rewards/<name>/mean, reward, schedule/alpha_low|high, "
            "rewards/<name>/failure_rate, <reward>/judge/failure_rate"
        )
    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 2.8 * len(panels)), sharex=True, squeeze=False)
    for axis, (title, lines) in zip(axes[:, 0], panels.items(), strict=True):
        for label, (steps, values) in lines.items():
            axis.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=label)
        axis.set_title(title)
        axis.grid(alpha=0.3)
        if title == "schedule":
            axis.set_ylim(-0.05, 1.05)
        axis.legend(loc="best", fontsize="small", ncol=2 if len(lines) > 4 else 1)
    axes[-1, 0].set_xlabel("step")
    figure.suptitle(str(path.parent))
    figure.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return list(panels)
