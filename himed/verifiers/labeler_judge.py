"""``LabelerJudge``: the three STARD axes of HiMed-RL eq. 6 derived offline from CheXpert-style labels.

Not the paper's judge (an LLM, Qwen3-30B-A3B): an approximation that needs no GPU and no server, the default of the
CPU quickstart and the tests, and a real option for users without a GPU to spare for a judge. It sees only the
observations a labeler can name (``observations: all``, the 14 CheXbert ones, or ``five``), not their location or
severity, and cannot judge ordering, so it is blunter than an LLM judge on the relevance axis.

Both reports are labelled (``labeler: rules`` by default; ``chexbert`` with ``labeler_kwargs``). An observation is
*positive* when labelled 1, and when labelled -1 (uncertain) under ``uncertain: positive`` (the default, as in the
clinical reward); No Finding counts as a positive finding, so that "normal" vs "normal" agrees and "normal" vs
"cardiomegaly" does not. It is derived from the other labels under the same policy (positive when nothing but
Support Devices is positive), not read from the labeler. With P_c, P_r the candidate's and reference's positive sets:

- accuracy (hallucination and contradiction): ``1 - (|contradicted| + v) / (|mentioned by both| + 1)``, where an
  observation is contradicted when one report calls it positive and the other explicitly negative (0), and the
  ``+ 1`` is the study-level verdict, compared on every pair: a report is *normal* when nothing but Support Devices
  is positive in it (what No Finding means), and ``v = 1`` when one report is normal and the other is not. So a
  report that names no observation, or only claims a normal study ("No Finding", "no acute cardiopulmonary
  process"), scores 0 against a reference with positive findings: its silence or its normal claim contradicts
  them (and symmetrically a report with findings against a normal reference). Without the verdict the axis was
  vacuous, 1.0 for two reports with no observation in common, which handed a silent or template output 1 of 3
  points. No Finding itself is not compared as an observation (it is derived, never stated as a negative; the
  verdict is its comparison). docs/reward-hacking.md has the convention and the hacks it closes.
- relevance (no filler findings): precision ``|P_c & P_r| / |P_c|``; 1.0 when P_c is empty and P_r is too.
- completeness (no omissions): recall ``|P_c & P_r| / |P_r|``; 1.0 when P_r is empty.

With ``uncertain: ignore`` an observation uncertain on either side is left out of all three. A pair whose labels
cannot be computed (the labeler raised on it) is None, never 0.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from himed.clinical.labelers import LazyLabeler
from himed.clinical.observations import (
    CHEXBERT_OBSERVATIONS,
    NEGATIVE,
    NO_FINDING,
    POSITIVE,
    SUPPORT_DEVICES,
    UNCERTAIN,
    observation_set,
)
from himed.verifiers.base import Judge, JudgeScore, Pair, register_judge
from himed.verifiers.service import JudgeCounters

logger = logging.getLogger(__name__)

UNCERTAIN_POLICIES = ("positive", "negative", "ignore")
# Identity of the derivation below, recorded like an LLM judge's prompt hash; bump it when the formulas change.
LABELER_JUDGE_VERSION = "labeler-axes-v2"  # v2: the study-level verdict in accuracy


def axes_from_labels(
    candidate: Mapping[str, int],
    reference: Mapping[str, int],
    observations: Sequence[str] = CHEXBERT_OBSERVATIONS,
    uncertain: str = "positive",
) -> JudgeScore:
    """accuracy, relevance and completeness of two label dicts (module docstring)."""

    def positive(value: int | None) -> bool:
        return value == POSITIVE or (value == UNCERTAIN and uncertain == "positive")

    ignored = {
        name
        for name in observations
        if uncertain == "ignore" and UNCERTAIN in (candidate.get(name), reference.get(name))
    }
    compared = [name for name in observations if name != NO_FINDING and name not in ignored]

    def positives(labels: Mapping[str, int]) -> set[str]:
        found = {name for name in compared if positive(labels.get(name))}
        # No Finding is derived here rather than read, so that it follows the same uncertain policy (the
        # rule of docs/data.md is the uncertain: positive case).
        if NO_FINDING in observations and not found - {SUPPORT_DEVICES}:
            found.add(NO_FINDING)
        return found

    positives_c, positives_r = positives(candidate), positives(reference)
    # The study-level verdict (module docstring): compared on every pair, so the ratio is never vacuous.
    normal_c, normal_r = (not (found - {NO_FINDING, SUPPORT_DEVICES}) for found in (positives_c, positives_r))
    shared, contradicted = 1, int(normal_c != normal_r)
    for name in compared:
        c, r = candidate.get(name), reference.get(name)
        if c is not None and r is not None:
            shared += 1
            contradicted += (positive(c) and r == NEGATIVE) or (positive(r) and c == NEGATIVE)
    hits = len(positives_c & positives_r)
    accuracy = 1.0 - contradicted / shared
    relevance = hits / len(positives_c) if positives_c else (1.0 if not positives_r else 0.0)
    completeness = hits / len(positives_r) if positives_r else 1.0
    return JudgeScore(accuracy, relevance, completeness)


@register_judge("labeler")
class LabelerJudge(LazyLabeler, Judge):
    """Offline judge from CheXpert-style labels; see the module docstring."""

    def __init__(
        self,
        labeler: str = "rules",
        labeler_kwargs: Mapping[str, Any] | None = None,
        observations: str = "all",
        uncertain: str = "positive",
    ):
        self._set_labeler(labeler, labeler_kwargs, "labeler judge")
        self.observations = observation_set(observations, "labeler judge")
        if uncertain not in UNCERTAIN_POLICIES:
            raise ValueError(f"labeler judge: uncertain must be one of {UNCERTAIN_POLICIES}, got {uncertain!r}")
        self.observation_set = observations
        self.uncertain = uncertain
        self.prompt_hash = LABELER_JUDGE_VERSION
        self.counters = JudgeCounters()

    def _label(self, texts: list[str]) -> dict[str, dict[str, int] | None]:
        """Labels of each distinct text; a batch that fails is retried text by text so one bad text costs one."""
        try:
            return dict(zip(texts, self.labeler.label(texts), strict=True))
        except Exception as error:  # isolate the text that breaks the labeler
            logger.warning(
                "labeler %s failed on a batch of %d (%s); labelling one by one", self.labeler_name, len(texts), error
            )
        labels: dict[str, dict[str, int] | None] = {}
        for text in texts:
            try:
                labels[text] = self.labeler.label([text])[0]
            except Exception:
                labels[text] = None
        return labels

    def score_pairs(self, pairs: Sequence[Pair]) -> list[JudgeScore | None]:
        """The synchronous core of ``score_batch``: one labeler call for every distinct text of the batch."""
        self.counters.add("pairs", len(pairs))
        texts = list(dict.fromkeys(text for pair in pairs for text in pair))
        self.counters.add("calls")
        labels = self._label(texts)
        results: list[JudgeScore | None] = []
        for candidate, reference in pairs:
            if labels[candidate] is None or labels[reference] is None:
                self.counters.add("failures")
                self.counters.add("failures/labeler")
                results.append(None)
                continue
            results.append(axes_from_labels(labels[candidate], labels[reference], self.observations, self.uncertain))
            self.counters.add("scored")
        return results

    async def score_batch(self, pairs: Sequence[Pair]) -> list[JudgeScore | None]:
        pairs = [(candidate or "", reference or "") for candidate, reference in pairs]
        if not pairs:
            return []
        # In a worker thread: a CheXbert labeler runs a BERT forward pass, which must not block the event loop
        # that other async rewards (and TRL's tools) share.
        return await asyncio.to_thread(self.score_pairs, pairs)

    def score_batch_sync(self, pairs: Sequence[Pair]) -> list[JudgeScore | None]:
        # No event loop needed: the work is synchronous already.
        return self.score_pairs([(candidate or "", reference or "") for candidate, reference in pairs])

    def metrics(self) -> dict[str, float]:
        return self.counters.snapshot()

    def describe(self) -> dict[str, Any]:
        return {
            "judge/backend": self.backend,
            "judge/labeler": self.labeler_name,
            "judge/observations": self.observation_set,
            "judge/uncertain": self.uncertain,
            "judge/prompt_hash": self.prompt_hash,
            **self.metrics(),
        }

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_labeler"] = None
        return state

    def __repr__(self) -> str:
        return f"LabelerJudge(labeler={self.labeler_name!r}, observations={self.observation_set!r})"
