"""The consistency reward (beyond the paper): does the impression contradict the findings?

The completion is parsed strictly (docs/data.md) and its finding and impression sections are labelled
separately by the labeler (``labeler: rules`` by default). A *clash* is an observation labelled positive (1) in one
section and negative (0) in the other. Uncertain (-1) against either is hedging, not a clash; an observation that
one section does not mention is not a clash either (an impression summarises and may leave findings out). No Finding
is never labelled 0, so it cannot clash; it is left out of the observations compared.

    value = 1 / (1 + clashes)        (1 with no clash, 0.5 with one, 0.33 with two, ...; in (0, 1])

Why not ``1 - clashes / shared``: a ratio over the observations mentioned in both sections could be diluted by
padding the impression with agreeing negatives; the count cannot.

When the strict parse fails there are no sections to compare and the value is None ("could not score"), imputed
like any failure (the group's mean by default), so a format failure is not punished twice: the format reward
already gives it -1. The logged failure rate of this reward is therefore about the format failure rate.

Parts: ``clashes`` and ``shared`` (observations with a definite 1/0 label in both sections). Registered ``low``
with weight 0.5 (docs/rewards.md): a secondary signal next to the paper's rewards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from himed.clinical.consistency import clash_observations, count_clashes
from himed.data.sections import DEFAULT_SECTIONS, completion_text, parse_strict, validate_sections
from himed.rewards.base import LabelerReward
from himed.rewards.registry import register_reward


@register_reward
class ConsistencyReward(LabelerReward):
    """1 / (1 + clashes), counting observations labelled differently in the finding and impression sections.

    The exact definition: the module docstring.
    """

    name = "consistency"
    level = "low"
    weight = 0.5
    parts = ("clashes", "shared")
    # None here means "no sections to compare" (a format failure, already scored by the format reward), not a failure
    # of this reward: the GRPO circuit breaker does not watch it (himed.trainers.circuit_breaker).
    none_is_failure = False

    def __init__(
        self,
        labeler: str = "rules",
        labeler_kwargs: Mapping[str, Any] | None = None,
        observations: str = "all",
        sections: Sequence[str] = DEFAULT_SECTIONS,
    ):
        sections = validate_sections(sections)
        if "impression" not in sections:
            raise ValueError(
                f"consistency reward compares the finding and impression sections, but sections are {list(sections)}; "
                "drop it for findings-only data"
            )
        super().__init__(sections=sections)
        self._set_labeler(labeler, labeler_kwargs, "consistency reward")
        self.observations = clash_observations(observations, "consistency reward")
        self.observation_set = observations
        _ = self.labeler  # fail at start-up on a bad labeler config (e.g. a missing CheXbert checkpoint), not per step
        self.counters = {"scored": 0, "unparsed": 0, "with_clash": 0}

    def score(self, texts: list[str], references: list[str], **columns: Any) -> list[dict[str, float | None]]:
        parsed = [parse_strict(text, self.sections) for text in texts]
        to_label = list(dict.fromkeys(s for p in parsed if p is not None for s in (p["finding"], p["impression"])))
        labelled = dict(zip(to_label, self.labeler.label(to_label), strict=True)) if to_label else {}
        results = []
        for sections in parsed:
            if sections is None:
                self.counters["unparsed"] += 1
                results.append({"value": None, "clashes": None, "shared": None})
                continue
            clashes, shared = count_clashes(
                labelled[sections["finding"]], labelled[sections["impression"]], self.observations
            )
            self.counters["scored"] += 1
            self.counters["with_clash"] += clashes > 0
            results.append({"value": 1.0 / (1.0 + clashes), "clashes": float(clashes), "shared": float(shared)})
        return results

    def score_completions(self, completions: Sequence, **columns: Any) -> list[dict[str, float | None]]:
        # The reference is not used: score rows that have none, and keep the base class's never-raise promise.
        texts = [completion_text(c) for c in completions]
        try:
            return self.score(texts, [], **columns)
        except Exception:
            return super().score_completions(completions, **columns)

    def describe(self) -> dict[str, Any]:
        return {"labeler": self.labeler_name, "observations": self.observation_set, **self.counters}
