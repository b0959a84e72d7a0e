"""``himed plot``: training curves from the ``log_history`` of a Trainer's ``trainer_state.json``.

Panels, each drawn only when its keys were logged (x axis: the optimizer step of each log entry):

1. reward components: ``rewards/<name>/mean`` for every reward (TRL's per-function means, before weighting);
2. total reward: ``reward`` (TRL's weighted sum, i.e. HiMed-RL eq. 8-9 with the scheduled weights);
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
    panels = panel_keys(history)
    if not panels:
        raise ValueError(
            f"{path}: the log history has none of rewards/<name>/mean, reward, schedule/alpha_low|high, "
            "rewards/<name>/failure_rate, <reward>/judge/failure_rate"
        )
    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 2.8 * len(panels)), sharex=True, squeeze=False)
    for axis, (title, keys) in zip(axes[:, 0], panels.items(), strict=True):
        for key in keys:
            steps, values = series(history, key)
            axis.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=_label(key))
        axis.set_title(title)
        axis.grid(alpha=0.3)
        if title == "schedule":
            axis.set_ylim(-0.05, 1.05)
        axis.legend(loc="best", fontsize="small", ncol=2 if len(keys) > 4 else 1)
    axes[-1, 0].set_xlabel("step")
    figure.suptitle(str(path.parent))
    figure.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return list(panels)
