"""Metric families: what each group of metrics contributes to an evaluation, and how its corpus values are recomputed.

A metric family is a group of metrics computed together (BLEU-1..4, clinical efficacy, ...). Scoring
(:mod:`himed.metrics.scoring`) collects one :class:`FamilyResult` per family: the corpus values (the point
estimates in metrics.json), the per-sample scores and the per-sample sufficient statistics (both written to
samples.jsonl). The bootstrap (:mod:`himed.metrics.bootstrap`) and ``himed compare`` then recompute every corpus
value on resamples of the studies with the family's *corpus function*, registered here under the family's name
with :func:`corpus_family`. A corpus function reads only the samples.jsonl records, so an evaluation and a later
``himed compare`` of its files go through the same arithmetic.

A new metric whose corpus value is the mean of a per-sample score (RaTEScore, GREEN, BERTScore, ...) needs no new
corpus function: return ``FamilyResult(family="mean", metrics={name: mean}, scores={name: per_sample})`` with
``None`` for a sample that could not be scored (left out of the mean, as it is of the point estimate).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# samples: the samples.jsonl records ({"id", "line", "scores": {...}, "stats": {family: ...}}) in resample order;
# metrics: the metric names the family reported; counts: (B, n) how often each study is drawn in each resample.
# Returns metric name -> (B,) corpus values (NaN where the metric is undefined on a resample).
CorpusFunction = Callable[[Sequence[Mapping[str, Any]], Sequence[str], np.ndarray], dict[str, np.ndarray]]

CORPUS_FUNCTIONS: dict[str, CorpusFunction] = {}


def corpus_family(name: str) -> Callable[[CorpusFunction], CorpusFunction]:
    """Register the corpus function of family ``name`` (a second registration of a name is an error)."""

    def register(function: CorpusFunction) -> CorpusFunction:
        if name in CORPUS_FUNCTIONS:
            raise ValueError(f"metric family {name!r} is already registered ({CORPUS_FUNCTIONS[name].__module__})")
        CORPUS_FUNCTIONS[name] = function
        return function

    return register


@dataclass
class FamilyResult:
    """What one metric family contributes to an evaluation of n studies.

    ``family``: the registered corpus function recomputing ``metrics`` on a resample (``"mean"`` for metrics that
    are the mean of their per-sample score). ``scores``: metric or score name -> n per-sample values (``None``: not
    scored). ``stats``: n JSON-serialisable per-sample sufficient statistics, written under
    ``stats[family]`` in samples.jsonl (``None`` when the scores suffice). ``config`` entries go to
    metrics.json's config; ``undefined``: metric -> why it is left out.
    """

    family: str
    metrics: dict[str, float]
    scores: dict[str, list[float | None]] = field(default_factory=dict)
    stats: list[Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    undefined: dict[str, str] = field(default_factory=dict)


def sample_scores(samples: Sequence[Mapping[str, Any]], name: str) -> np.ndarray:
    """Per-sample ``scores[name]`` as floats, NaN where the sample has none (not scored)."""
    values = [sample.get("scores", {}).get(name) for sample in samples]
    return np.array([np.nan if value is None else float(value) for value in values])


@corpus_family("mean")
def mean_corpus(samples: Sequence[Mapping[str, Any]], metrics: Sequence[str], counts: np.ndarray) -> dict:
    """Corpus value = mean of the per-sample scores over the scored samples of each resample."""
    out = {}
    for name in metrics:
        values = sample_scores(samples, name)
        scored = ~np.isnan(values)
        weights = counts[:, scored]
        total = weights.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(total > 0, weights @ values[scored] / total, np.nan)
    return out


def _weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of (B, n) ``x``, ``y`` with (B, n) weights; NaN where a side is constant."""
    total = weights.sum(axis=1, keepdims=True)
    dx = x - (weights * x).sum(axis=1, keepdims=True) / total
    dy = y - (weights * y).sum(axis=1, keepdims=True) / total
    numerator = (weights * dx * dy).sum(axis=1)
    denominator = np.sqrt((weights * dx * dx).sum(axis=1) * (weights * dy * dy).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _resample_ranks(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(B, n) average ranks of each study's value within each resample (its drawn copies tie with each other)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Studies with equal values form one tie group; a group's average rank in a resample is the number drawn
    # before it plus (its draws + 1) / 2.
    starts = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    group = np.cumsum(starts) - 1
    group_counts = np.zeros((counts.shape[0], group[-1] + 1))
    np.add.at(group_counts.T, group, counts[:, order].T)
    before = np.cumsum(group_counts, axis=1) - group_counts
    group_ranks = before + (group_counts + 1) / 2
    ranks = np.empty_like(counts, dtype=float)
    ranks[:, order] = group_ranks[:, group]
    return ranks


@corpus_family("correlation")
def correlation_corpus(samples: Sequence[Mapping[str, Any]], metrics: Sequence[str], counts: np.ndarray) -> dict:
    """``<x>_pearson`` / ``<x>_spearman``: the correlation of ``scores[<x>_mean]`` with ``scores[<x>_mean_reference]``
    over each resample (a study drawn k times counts k times; Spearman ranks within the resample)."""
    out = {}
    for name in metrics:
        base, kind = name.rsplit("_", 1)
        x, y = sample_scores(samples, f"{base}_mean"), sample_scores(samples, f"{base}_mean_reference")
        if kind == "pearson":
            xs, ys = np.broadcast_to(x, counts.shape), np.broadcast_to(y, counts.shape)
        elif kind == "spearman":
            xs, ys = _resample_ranks(x, counts), _resample_ranks(y, counts)
        else:
            raise ValueError(f"correlation family: {name!r} is neither *_pearson nor *_spearman")
        out[name] = _weighted_pearson(xs, ys, counts)
    return out
