"""Shared helpers of the metrics tests: synthetic prediction lines with a controllable quality."""

from __future__ import annotations

import random

import pytest

from himed.metrics.predictions import PredictionLine

SENTENCES = [
    "The heart is normal in size.",
    "Mild cardiomegaly.",
    "There is a small left pleural effusion.",
    "No pleural effusion or pneumothorax.",
    "The lungs are clear.",
    "Right lower lobe consolidation concerning for pneumonia.",
    "Possible mild pulmonary edema.",
    "Bibasilar atelectasis.",
    "No acute cardiopulmonary process.",
    "The mediastinum is unremarkable.",
    "Severe pulmonary edema, worsening.",
    "A right internal jugular catheter tip is in the SVC.",
]


def make_synthetic_lines(n: int, seed: int, keep: float = 0.6) -> list[PredictionLine]:
    """Reference reports of 2-5 sentences; predictions keep a sentence with probability ``keep``, else swap or drop
    it; every fifth prediction is in the tagged format."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        reference = rng.sample(SENTENCES, rng.randint(2, 5))
        predicted = []
        for sentence in reference:
            roll = rng.random()
            if roll < keep:
                predicted.append(sentence)
            elif roll < keep + (1 - keep) / 2:
                predicted.append(rng.choice(SENTENCES))
        text = " ".join(predicted) or rng.choice(SENTENCES)
        if i % 5 == 0:
            text = f"<think>x</think><finding>{text}</finding><impression>{rng.choice(SENTENCES)}</impression>"
        lines.append(PredictionLine(i + 1, f"s{i}", text, " ".join(reference)))
    return lines


@pytest.fixture(scope="session")
def synthetic_lines():
    """:func:`make_synthetic_lines`, for tests (and module fixtures) that build their own sets."""
    return make_synthetic_lines
