"""Report severity score, after MediVLM: the TF-IDF mass of severity terms in a report, scaled to [0, 1].

Variant implemented (MediVLM describes the score but ships no code; these are our choices, each a constant here):

- Terms: ``himed/clinical/data/severity_terms.txt`` (documented in the file), matched as runs of report
  tokens (lowercase ASCII runs ``[a-z0-9]+``); a multi-word term ("mediastinal shift", "free air") counts as one
  occurrence, and its words count again when they are terms themselves.
- Corpus: the reports being evaluated, i.e. the predictions and their references pooled, so both sides are scored
  on one scale (an IDF fitted on the predictions alone would shift with the model being evaluated).
- ``tf(t, d) = count(t, d) / len(d)`` (occurrences over the report's token count, so a long report does not look
  severe by length alone); ``idf(t) = ln((1 + N) / (1 + df(t))) + 1`` (scikit-learn's smoothed IDF: positive even
  for a term in every report); ``raw(d) = sum over terms of tf * idf``.
- ``severity(d) = (raw(d) - min raw) / (max raw - min raw)`` over the pooled reports; all zeros when every report
  has the same raw score.

Evaluation reports the predictions' mean (``severity_mean``), the references' mean, and Pearson and Spearman
correlations between a prediction's severity and its reference's (omitted when either side is constant).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from himed.data.report_tokens import tokenize


def read_terms(path: str | Path | None = None) -> tuple[tuple[str, ...], ...]:
    """Severity terms as token tuples from ``path`` (default: the shipped list); '#' lines and blanks skipped."""
    if path is None:
        text = resources.files("himed.clinical").joinpath("data/severity_terms.txt").read_text(encoding="utf-8")
        where = "severity_terms.txt"
    else:
        text = Path(path).read_text(encoding="utf-8")
        where = str(path)
    terms: list[tuple[str, ...]] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tokens = tokenize(line)
        if not tokens:
            raise ValueError(f"{where}: line {number}: term {line!r} has no [a-z0-9] token")
        terms.append(tokens)
    if not terms:
        raise ValueError(f"{where}: no severity terms")
    return tuple(dict.fromkeys(terms))


@lru_cache(maxsize=4)
def default_terms() -> tuple[tuple[str, ...], ...]:
    return read_terms()


def _term_counts(tokens: tuple[str, ...], terms: Sequence[tuple[str, ...]], max_n: int) -> Counter:
    wanted = set(terms)
    counts: Counter = Counter()
    for n in range(1, max_n + 1):
        for i in range(len(tokens) - n + 1):
            gram = tokens[i : i + n]
            if gram in wanted:
                counts[gram] += 1
    return counts


def raw_severity(texts: Sequence[str], terms: Sequence[tuple[str, ...]] | None = None) -> np.ndarray:
    """Unscaled severity of each text: the sum of its severity terms' TF-IDF, IDF fitted on ``texts``."""
    terms = default_terms() if terms is None else tuple(terms)
    max_n = max(len(term) for term in terms)
    tokenized = [tokenize(text) for text in texts]
    counts = [_term_counts(tokens, terms, max_n) for tokens in tokenized]
    document_frequency: Counter = Counter()
    for count in counts:
        document_frequency.update(count.keys())
    n_docs = len(texts)
    idf = {term: math.log((1 + n_docs) / (1 + document_frequency[term])) + 1 for term in document_frequency}
    return np.array(
        [
            sum(c * idf[term] for term, c in count.items()) / len(tokens) if tokens else 0.0
            for tokens, count in zip(tokenized, counts, strict=True)
        ]
    )


def severity_scores(texts: Sequence[str], terms: Sequence[tuple[str, ...]] | None = None) -> np.ndarray:
    """Severity of each text in [0, 1], min-max scaled over ``texts`` (see the module docstring)."""
    raw = raw_severity(texts, terms)
    if raw.size == 0:
        return raw
    low, high = raw.min(), raw.max()
    if high == low:
        return np.zeros_like(raw)
    return (raw - low) / (high - low)


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation, None when either side is constant (the correlation is undefined)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if len(x) < 2 or denominator == 0:
        return None
    return float(dx @ dy) / denominator


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (what Spearman's rho uses)."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rho (Pearson on average ranks), None when either side is constant."""
    return pearson(average_ranks(x), average_ranks(y))


def severity_metrics(
    predictions: Sequence[str], references: Sequence[str], terms: Sequence[tuple[str, ...]] | None = None
) -> dict[str, float]:
    """``severity_mean`` (predictions), ``severity_mean_reference``, ``severity_pearson``, ``severity_spearman``.

    Correlations are left out when undefined (a constant side), never reported as 0.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("no reports to score")
    scores = severity_scores([*predictions, *references], terms)
    predicted, reference = scores[: len(predictions)], scores[len(predictions) :]
    out = {"severity_mean": float(predicted.mean()), "severity_mean_reference": float(reference.mean())}
    for name, value in (
        ("severity_pearson", pearson(predicted, reference)),
        ("severity_spearman", spearman(predicted, reference)),
    ):
        if value is not None:
            out[name] = value
    return out
