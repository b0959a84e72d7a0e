"""The training reward, measured on a stage's evaluation predictions (``docs/architecture.md``).

After ``himed evaluate`` has written ``predictions.jsonl`` for a stage, the pipeline scores those predictions with
the reward block of a recipe (usually the GRPO stage's, with that recipe's ``sections``), against the evaluation
split's references and labels, so the comparison table shows what RL optimised next to the NLG and clinical
metrics. The evaluation file is one group for imputation (as in ``himed score``). The total is reported at both ends
of the schedule, because the schedule moves the weight from the low-level rewards (t = 0) to the semantic level (the
schedule's end step): ``reward_total_start``, ``reward_total_end``, plus ``reward/<name>`` (each component's mean)
and ``reward/<name>/failure_rate``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from himed.data.sections import DEFAULT_SECTIONS, reference_text
from himed.rewards.composite import CompositeReward
from himed.rewards.config import RewardsConfig


def _read_recipe(path: str | Path) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text()) or {}


def reward_block_from_recipe(path: str | Path) -> dict[str, Any]:
    """The reward block (schedule, rewards, impute) of a GRPO recipe YAML or a `himed score` config."""
    raw = _read_recipe(path)
    block = {key: raw[key] for key in RewardsConfig.YAML_KEYS if key in raw}
    if "rewards" not in block:
        raise ValueError(f"{path}: no 'rewards' block to score evaluation predictions with")
    return block


def reward_from_recipe(path: str | Path) -> CompositeReward:
    """The composite of a recipe's reward block, built with the recipe's ``sections`` (default: all three)."""
    sections = _read_recipe(path).get("sections", DEFAULT_SECTIONS)
    return CompositeReward.from_config(reward_block_from_recipe(path), sections=sections, where=str(path))


def score_predictions(
    predictions: Sequence[Mapping[str, Any]],
    rows_by_id: Mapping[str, Mapping[str, Any]],
    reward: CompositeReward | Mapping[str, Any],
    sections: Sequence[str] = DEFAULT_SECTIONS,
) -> dict[str, float]:
    """Component means, failure rates and the composite total at the schedule's start and end.

    ``reward``: a built composite, or a reward block (then built with ``sections``).
    """
    if not isinstance(reward, CompositeReward):
        reward = CompositeReward.from_config(reward, sections=sections, where="evaluation rewards")
    missing = [p["id"] for p in predictions if p.get("id") not in rows_by_id]
    if missing:
        raise ValueError(f"{len(missing)} predictions have no row in the evaluation data, e.g. {missing[:3]}")
    rows = [rows_by_id[p["id"]] for p in predictions]
    columns = {
        "id": [str(row["id"]) for row in rows],
        "reference": [reference_text(row["findings"], row.get("impression", "")) for row in rows],
        "findings": [row["findings"] for row in rows],
        "impression": [row.get("impression", "") or "" for row in rows],
        "labels": [json.dumps(row.get("labels") or {}, sort_keys=True) for row in rows],
    }
    _, matrix = reward.score([p["prediction"] for p in predictions], **columns)
    summary = {f"reward/{name}/failure_rate": rate for name, rate in reward.failure_rates(matrix).items()}
    filled = reward.impute(matrix, group_size=len(predictions))
    for index, name in enumerate(reward.names):
        summary[f"reward/{name}"] = float(filled[:, index].mean())
    summary["reward_total_start"] = float(np.mean(reward.totals(filled, 0)))
    summary["reward_total_end"] = float(np.mean(reward.totals(filled, reward.end_step)))
    return summary
