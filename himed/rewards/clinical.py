"""The clinical reward: CheXpert-label agreement between a completion and its reference (docs/rewards.md).

Not one of the paper's equations: a clinical-efficacy signal at the low level, computed like the CE metrics of
report-generation papers but per completion.

- Candidate labels: the labeler (``labeler: rules`` by default, ``chexbert`` with its kwargs) run on the lenient
  extraction of the completion (docs/data.md).
- Reference labels: ``reference_labels: report`` labels the reference text with the same labeler;
  ``reference_labels: row`` uses the row's ``labels`` column (a dict, its JSON text, or an Arrow struct dict with
  None for unmentioned observations), and labels the reference text for a row whose labels are missing or empty
  (counted in ``describe()["reference_label_fallbacks"]``). A row whose labels are invalid is scored None.
- Binary view, per observation of ``observations`` (``five``: Atelectasis, Cardiomegaly, Consolidation, Edema,
  Pleural Effusion; ``all``: the 14 CheXbert observations, No Finding included): positive when labelled 1, and when
  labelled -1 (uncertain) with ``uncertain: positive`` (the default); otherwise not positive (negative or not
  mentioned). ``uncertain: negative`` reads -1 as not positive; ``uncertain: ignore`` leaves an observation out of
  the comparison for a pair where either side is uncertain.
- ``accuracy``: the fraction of compared observations on which the two agree (positive vs not). None when
  ``uncertain: ignore`` leaves nothing to compare.
- ``f1``: ``2 |P_c & P_r| / (|P_c| + |P_r|)`` over the positive sets; 1.0 when neither side has a positive
  observation (0/0: both reports agree that nothing is present), 0.0 when exactly one side has positives.
- ``value`` is the metric chosen by ``metric``; parts ``accuracy`` and ``f1`` are both reported.

Note that agreement on negatives counts under ``accuracy``: an empty or uninformative candidate scores well against
a normal reference. The format and token rewards, and ``metric: f1``, do not share that blind spot.

The whole batch is labelled in one labeler call, with identical texts labelled once (a GRPO group shares its
reference), so a CheXbert labeler sees one batch per step.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from himed.clinical.observations import POSITIVE, UNCERTAIN, normalize_labels, observation_set
from himed.data.sections import DEFAULT_SECTIONS, extract_lenient, validate_sections
from himed.rewards.base import LabelerReward
from himed.rewards.registry import register_reward

logger = logging.getLogger(__name__)

METRICS = ("accuracy", "f1")
UNCERTAIN_POLICIES = ("positive", "negative", "ignore")
REFERENCE_LABEL_SOURCES = ("report", "row")


def _choice(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"clinical reward: {what} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def label_agreement(
    candidate: Mapping[str, int],
    reference: Mapping[str, int],
    observations: Sequence[str],
    uncertain: str = "positive",
) -> dict[str, float | None]:
    """``{"accuracy": ..., "f1": ...}`` of two label dicts in the binary view of the module docstring."""
    compared, tp, n_candidate, n_reference, agree = 0, 0, 0, 0, 0
    for name in observations:
        c, r = candidate.get(name), reference.get(name)
        if uncertain == "ignore" and UNCERTAIN in (c, r):
            continue
        c_pos = c == POSITIVE or (c == UNCERTAIN and uncertain == "positive")
        r_pos = r == POSITIVE or (r == UNCERTAIN and uncertain == "positive")
        compared += 1
        agree += c_pos == r_pos
        tp += c_pos and r_pos
        n_candidate += c_pos
        n_reference += r_pos
    accuracy = agree / compared if compared else None
    # 0/0: neither report names a positive observation, which is agreement.
    f1 = 2 * tp / (n_candidate + n_reference) if n_candidate + n_reference else 1.0
    return {"accuracy": accuracy, "f1": f1}


@register_reward
class ClinicalReward(LabelerReward):
    """CheXpert-label agreement (accuracy or F1) between the completion and the reference.

    Every option: the module docstring.
    """

    name = "clinical"
    level = "low"
    weight = 1.0
    parts = ("accuracy", "f1")

    def __init__(
        self,
        labeler: str = "rules",
        labeler_kwargs: Mapping[str, Any] | None = None,
        metric: str = "accuracy",
        observations: str = "five",
        uncertain: str = "positive",
        reference_labels: str = "report",
        sections: Sequence[str] = DEFAULT_SECTIONS,
    ):
        super().__init__(sections=validate_sections(sections))
        self._set_labeler(labeler, labeler_kwargs, "clinical reward")
        self.metric = _choice(metric, METRICS, "metric")
        self.observations = observation_set(observations, "clinical reward")
        self.observation_set = observations
        self.uncertain = _choice(uncertain, UNCERTAIN_POLICIES, "uncertain")
        self.reference_labels = _choice(reference_labels, REFERENCE_LABEL_SOURCES, "reference_labels")
        _ = self.labeler  # fail at start-up on a bad labeler config (e.g. a missing CheXbert checkpoint), not per step
        self.counters = {"scored": 0, "reference_label_fallbacks": 0, "bad_row_labels": 0}

    def _reference_labels(self, references: list[str], columns: dict[str, Any]) -> list[dict[str, int] | str | None]:
        """Per row: a labels dict from the row, the reference text to label, or None (invalid row labels)."""
        if self.reference_labels == "report":
            return list(references)
        rows = columns.get("labels")
        if rows is None:
            rows = [None] * len(references)
        if len(rows) != len(references):
            raise ValueError(f"{len(rows)} 'labels' values for {len(references)} completions")
        out: list[dict[str, int] | str | None] = []
        for i, raw in enumerate(rows):
            try:
                labels = normalize_labels(raw, where=f"labels of row {i}")
            except ValueError as error:
                self.counters["bad_row_labels"] += 1
                if "bad_row_labels" not in self._logged_errors:
                    self._logged_errors.add("bad_row_labels")
                    logger.warning("clinical reward %s: %s; such rows are scored None", self.__name__, error)
                out.append(None)
                continue
            if labels:
                out.append(labels)
            else:
                self.counters["reference_label_fallbacks"] += 1
                out.append(references[i])
        return out

    def score(self, texts: list[str], references: list[str], **columns: Any) -> list[dict[str, float | None]]:
        candidates = [extract_lenient(text, self.sections) for text in texts]
        reference_sources = self._reference_labels(references, columns)
        # One labeler call for the batch; identical texts (a group's shared reference) are labelled once.
        to_label = list(dict.fromkeys(candidates + [s for s in reference_sources if isinstance(s, str) and s.strip()]))
        labelled = dict(zip(to_label, self.labeler.label(to_label), strict=True))
        results = []
        for candidate, source in zip(candidates, reference_sources, strict=True):
            if source is None or (isinstance(source, str) and not source.strip()):
                results.append({"value": None, "accuracy": None, "f1": None})  # nothing to compare against
                continue
            reference = labelled[source] if isinstance(source, str) else source
            parts = label_agreement(labelled[candidate], reference, self.observations, self.uncertain)
            results.append({"value": parts[self.metric], **parts})
            self.counters["scored"] += 1
        return results

    def describe(self) -> dict[str, Any]:
        return {
            "labeler": self.labeler_name,
            "metric": self.metric,
            "observations": self.observation_set,
            "uncertain": self.uncertain,
            "reference_labels": self.reference_labels,
            **self.counters,
        }
