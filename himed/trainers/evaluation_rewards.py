"""The training reward, measured on a stage's evaluation predictions.

After ``himed evaluate`` has written ``predictions.jsonl`` for a stage, the pipeline scores those predictions with
the reward block of a recipe (usually the GRPO stage's), against the evaluation split's references and labels, so
the comparison table shows what RL optimised next to the NLG and clinical metrics. The evaluation file is one group
for imputation (as in ``himed score``). The total is reported at both ends of the schedule, because the schedule
moves the weight from the low-level rewards (t = 0) to the semantic level (t = total_steps):
``reward_total_start``, ``reward_total_end``, plus ``reward/<name>`` (each component's mean) and
``reward/<name>/failure_rate``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from himed.data.sections import DEFAULT_SECTIONS, reference_text


def reward_block_from_recipe(path: str | Path) -> dict[str, Any]:
    """The reward block (schedule, rewards, impute) of a GRPO recipe YAML or a `himed score` config."""
    from himed.rewards.config import RewardsConfig

    raw = yaml.safe_load(Path(path).read_text()) or {}
    block = {key: raw[key] for key in RewardsConfig.YAML_KEYS if key in raw}
    if "rewards" not in block:
        raise ValueError(f"{path}: no 'rewards' block to score evaluation predictions with")
    return block


def score_predictions(
    predictions: Sequence[Mapping[str, Any]],
    rows_by_id: Mapping[str, Mapping[str, Any]],
    block: Mapping[str, Any],
    sections: Sequence[str] = DEFAULT_SECTIONS,
) -> dict[str, float]:
    """Component means, failure rates and the composite total at the schedule's start and end."""
    from himed.rewards.composite import build_reward_functions, effective_weights, failure_rates, impute, total
    from himed.rewards.config import RewardsConfig

    config = RewardsConfig.from_dict(block, where="evaluation rewards")
    components = build_reward_functions(config, sections=sections)
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
    completions = [p["prediction"] for p in predictions]
    matrix = np.array(
        [
            [
                np.nan if part.get("value") is None else float(part["value"])
                for part in c.score_completions(completions, **columns)
            ]
            for c in components
        ],
        dtype=np.float64,
    ).T
    summary: dict[str, float] = {}
    for component, rate in zip(components, failure_rates(matrix), strict=True):
        summary[f"reward/{component.name}/failure_rate"] = float(rate)
    filled = impute(matrix, group_size=len(completions), mode=config.impute)
    for index, component in enumerate(components):
        summary[f"reward/{component.name}"] = float(filled[:, index].mean())
    schedule = config.schedule.build()
    end = float(schedule.params().get("total_steps", 0) or 0)
    summary["reward_total_start"] = float(np.mean(total(filled, effective_weights(components, schedule, 0))))
    summary["reward_total_end"] = float(np.mean(total(filled, effective_weights(components, schedule, end))))
    return summary
