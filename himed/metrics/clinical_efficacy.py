"""Clinical efficacy (CE): precision, recall and F1 of the observations labelled in generated reports.

Variant implemented:

- Each report (prediction and reference) is labelled by a labeler (``himed.clinical.labelers``: ``rules`` by
  default, ``chexbert`` with its weights) into DESIGN.md labels ``{observation: 1|0|-1}``.
- Binarised per observation: positive (1) and uncertain (-1) count as positive; negative (0) and unmentioned count
  as negative. This is the convention of CheXpert's "U-Ones" and of several report-generation papers; others (e.g.
  R2GenCMN's ``compute_ce.py``) map uncertain to negative, which ``uncertain="negative"`` reproduces.
- Over the 14 CheXbert observations (No Finding included) and over the 5 common ones (Atelectasis,
  Cardiomegaly, Consolidation, Edema, Pleural Effusion).
- Micro: precision, recall and F1 from true/false positive and false negative counts summed over observations.
  Macro: the mean over observations of each observation's precision, recall and F1 (F1 per observation, then
  averaged, as scikit-learn's ``average="macro"``); an observation with no predicted positive has precision 0,
  with no reference positive (no support) recall 0, and F1 0 when both are 0 (``zero_division=0``). Observations
  without support are kept in the mean (DESIGN.md section 4), so macro numbers on a small test set are low.

Names: ``ce_{micro|macro}_{precision|recall|f1}_{14|5}`` (uncertain counted as ``--uncertain`` says, positive by
default) and, every time, the same names with the suffix ``_uneg``: uncertain counted negative, the convention of
LLaVA-Rad's default evaluation (its "+" mode counts it positive) and of MAIRA-2 (docs/evaluation.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from himed.clinical.observations import CHEXBERT_OBSERVATIONS, FIVE_OBSERVATIONS, NEGATIVE, POSITIVE, UNCERTAIN
from himed.metrics.families import FamilyResult, corpus_family

UNCERTAIN_POLICIES = ("positive", "negative")
OBSERVATION_GROUPS = {"14": CHEXBERT_OBSERVATIONS, "5": FIVE_OBSERVATIONS}
# ce_*_uneg: the same metrics with uncertain counted negative, reported beside ce_* every time.
UNCERTAIN_NEGATIVE_SUFFIX = "_uneg"


def binarize(
    labels: Sequence[Mapping[str, int]], observations: Sequence[str], uncertain: str = "positive"
) -> np.ndarray:
    """A (reports x observations) 0/1 matrix: 1 for positive, and for uncertain when ``uncertain="positive"``."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {', '.join(UNCERTAIN_POLICIES)}, got {uncertain!r}")
    positive_values = {POSITIVE, UNCERTAIN} if uncertain == "positive" else {POSITIVE}
    matrix = np.zeros((len(labels), len(observations)), dtype=np.int64)
    for i, report in enumerate(labels):
        for j, name in enumerate(observations):
            value = report.get(name)
            if value is not None and value not in (POSITIVE, NEGATIVE, UNCERTAIN):
                raise ValueError(f"report {i}: {name!r} has label {value!r}; expected 1, 0 or -1")
            matrix[i, j] = value in positive_values
    return matrix


def _ratio(numerator: np.ndarray | int, denominator: np.ndarray | int) -> np.ndarray:
    """numerator / denominator with 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    numerator, denominator = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)


def scores_from_counts(
    true_positive: np.ndarray, false_positive: np.ndarray, false_negative: np.ndarray
) -> dict[str, np.ndarray]:
    """Micro and macro precision, recall and F1 from per-observation counts (last axis: observations); any
    leading axes (resamples) are kept."""
    tp, fp, fn = true_positive.sum(axis=-1), false_positive.sum(axis=-1), false_negative.sum(axis=-1)
    micro_p, micro_r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    micro_f1 = _ratio(2 * micro_p * micro_r, micro_p + micro_r)

    per_p = _ratio(true_positive, true_positive + false_positive)
    per_r = _ratio(true_positive, true_positive + false_negative)
    per_f1 = _ratio(2 * per_p * per_r, per_p + per_r)
    return {
        "micro_precision": micro_p,
        "micro_recall": micro_r,
        "micro_f1": micro_f1,
        "macro_precision": per_p.mean(axis=-1),
        "macro_recall": per_r.mean(axis=-1),
        "macro_f1": per_f1.mean(axis=-1),
    }


def _outcomes(predicted: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per report and observation: true positive, false positive, false negative (0/1 matrices)."""
    if predicted.shape != reference.shape:
        raise ValueError(f"label matrices differ in shape: {predicted.shape} vs {reference.shape}")
    return predicted & reference, predicted & (1 - reference), (1 - predicted) & reference


def precision_recall_f1(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Micro and macro precision, recall and F1 of two 0/1 matrices of equal shape (reports x observations)."""
    outcomes = _outcomes(predicted, reference)
    return {name: float(value) for name, value in scores_from_counts(*(o.sum(axis=0) for o in outcomes)).items()}


def clinical_efficacy(
    predicted_labels: Sequence[Mapping[str, int]],
    reference_labels: Sequence[Mapping[str, int]],
    uncertain: str = "positive",
) -> dict[str, float]:
    """``ce_{micro|macro}_{precision|recall|f1}_{14|5}`` from per-report labels (see the module docstring)."""
    if len(predicted_labels) != len(reference_labels):
        raise ValueError(f"{len(predicted_labels)} predicted label sets for {len(reference_labels)} references")
    if not predicted_labels:
        raise ValueError("no reports to score")
    out: dict[str, float] = {}
    for suffix, observations in OBSERVATION_GROUPS.items():
        scores = precision_recall_f1(
            binarize(predicted_labels, observations, uncertain), binarize(reference_labels, observations, uncertain)
        )
        for name, value in scores.items():
            average, measure = name.split("_")
            out[f"ce_{average}_{measure}_{suffix}"] = value
    return out


def clinical_efficacy_family(
    predicted_labels: Sequence[Mapping[str, int]],
    reference_labels: Sequence[Mapping[str, int]],
    uncertain: str = "positive",
) -> FamilyResult:
    """``ce_*`` with ``uncertain`` counted as asked, and ``ce_*_uneg`` (uncertain counted negative) beside them.

    Per-sample statistics: each report's labels of the 14 observations (the uncertain convention is applied when
    the corpus values are computed), and the convention of the unsuffixed names.
    """
    metrics = clinical_efficacy(predicted_labels, reference_labels, uncertain=uncertain)
    metrics.update(
        {
            f"{name}{UNCERTAIN_NEGATIVE_SUFFIX}": value
            for name, value in clinical_efficacy(predicted_labels, reference_labels, uncertain="negative").items()
        }
    )
    stats = [
        {
            "predicted": {name: p[name] for name in CHEXBERT_OBSERVATIONS if p.get(name) is not None},
            "reference": {name: r[name] for name in CHEXBERT_OBSERVATIONS if r.get(name) is not None},
            "uncertain": uncertain,
        }
        for p, r in zip(predicted_labels, reference_labels, strict=True)
    ]
    return FamilyResult("ce", metrics, stats=stats)


@corpus_family("ce")
def clinical_efficacy_corpus(samples: Sequence[Mapping], metrics: Sequence[str], counts: np.ndarray) -> dict:
    """The ce_* metrics of each resample from the drawn reports' labels."""
    stats = [sample["stats"]["ce"] for sample in samples]
    predicted = [s["predicted"] for s in stats]
    reference = [s["reference"] for s in stats]
    computed: dict[str, np.ndarray] = {}
    for convention, suffix in ((stats[0]["uncertain"], ""), ("negative", UNCERTAIN_NEGATIVE_SUFFIX)):
        for group, observations in OBSERVATION_GROUPS.items():
            outcomes = _outcomes(
                binarize(predicted, observations, convention), binarize(reference, observations, convention)
            )
            summed = [counts @ outcome for outcome in outcomes]  # (B, observations) each
            for name, value in scores_from_counts(*summed).items():
                average, measure = name.split("_")
                computed[f"ce_{average}_{measure}_{group}{suffix}"] = value
    return {name: computed[name] for name in metrics}
