"""Clinical efficacy against a hand computation on a small label matrix."""

from __future__ import annotations

import numpy as np
import pytest

from himed.clinical.observations import CHEXBERT_OBSERVATIONS
from himed.metrics.clinical_efficacy import binarize, clinical_efficacy, clinical_efficacy_family, precision_recall_f1

# Five reports; observations by name. Uncertain (-1) counts as positive.
PREDICTED = [
    {"Cardiomegaly": 1, "Edema": -1},
    {"Cardiomegaly": 0, "Pleural Effusion": 1},
    {"No Finding": 1},
    {"Atelectasis": 1, "Pleural Effusion": 1},
    {"Pneumothorax": 1},
]
REFERENCE = [
    {"Cardiomegaly": 1},
    {"Cardiomegaly": 1, "Pleural Effusion": -1},
    {"No Finding": 1},
    {"Atelectasis": 0, "Pleural Effusion": 1, "Edema": 1},
    {"No Finding": 1},
]
# Per observation (TP, FP, FN) by hand:
#   Cardiomegaly:      report 1 TP, report 2 FN             -> (1, 0, 1)
#   Edema:             report 1 FP (uncertain), report 4 FN  -> (0, 1, 1)
#   Pleural Effusion:  report 2 TP (ref uncertain), 4 TP     -> (2, 0, 0)
#   Atelectasis:       report 4 FP                           -> (0, 1, 0)
#   No Finding:        report 3 TP, report 5 FN              -> (1, 0, 1)
#   Pneumothorax:      report 5 FP                           -> (0, 1, 0)
#   Consolidation and the 7 others: nothing                  -> (0, 0, 0)
# 14: TP 4, FP 3, FN 3 -> micro P = R = F1 = 4/7.
# 5 (Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion): TP 3, FP 2, FN 2 -> micro 3/5.


def test_micro_and_macro_by_hand() -> None:
    scores = clinical_efficacy(PREDICTED, REFERENCE)
    assert scores["ce_micro_precision_14"] == pytest.approx(4 / 7)
    assert scores["ce_micro_recall_14"] == pytest.approx(4 / 7)
    assert scores["ce_micro_f1_14"] == pytest.approx(4 / 7)
    assert scores["ce_micro_precision_5"] == pytest.approx(3 / 5)
    assert scores["ce_micro_recall_5"] == pytest.approx(3 / 5)
    # Macro over 14: precision 1 (Cardiomegaly) + 1 (Effusion) + 1 (No Finding), recall 1/2 + 1 + 1/2,
    # F1 2/3 + 1 + 2/3; every other observation contributes 0 (no support counts as 0).
    assert scores["ce_macro_precision_14"] == pytest.approx(3 / 14)
    assert scores["ce_macro_recall_14"] == pytest.approx(2 / 14)
    assert scores["ce_macro_f1_14"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 14)
    # Macro over 5: Cardiomegaly P 1 R 1/2 F1 2/3; Effusion 1, 1, 1; Atelectasis, Edema, Consolidation 0.
    assert scores["ce_macro_precision_5"] == pytest.approx(2 / 5)
    assert scores["ce_macro_recall_5"] == pytest.approx(1.5 / 5)
    assert scores["ce_macro_f1_5"] == pytest.approx((2 / 3 + 1) / 5)


def test_uncertain_as_negative_changes_the_counts() -> None:
    scores = clinical_efficacy(PREDICTED, REFERENCE, uncertain="negative")
    # Edema's FP (uncertain prediction) disappears and Effusion's TP in report 2 (uncertain reference) becomes an
    # FP: TP 3, FP 3, FN 3 over 14.
    assert scores["ce_micro_precision_14"] == pytest.approx(3 / 6)
    assert scores["ce_micro_recall_14"] == pytest.approx(3 / 6)


def test_both_conventions_are_reported_every_time_by_hand() -> None:
    """ce_* counts uncertain positive (the default), ce_*_uneg counts it negative; hand counts of the same set.

    Uncertain as negative, per observation (TP, FP, FN): Cardiomegaly (1, 0, 1); Edema (0, 0, 1), report 1's
    uncertain prediction no longer a positive; Pleural Effusion (1, 1, 0), report 2's uncertain reference now
    negative so its positive prediction is a false positive; Atelectasis (0, 1, 0); No Finding (1, 0, 1);
    Pneumothorax (0, 1, 0). 14: TP 3, FP 3, FN 3. 5: TP 2 (Cardiomegaly, Effusion), FP 2 (Effusion,
    Atelectasis), FN 2 (Cardiomegaly, Edema).
    """
    family = clinical_efficacy_family(PREDICTED, REFERENCE)
    scores = family.metrics
    assert family.family == "ce"
    # Uncertain positive: the hand counts of test_micro_and_macro_by_hand.
    assert scores["ce_micro_f1_14"] == pytest.approx(4 / 7)
    assert scores["ce_macro_precision_14"] == pytest.approx(3 / 14)
    assert scores["ce_micro_precision_5"] == pytest.approx(3 / 5)
    # Uncertain negative.
    assert scores["ce_micro_precision_14_uneg"] == pytest.approx(3 / 6)
    assert scores["ce_micro_recall_14_uneg"] == pytest.approx(3 / 6)
    assert scores["ce_micro_f1_14_uneg"] == pytest.approx(3 / 6)
    assert scores["ce_micro_precision_5_uneg"] == pytest.approx(2 / 4)
    assert scores["ce_micro_recall_5_uneg"] == pytest.approx(2 / 4)
    # Macro over 14: precision Cardiomegaly 1, Effusion 1/2, No Finding 1; recall 1/2, 1, 1/2; F1 2/3 each.
    assert scores["ce_macro_precision_14_uneg"] == pytest.approx(2.5 / 14)
    assert scores["ce_macro_recall_14_uneg"] == pytest.approx(2 / 14)
    assert scores["ce_macro_f1_14_uneg"] == pytest.approx(2 / 14)
    # Macro over 5: Cardiomegaly P 1 R 1/2, Effusion P 1/2 R 1, each F1 2/3; Atelectasis, Edema, Consolidation 0.
    assert scores["ce_macro_precision_5_uneg"] == pytest.approx(1.5 / 5)
    assert scores["ce_macro_recall_5_uneg"] == pytest.approx(1.5 / 5)
    assert scores["ce_macro_f1_5_uneg"] == pytest.approx((4 / 3) / 5)
    assert len(scores) == 24
    # Asked to count uncertain negative, the unsuffixed names follow; _uneg stays what it says.
    negative = clinical_efficacy_family(PREDICTED, REFERENCE, uncertain="negative").metrics
    assert negative["ce_micro_f1_14"] == pytest.approx(3 / 6) == negative["ce_micro_f1_14_uneg"]


def test_matches_a_naive_loop_on_random_matrices() -> None:
    rng = np.random.default_rng(0)
    predicted, reference = rng.integers(0, 2, (40, 14)), rng.integers(0, 2, (40, 14))
    reference[:, 3] = 0  # one observation without support
    scores = precision_recall_f1(predicted, reference)
    per = []
    for j in range(14):
        tp = sum(p and r for p, r in zip(predicted[:, j], reference[:, j], strict=True))
        fp = sum(p and not r for p, r in zip(predicted[:, j], reference[:, j], strict=True))
        fn = sum(r and not p for p, r in zip(predicted[:, j], reference[:, j], strict=True))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        per.append((p, r, 2 * p * r / (p + r) if p + r else 0.0))
    assert scores["macro_precision"] == pytest.approx(np.mean([x[0] for x in per]))
    assert scores["macro_recall"] == pytest.approx(np.mean([x[1] for x in per]))
    assert scores["macro_f1"] == pytest.approx(np.mean([x[2] for x in per]))


def test_binarize_rejects_bad_labels_and_policies() -> None:
    assert binarize([{"Edema": -1}], CHEXBERT_OBSERVATIONS).sum() == 1
    with pytest.raises(ValueError, match="report 0"):
        binarize([{"Edema": 2}], CHEXBERT_OBSERVATIONS)
    with pytest.raises(ValueError, match="uncertain"):
        binarize([{}], CHEXBERT_OBSERVATIONS, uncertain="maybe")
    with pytest.raises(ValueError, match="no reports"):
        clinical_efficacy([], [])
