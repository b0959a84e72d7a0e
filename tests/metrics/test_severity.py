"""Severity score: shipped terms, TF-IDF by hand, [0, 1] scaling and the correlations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from himed.clinical.severity import (
    average_ranks,
    default_terms,
    pearson,
    raw_severity,
    read_terms,
    severity_metrics,
    severity_scores,
    spearman,
)


def test_shipped_terms_load_and_include_multi_word_terms() -> None:
    terms = default_terms()
    assert ("severe",) in terms and ("mediastinal", "shift") in terms
    assert ("mild",) not in terms  # low-severity words are left out on purpose


def test_raw_severity_by_hand(tmp_path) -> None:
    terms = read_terms(_write(tmp_path, "# comment\nsevere\nfree air\n\n"))
    texts = ["Severe effusion.", "Free air under the diaphragm, severe.", "No acute process."]
    # df(severe) = 2, df(free air) = 1, N = 3; idf = ln(4 / (1 + df)) + 1.
    idf_severe, idf_free_air = math.log(4 / 3) + 1, math.log(4 / 2) + 1
    expected = [idf_severe / 2, (idf_free_air + idf_severe) / 6, 0.0]
    assert raw_severity(texts, terms) == pytest.approx(expected)
    scores = severity_scores(texts, terms)
    assert scores.min() == 0 and scores.max() == 1
    assert scores[0] == pytest.approx(expected[0] / max(expected))


def test_constant_severity_gives_zeros_and_no_correlation() -> None:
    assert list(severity_scores(["no acute process", "lungs are clear"])) == [0.0, 0.0]
    metrics = severity_metrics(["normal", "clear"], ["severe edema", "normal"])
    assert "severity_pearson" not in metrics and "severity_spearman" not in metrics
    assert metrics["severity_mean"] == 0.0 and metrics["severity_mean_reference"] == 0.5


def test_correlations_against_numpy() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.random(30), rng.random(30)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert list(average_ranks(np.array([3.0, 1.0, 3.0, 2.0]))) == [3.5, 1.0, 3.5, 2.0]
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([10, 20, 30, 400.0])) == pytest.approx(1.0)


def test_severe_predictions_follow_severe_references() -> None:
    predictions = ["Massive right pleural effusion with mediastinal shift.", "No acute process.", "Moderate edema."]
    references = ["Large right effusion, worsening, mediastinal shift.", "Normal chest.", "Moderate edema."]
    metrics = severity_metrics(predictions, references)
    assert metrics["severity_spearman"] > 0.4 and metrics["severity_pearson"] > 0.4


def _write(tmp_path, text: str):
    path = tmp_path / "terms.txt"
    path.write_text(text)
    return path
