"""RadGraph F1 as a reward: entity and relation overlap between the completion and the reference report.

RadGraph (Jain et al. 2021; radgraph-xl by default) runs in the user's own Python environment through
``himed.clinical.radgraph.RadGraphBridge`` (docs/rewards.md: the published ``radgraph`` package needs
transformers < 5). The reward is one of the F1 levels of ``F1RadGraph(reward_level="all")``: ``simple`` (entities),
``partial`` (entities and relations, the level used as a reward in the RadGraph-reward literature; default) or
``complete``; all three are parts (``radgraph/simple``, ``radgraph/partial``, ``radgraph/complete``). A pair RadGraph
could not annotate is None (imputed by the composite, never 0); a dead or stalled worker turns the batch into None
and the bridge restarts it on the next call.

    - {name: radgraph, kwargs: {radgraph_python: ~/.radgraph/bin/python}}

``radgraph_python`` may also come from the environment variable ``HIMED_RADGRAPH_PYTHON``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from himed.data.sections import DEFAULT_SECTIONS, extract_lenient
from himed.rewards.base import Reward
from himed.rewards.registry import register_reward

RADGRAPH_LEVELS = ("simple", "partial", "complete")
PYTHON_VARIABLE = "HIMED_RADGRAPH_PYTHON"


@register_reward
class RadGraphReward(Reward):
    """RadGraph F1 of the completion against the reference, through the RadGraph bridge.

    The set-up and the levels: the module docstring.
    """

    name = "radgraph"
    level = "low"
    weight = 1.0
    parts = RADGRAPH_LEVELS

    def __init__(
        self,
        radgraph_python: str | None = None,
        model_type: str = "radgraph-xl",
        model_cache_dir: str | None = None,
        reward_level: str = "partial",
        timeout: float = 300.0,
        sections: Sequence[str] = DEFAULT_SECTIONS,
    ):
        super().__init__(sections)
        if reward_level not in RADGRAPH_LEVELS:
            raise ValueError(f"radgraph reward_level must be one of {RADGRAPH_LEVELS}, got {reward_level!r}")
        self.radgraph_python = radgraph_python or os.environ.get(PYTHON_VARIABLE)
        if not self.radgraph_python:
            raise ValueError(
                "the radgraph reward needs radgraph_python (or $HIMED_RADGRAPH_PYTHON): the Python of a separate "
                "environment with the radgraph package; see himed/clinical/radgraph.py for the one-line set-up"
            )
        self.model_type = model_type
        self.model_cache_dir = model_cache_dir
        self.reward_level = reward_level
        self.timeout = timeout

    def _bridge(self):
        from himed.clinical.radgraph import get_radgraph_bridge

        # One shared bridge per configuration and process: the model loads once, and the reward stays picklable.
        return get_radgraph_bridge(self.radgraph_python, self.model_type, self.model_cache_dir, timeout=self.timeout)

    def score(self, texts: list[str], references: list[str], **columns: Any) -> list[dict[str, float | None]]:
        candidates = [extract_lenient(text, self.sections) for text in texts]
        results = []
        for pair in self._bridge().score(candidates, references):
            if pair is None:
                results.append({"value": None, **dict.fromkeys(RADGRAPH_LEVELS)})
            else:
                parts = pair._asdict()
                results.append({"value": parts[self.reward_level], **parts})
        return results

    def describe(self) -> dict[str, Any]:
        return {"radgraph_model": self.model_type, "radgraph_reward_level": self.reward_level}
