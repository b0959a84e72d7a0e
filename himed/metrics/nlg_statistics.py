"""Per-sample sufficient statistics of the corpus NLG metrics, and the corpus values recomputed from them.

BLEU, METEOR 1.5 and CIDEr are corpus metrics: their corpus number is not the mean of per-pair scores, so a
bootstrap over studies must recompute each from per-study statistics (docs/evaluation.md). Each function here
reproduces its scorer's own aggregate arithmetic, vectorised over resamples (``counts``: (B, n), how often each
study is drawn), and is checked in tests to give the scorer's number on the full set:

- BLEU (pycocoevalcap ``BleuScorer.compute_score``, option ``closest``): per study the clipped n-gram matches
  ``correct[k]`` and the hypothesis n-gram totals ``guess[k]`` (k = 1..4), the hypothesis length ``testlen`` and
  the reference length ``reflen`` (the closest one; we give one reference). The corpus BLEU-k is
  ``prod_{j<=k} ((C_j + tiny) / (G_j + small))^(1/k)`` with tiny = 1e-15, small = 1e-9 on the summed counts,
  times the brevity penalty ``exp(1 - 1/ratio)`` when ``ratio = (T + tiny) / (R + small) < 1``.
- METEOR 1.5 (the jar's ``EVAL``): the 23 segment statistics the jar prints for each ``SCORE`` request
  (``MeteorStats.toString``: lengths, function words, per-stage content/function matches, chunks, word matches).
  The jar sums them (``addStats``: a segment matched perfectly in one chunk adds no chunk) and computes the score
  of the sums (``MeteorScorer.computeMetrics``) with the ``-l en`` default task's parameters below.
- CIDEr (pycocoevalcap ``CiderScorer``, n = 4, sigma = 6): the n-gram counts of candidate and reference. The IDF
  comes from the evaluated references (document frequency over the studies, ``log(max(1, df))`` against
  ``log(N)``, N the studies scored), so on a resample it is recomputed from the drawn studies' references, a study
  drawn k times counting k times as pycocoevalcap counts it when given that list. Per study and order, the clipped
  tf-idf cosine ``sum min(h, r) r w^2 / (|h w| |r w|)`` with a gaussian penalty on the difference of the bigram counts
  (pycocoevalcap's ``length``), averaged over the 4 orders, times 10; the corpus value is the mean over studies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from himed.metrics.families import corpus_family

BLEU_N = 4
# pycocoevalcap bleu_scorer.compute_score's smoothing constants ("so that if guess is 0 still return 0").
BLEU_TINY, BLEU_SMALL = 1e-15, 1e-9

# METEOR 1.5, `-l en`, default task (rank): alpha, beta, gamma, delta and the exact/stem/synonym/paraphrase module
# weights (edu.cmu.meteor.util.Constants PARAM_RANK / WEIGHT_RANK for English). Checked against the jar's own
# segment and corpus scores in tests.
METEOR_ALPHA, METEOR_BETA, METEOR_GAMMA, METEOR_DELTA = 0.85, 0.20, 0.60, 0.75
METEOR_WEIGHTS = (1.0, 0.60, 0.80, 0.60)
METEOR_STATS_LENGTH = 23  # MeteorStats.STATS_LENGTH: 4 + 4 modules x 4 + chunks + 2 word-match counts

CIDER_N, CIDER_SIGMA = 4, 6.0
# Largest (entries x resamples) block of numbers computed at once (doubles): bounds memory.
_CIDER_BLOCK = 4_000_000


# ---------------------------------------------------------------------------------------------------------------
# BLEU


def bleu_statistics(cooked_tests: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-sample statistics from ``BleuScorer.ctest`` (one reference per sample: ``closest`` is that one)."""
    out = []
    for comps in cooked_tests:
        reflens = comps["reflen"]
        testlen = comps["testlen"]
        reflen = min((abs(length - testlen), length) for length in reflens)[1]
        out.append(
            {"correct": list(comps["correct"]), "guess": list(comps["guess"]), "testlen": testlen, "reflen": reflen}
        )
    return out


@corpus_family("bleu")
def bleu_corpus(samples: Sequence[Mapping[str, Any]], metrics: Sequence[str], counts: np.ndarray) -> dict:
    stats = [sample["stats"]["bleu"] for sample in samples]
    correct = counts @ np.array([s["correct"] for s in stats], dtype=float)
    guess = counts @ np.array([s["guess"] for s in stats], dtype=float)
    testlen = counts @ np.array([s["testlen"] for s in stats], dtype=float)
    reflen = counts @ np.array([s["reflen"] for s in stats], dtype=float)
    out = {}
    bleu = np.ones(counts.shape[0])
    ratio = (testlen + BLEU_TINY) / (reflen + BLEU_SMALL)
    penalty = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    for k in range(BLEU_N):
        bleu = bleu * (correct[:, k] + BLEU_TINY) / (guess[:, k] + BLEU_SMALL)
        out[f"bleu_{k + 1}"] = bleu ** (1.0 / (k + 1)) * penalty
    return {name: out[name] for name in metrics}


# ---------------------------------------------------------------------------------------------------------------
# METEOR 1.5


def parse_meteor_stats(line: str) -> list[float]:
    """The jar's answer to a ``SCORE`` request: its 23 segment statistics."""
    values = [float(v) for v in line.split()]
    if len(values) != METEOR_STATS_LENGTH:
        raise ValueError(f"METEOR segment statistics should have {METEOR_STATS_LENGTH} numbers, got {line!r}")
    return values


def meteor_scores(stats: np.ndarray) -> np.ndarray:
    """``MeteorScorer.computeMetrics`` on rows of (summed) statistics, in the jar's order of operations."""
    stats = np.atleast_2d(np.asarray(stats, dtype=float))
    test_length, ref_length, test_function, ref_function = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
    modules = stats[:, 4:20].reshape(len(stats), 4, 4)  # (rows, module, [test content, ref content, test f, ref f])
    chunks, test_words, ref_words = stats[:, 20], stats[:, 21], stats[:, 22]
    test_total = modules[:, :, 0].sum(axis=1) + modules[:, :, 2].sum(axis=1)
    ref_total = modules[:, :, 1].sum(axis=1) + modules[:, :, 3].sum(axis=1)
    delta = METEOR_DELTA
    test_weighted_length = delta * (test_length - test_function) + (1.0 - delta) * test_function
    ref_weighted_length = delta * (ref_length - ref_function) + (1.0 - delta) * ref_function
    test_matches = np.zeros(len(stats))
    ref_matches = np.zeros(len(stats))
    for i, weight in enumerate(METEOR_WEIGHTS):
        test_matches = test_matches + modules[:, i, 0] * weight * delta
    for i, weight in enumerate(METEOR_WEIGHTS):
        ref_matches = ref_matches + modules[:, i, 1] * weight * delta
    for i, weight in enumerate(METEOR_WEIGHTS):
        test_matches = test_matches + modules[:, i, 2] * weight * (1.0 - delta)
    for i, weight in enumerate(METEOR_WEIGHTS):
        ref_matches = ref_matches + modules[:, i, 3] * weight * (1.0 - delta)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = test_matches / test_weighted_length
        recall = ref_matches / ref_weighted_length
        f_mean = 1.0 / (((1.0 - METEOR_ALPHA) / precision) + (METEOR_ALPHA / recall))
        perfect = (test_total == test_length) & (ref_total == ref_length) & (chunks == 1)
        frag = np.where(perfect, 0.0, chunks / ((test_words + ref_words) / 2))
        score = f_mean * (1.0 - METEOR_GAMMA * np.power(frag, METEOR_BETA))
    return np.where(np.isnan(score), 0.0, np.maximum(score, 0.0))


def meteor_aggregable(stats: np.ndarray) -> np.ndarray:
    """Segment statistics as ``addStats`` sums them: a perfect one-chunk segment contributes no chunk."""
    stats = np.array(stats, dtype=float)
    modules = stats[:, 4:20].reshape(len(stats), 4, 4)
    test_total = modules[:, :, 0].sum(axis=1) + modules[:, :, 2].sum(axis=1)
    ref_total = modules[:, :, 1].sum(axis=1) + modules[:, :, 3].sum(axis=1)
    perfect = (test_total == stats[:, 0]) & (ref_total == stats[:, 1]) & (stats[:, 20] == 1)
    stats[perfect, 20] = 0.0
    return stats


@corpus_family("meteor")
def meteor_corpus(samples: Sequence[Mapping[str, Any]], metrics: Sequence[str], counts: np.ndarray) -> dict:
    stats = meteor_aggregable(np.array([sample["stats"]["meteor"] for sample in samples], dtype=float))
    return {name: meteor_scores(counts @ stats) for name in metrics}


# ---------------------------------------------------------------------------------------------------------------
# CIDEr


def ngram_counts(text: str, n: int = CIDER_N) -> dict[str, int]:
    """pycocoevalcap's ``precook``: n-grams (orders 1..n) of ``text.split()`` and their counts, keyed by the
    n-gram's words joined by one space."""
    words = text.split()
    counts: dict[str, int] = {}
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            gram = " ".join(words[i : i + k])
            counts[gram] = counts.get(gram, 0) + 1
    return counts


def cider_statistics(hypotheses: Sequence[str], references: Sequence[str]) -> list[dict[str, dict[str, int]]]:
    return [
        {"candidate": ngram_counts(h), "reference": ngram_counts(r)}
        for h, r in zip(hypotheses, references, strict=True)
    ]


# A row of a sparse product goes dense when its entries fill at least 1/_DENSE_FILL of it (a BLAS multiply-add
# costs ~1/100 of a gathered one), fullest rows first, while the dense block stays under dense_size numbers.
_DENSE_FILL = 128
_DENSE_SIZE = 4_000_000
# The document-frequency product's dense block (float32: 100 MB at most) holds whole studies' n-gram presence.
_DF_DENSE_SIZE = 25_000_000


class SparseProduct:
    """``X @ A`` for dense (b, m) ``X`` and a fixed sparse (m, p) ``A`` given by its entries, in numpy only.

    Rows of ``A`` with many entries (n-grams most studies share) form a dense block multiplied with BLAS; the rest
    are summed entry by entry (a gather and ``np.add.reduceat`` over entries sorted by column). Checked against the
    dense product in tests.
    """

    def __init__(
        self,
        rows: np.ndarray,
        columns: np.ndarray,
        values: np.ndarray,
        shape: tuple[int, int],
        *,
        dtype: type = np.float64,
        dense_size: int = _DENSE_SIZE,
    ) -> None:
        """``dtype``: of the dense block and the product (float32 is exact for small integer counts)."""
        self.shape = shape
        self.dtype = dtype
        per_row = np.bincount(rows, minlength=shape[0])
        fullest = np.argsort(-per_row, kind="stable")[: max(0, dense_size // max(1, shape[1]))]
        dense_rows = np.sort(fullest[per_row[fullest] * _DENSE_FILL >= shape[1]])
        is_dense = np.zeros(shape[0], dtype=bool)
        is_dense[dense_rows] = True
        dense_entry = is_dense[rows]
        self.dense_rows = dense_rows
        position = np.full(shape[0], -1)
        position[dense_rows] = np.arange(len(dense_rows))
        self.dense = np.zeros((len(dense_rows), shape[1]), dtype=dtype)
        np.add.at(self.dense, (position[rows[dense_entry]], columns[dense_entry]), values[dense_entry])
        sparse_rows, sparse_columns, sparse_values = rows[~dense_entry], columns[~dense_entry], values[~dense_entry]
        order = np.argsort(sparse_columns, kind="stable")
        self.rows, self.values = sparse_rows[order], sparse_values[order].astype(dtype)
        sorted_columns = sparse_columns[order]
        self.starts = np.flatnonzero(np.r_[True, sorted_columns[1:] != sorted_columns[:-1]]) if len(order) else order
        self.columns = sorted_columns[self.starts] if len(order) else order

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(self.dtype, copy=False)
        if len(self.dense_rows):
            out = x[:, self.dense_rows] @ self.dense
        else:
            out = np.zeros((len(x), self.shape[1]), dtype=self.dtype)
        if len(self.rows):
            out[:, self.columns] += np.add.reduceat(x[:, self.rows] * self.values, self.starts, axis=1)
        return out


class CiderMatrices:
    """The CIDEr statistics of n studies as sparse products over their n-gram vocabulary (built once)."""

    def __init__(self, stats: Sequence[Mapping[str, Mapping[str, int]]]) -> None:
        vocabulary: dict[str, int] = {}
        # Per n-gram order: (gram, study, min(h, r) * r, h^2, r^2) of every gram in the study's candidate or reference.
        entries: list[list[list[float]]] = [[[], [], [], [], []] for _ in range(CIDER_N)]
        presence_study, presence_gram = [], []
        bigrams = np.zeros((len(stats), 2))
        self.n = n = len(stats)
        for i, study in enumerate(stats):
            candidate, reference = study["candidate"], study["reference"]
            for side, grams in ((0, candidate), (1, reference)):
                bigrams[i, side] = sum(c for g, c in grams.items() if g.count(" ") == 1)
            for gram in {**reference, **candidate}:
                j = vocabulary.setdefault(gram, len(vocabulary))
                h, r = candidate.get(gram, 0), reference.get(gram, 0)
                # vrama91's clipping: min(h w, r w) * r w = min(h, r) * r * w^2, since w >= 0.
                for column, value in zip(entries[gram.count(" ")], (j, i, min(h, r) * r, h * h, r * r), strict=True):
                    column.append(value)
                if r:
                    presence_study.append(i)
                    presence_gram.append(j)
        self.vocabulary_size = size = len(vocabulary)
        self.document_frequency = SparseProduct(
            np.array(presence_study, dtype=np.int64),
            np.array(presence_gram, dtype=np.int64),
            np.ones(len(presence_gram)),
            (n, size),
            dtype=np.float32,  # counts of drawn studies: integers, exact in float32 up to 2**24
            dense_size=_DF_DENSE_SIZE,
        )
        # products[order][k]: W2 (b, V) -> (b, n) sums of (numerator, |h w|^2, |r w|^2) for that order.
        self.products = []
        for order in entries:
            grams, studies = np.array(order[0], dtype=np.int64), np.array(order[1], dtype=np.int64)
            self.products.append(
                [SparseProduct(grams, studies, np.array(order[k], dtype=float), (size, n)) for k in (2, 3, 4)]
            )
        # pycocoevalcap's length penalty: e^(-(delta^2) / (2 sigma^2)), delta the difference of bigram counts.
        delta = bigrams[:, 0] - bigrams[:, 1]
        self.penalty = np.e ** (-(delta**2) / (2 * CIDER_SIGMA**2))

    def scores(self, counts: np.ndarray) -> np.ndarray:
        """(B, n) per-study CIDEr in each resample (the IDF from that resample's references)."""
        resamples, n = counts.shape[0], self.n
        largest = max(
            self.vocabulary_size,
            n,
            len(self.document_frequency.rows),
            *(len(product.rows) for products in self.products for product in products),
        )
        block = max(1, _CIDER_BLOCK // largest)
        out = np.empty((resamples, n))
        for start in range(0, resamples, block):
            chunk = counts[start : start + block]
            # pycocoevalcap's ref_len: log of the number of studies scored (with a study drawn k times counted k).
            log_n = np.log(chunk.sum(axis=1, keepdims=True))
            # Document frequency: how many drawn studies' references hold each n-gram.
            document_frequency = self.document_frequency(chunk).astype(np.float64)
            weight = log_n - np.log(np.maximum(1.0, document_frequency))
            weight2 = weight * weight
            value = np.zeros((len(chunk), n))
            for numerator_of, hyp_of, ref_of in self.products:
                numerator = numerator_of(weight2)
                norm = np.sqrt(hyp_of(weight2)) * np.sqrt(ref_of(weight2))
                with np.errstate(divide="ignore", invalid="ignore"):
                    value += np.where(norm != 0, numerator / norm, numerator)
            out[start : start + block] = value / CIDER_N * self.penalty * 10.0
        return out


@corpus_family("cider")
def cider_corpus(samples: Sequence[Mapping[str, Any]], metrics: Sequence[str], counts: np.ndarray) -> dict:
    matrices = CiderMatrices([sample["stats"]["cider"] for sample in samples])
    per_study = matrices.scores(counts)
    corpus = (counts * per_study).sum(axis=1) / counts.sum(axis=1)
    return {name: corpus for name in metrics}
