"""Bootstrap confidence intervals over studies, and the paired bootstrap test ``himed compare`` reports.

Intervals (``ci95`` in metrics.json): B resamples of the n studies with replacement, drawn from
``numpy.random.default_rng(seed)`` as one (B, n) index matrix; each resample is turned into how often each study
is drawn (a (B, n) count matrix), and every metric is recomputed on every resample by its family's corpus function
(:mod:`himed.metrics.families`) from the per-sample statistics: corpus metrics (BLEU, METEOR 1.5, CIDEr with its
document frequencies, clinical efficacy) as their definitions aggregate, never as a mean of per-sample scores. The
interval is the percentile interval, the 2.5th and 97.5th percentiles of the B values (numpy's linear
interpolation). Resamples on which a metric is undefined (NaN: a constant side of a correlation, no scored sample)
are left out and counted. A metric whose B values do not spread (low == high, e.g. ``format_rate`` 1 on every
resample) gets no interval; the reason is recorded instead.

Paired test (``himed compare``): for two runs over the same studies, the same B resamples of the shared ids are
applied to both runs, giving B differences d_b = m_run(b) - m_first(b) around the observed difference d. The
two-sided p-value is that of the centred bootstrap (Efron & Tibshirani 1993, section 16.4; the shift form used
for MT metrics by Koehn 2004): under the null hypothesis of no difference the distribution of d_b - d is that of
the differences, so p = (1 + #{b : |d_b - d| >= |d|}) / (B + 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from himed.metrics.families import CORPUS_FUNCTIONS

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
INTERVAL = (2.5, 97.5)


def _load_corpus_functions() -> None:
    """Import the modules that register the built-in families' corpus functions."""
    import himed.metrics.clinical_efficacy  # noqa: F401
    import himed.metrics.nlg_statistics  # noqa: F401
    import himed.metrics.rexrank  # noqa: F401  (reciprocal_mean: 1/RadCliQ-v1)


def resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """(B, n): how many times each of n studies is drawn in each of B resamples with replacement."""
    if n < 1:
        raise ValueError("the bootstrap needs at least one study")
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, n, size=(resamples, n))
    flat = (indices + n * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(float)


def corpus_values(
    samples: Sequence[Mapping[str, Any]], families: Mapping[str, Sequence[str]], counts: np.ndarray
) -> dict[str, np.ndarray]:
    """Every metric of ``families`` (family -> metric names) on each row of ``counts``: name -> (B,) values."""
    _load_corpus_functions()
    out: dict[str, np.ndarray] = {}
    for family, names in families.items():
        if not names:
            continue
        if family not in CORPUS_FUNCTIONS:
            raise ValueError(f"metric family {family!r} has no registered corpus function (himed.metrics.families)")
        out.update(CORPUS_FUNCTIONS[family](samples, list(names), counts))
    return out


def confidence_intervals(
    samples: Sequence[Mapping[str, Any]],
    families: Mapping[str, Sequence[str]],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """``ci95`` (name -> [low, high], low < high) and a config dict (method, resamples, seed, what was left out)."""
    if resamples < 1:
        raise ValueError(f"--bootstrap must be at least 1 resample (0 turns it off), got {resamples}")
    counts = resample_counts(len(samples), resamples, seed)
    values = corpus_values(samples, families, counts)
    ci95: dict[str, list[float]] = {}
    undefined_resamples: dict[str, int] = {}
    no_interval: dict[str, str] = {}
    for name, draws in values.items():
        defined = draws[~np.isnan(draws)]
        if len(defined) < len(draws):
            undefined_resamples[name] = int(len(draws) - len(defined))
        if not len(defined):
            no_interval[name] = "undefined on every resample"
            continue
        low, high = (float(v) for v in np.percentile(defined, INTERVAL))
        if not low < high:
            no_interval[name] = f"the same value ({low:.6g}) on every resample"
            continue
        ci95[name] = [low, high]
    info: dict[str, Any] = {
        "resamples": resamples,
        "seed": seed,
        "method": "percentile bootstrap over studies (2.5th, 97.5th percentiles); corpus metrics recomputed",
    }
    if undefined_resamples:
        info["undefined_resamples"] = undefined_resamples
    if no_interval:
        info["no_interval"] = no_interval
    return ci95, info


def paired_p_values(
    first: Sequence[Mapping[str, Any]],
    other: Sequence[Mapping[str, Any]],
    families: Mapping[str, Sequence[str]],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    first_values: dict[str, tuple[dict, dict]] | None = None,
) -> dict[str, float]:
    """Two-sided paired bootstrap p-value of ``other`` against ``first`` per metric (module docstring).

    ``first`` and ``other`` hold the samples.jsonl records of the same studies in the same order.
    ``first_values``: a dict in which ``first``'s recomputed values are kept and looked up (by metric families),
    for comparing several runs against one first run over the same studies.
    """
    if len(first) != len(other):
        raise ValueError(f"paired samples differ in length: {len(first)} vs {len(other)}")
    counts = resample_counts(len(first), resamples, seed)
    identity = np.ones((1, len(first)))
    key = repr(sorted((family, list(names)) for family, names in families.items()))
    if first_values is not None and key in first_values:
        observed_a, draws_a = first_values[key]
    else:
        observed_a, draws_a = corpus_values(first, families, identity), corpus_values(first, families, counts)
        if first_values is not None:
            first_values[key] = (observed_a, draws_a)
    observed_b, draws_b = corpus_values(other, families, identity), corpus_values(other, families, counts)
    out = {}
    for name in draws_a:
        observed = float(observed_b[name][0] - observed_a[name][0])
        differences = draws_b[name] - draws_a[name]
        differences = differences[~np.isnan(differences)]
        if np.isnan(observed) or not len(differences):
            continue
        extreme = np.abs(differences - observed) >= abs(observed)
        out[name] = float((1 + extreme.sum()) / (len(differences) + 1))
    return out
