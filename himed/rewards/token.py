"""The token-level reward of HiMed-RL (eq. 1-3): clipped n-gram precision with a brevity penalty.

For a candidate ``c`` (the lenient extraction of the completion, docs/data.md) and its reference ``r``, both
tokenized by :mod:`himed.data.report_tokens`:

- ``p_n`` (eq. 1): the clipped n-gram precision, ``sum_g min(count_c(g), count_r(g)) / number of n-grams of c``;
  0 when the candidate has no n-grams of order ``n`` (it is shorter than ``n`` tokens). There is one reference, so
  the "max count over references" of BLEU is just the reference count.
- ``BP`` (eq. 2): ``min(1, exp(1 - len(r) / len(c)))``, and 0 for an empty candidate.
- ``R_token`` (eq. 3, as printed): ``BP * sum_n lambda_n p_n`` with ``lambda_n = 1/4``, n = 1..4 (``mean:
  arithmetic``). The arithmetic mean is what the paper prints; it differs from BLEU's geometric mean, which is 0
  whenever one order has no match, so it gives a denser signal on short or poor completions. One consequence: a
  candidate shorter than 4 tokens cannot reach 1, even as an exact copy (orders it lacks contribute p_n = 0).
- ``mean: geometric`` is BLEU instead: ``sacrebleu.sentence_bleu(hyp, [ref], tokenize="none",
  smooth_method="exp").score / 100`` on our tokens joined by spaces (sacrebleu's uniform weights, its ``exp``
  smoothing of zero-match orders; ``max_n`` sets its maximum n-gram order).

``weights`` (the lambda_n) must be non-negative and sum to 1, so that the reward stays in [0, 1] like the paper's.

Parts: ``p1``..``p{max_n}`` and ``bp`` (the unsmoothed quantities above, in both modes), reported by ``himed score``
as ``token/p1``.. ``token/bp``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from himed.data.report_tokens import candidate_tokens, ngram_counts, tokenize
from himed.data.sections import DEFAULT_SECTIONS, validate_sections
from himed.rewards.base import Reward
from himed.rewards.registry import register_reward

MEANS = ("arithmetic", "geometric")


def clipped_precision(candidate: tuple[str, ...], reference: tuple[str, ...], n: int) -> float:
    """HiMed-RL eq. 1: clipped n-gram precision of ``candidate``; 0 when it has no n-grams of order ``n``."""
    total = len(candidate) - n + 1
    if total <= 0:
        return 0.0
    # Sum over candidate n-grams of min(count in candidate, count in reference), in one pass: each candidate
    # n-gram uses up one unit of its reference count. Faster than counting the candidate first.
    remaining = dict(ngram_counts(reference, n))
    clipped = 0
    for gram in zip(*(candidate[i:] for i in range(n)), strict=False):
        left = remaining.get(gram)
        if left:
            remaining[gram] = left - 1
            clipped += 1
    return clipped / total


def clipped_counts(
    candidates: Sequence[tuple[str, ...]], references: Sequence[tuple[str, ...]], max_n: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """HiMed-RL eq. 1 for a whole batch at once: ``(clipped, totals)``, integer arrays of shape (batch, max_n).

    ``clipped[i, n-1]`` is pair i's clipped n-gram count and ``totals[i, n-1]`` its number of candidate n-grams, so
    ``p_n = clipped / totals`` (0 where totals is 0); equal to :func:`clipped_precision` pair by pair (tested).

    Tokens get integer ids from the batch's reference vocabulary (0 for a candidate token no reference has, so an
    n-gram containing it can never match); each n-gram becomes one integer ``pair * base**n + code`` and the counts
    are matched with numpy's sort-based ``unique`` and ``intersect1d`` instead of per-pair Python dictionaries.
    Returns None when those integers could overflow int64 (a huge vocabulary or batch): use the per-pair path.
    """
    size = len(candidates)
    clipped = np.zeros((size, max_n), dtype=np.int64)
    candidate_lengths = np.fromiter((len(c) for c in candidates), dtype=np.int64, count=size)
    totals = np.maximum(candidate_lengths[:, None] - np.arange(max_n)[None, :], 0)
    if size == 0:
        return clipped, totals
    vocabulary: dict[str, int] = {}
    for reference in dict.fromkeys(references):
        for token in reference:
            if token not in vocabulary:
                vocabulary[token] = len(vocabulary) + 1
    base = len(vocabulary) + 1
    if size * base**max_n >= 2**62:
        return None
    lookup = vocabulary.get
    candidate_ids = np.fromiter((lookup(t, 0) for c in candidates for t in c), dtype=np.int64)
    reference_ids = np.fromiter((vocabulary[t] for r in references for t in r), dtype=np.int64)
    reference_lengths = np.fromiter((len(r) for r in references), dtype=np.int64, count=size)

    def layout(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each token of the concatenated sequences: its pair, and how many tokens its sequence has left."""
        pair = np.repeat(np.arange(size), lengths)
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        left = np.repeat(lengths, lengths) - (np.arange(int(lengths.sum())) - starts)
        return pair, left

    candidate_pair, candidate_left = layout(candidate_lengths)
    reference_pair, reference_left = layout(reference_lengths)
    candidate_code, reference_code = candidate_ids.copy(), reference_ids.copy()
    for n in range(1, max_n + 1):
        if n > 1:  # extend each (n-1)-gram code by the next token; codes running past a sequence's end are masked
            candidate_code[: 1 - n] = candidate_code[: 1 - n] * base + candidate_ids[n - 1 :]
            reference_code[: 1 - n] = reference_code[: 1 - n] * base + reference_ids[n - 1 :]
        scale = base**n
        valid = candidate_left >= n
        candidate_keys, candidate_counts = np.unique(
            candidate_pair[valid] * scale + candidate_code[valid], return_counts=True
        )
        valid = reference_left >= n
        reference_keys, reference_counts = np.unique(
            reference_pair[valid] * scale + reference_code[valid], return_counts=True
        )
        shared, in_candidate, in_reference = np.intersect1d(
            candidate_keys, reference_keys, assume_unique=True, return_indices=True
        )
        matched = np.minimum(candidate_counts[in_candidate], reference_counts[in_reference])
        clipped[:, n - 1] = np.bincount(shared // scale, weights=matched, minlength=size).astype(np.int64)
    return clipped, totals


def brevity_penalty(candidate_length: int, reference_length: int) -> float:
    """HiMed-RL eq. 2: ``min(1, exp(1 - r / c))``; 0 for an empty candidate."""
    if candidate_length == 0:
        return 0.0
    return min(1.0, math.exp(1.0 - reference_length / candidate_length))


def combine(precisions: Sequence[float], bp: float, weights: Sequence[float]) -> dict[str, float]:
    """HiMed-RL eq. 3: ``{"value": BP * sum(lambda_n p_n), "p1": p_1, ..., "bp": BP}``."""
    parts = {f"p{n}": p for n, p in enumerate(precisions, start=1)}
    parts["bp"] = bp
    return {"value": bp * sum(w * p for w, p in zip(weights, precisions, strict=True)), **parts}


def token_score(candidate: tuple[str, ...], reference: tuple[str, ...], weights: Sequence[float]) -> dict[str, float]:
    """HiMed-RL eq. 1-3 for one pair of token tuples (the per-pair path; :func:`clipped_counts` batches eq. 1)."""
    precisions = [clipped_precision(candidate, reference, n) for n in range(1, len(weights) + 1)]
    return combine(precisions, brevity_penalty(len(candidate), len(reference)), weights)


@register_reward
class TokenReward(Reward):
    """Clipped n-gram precision with a brevity penalty (HiMed-RL eq. 1-3).

    The exact definition: the module docstring.
    """

    name = "token"
    level = "low"
    weight = 1.0
    parts = ("p1", "p2", "p3", "p4", "bp")  # p1..p<max_n>
    lazy_attributes = ("_bleu",)  # sacrebleu's BLEU object: rebuilt on first use

    def __init__(
        self,
        max_n: int = 4,
        weights: Sequence[float] | None = None,
        mean: str = "arithmetic",
        sections: Sequence[str] = DEFAULT_SECTIONS,
    ):
        super().__init__(sections=validate_sections(sections))
        if not isinstance(max_n, int) or isinstance(max_n, bool) or max_n < 1:
            raise ValueError(f"token reward: max_n must be a positive integer, got {max_n!r}")
        if mean not in MEANS:
            raise ValueError(f"token reward: mean must be one of {MEANS}, got {mean!r}")
        if weights is None:
            # The paper's lambda_n = 1/4 for n = 1..4; 1/max_n in general so that the reward stays in [0, 1].
            weights = [1.0 / max_n] * max_n
        weights = [float(w) for w in weights]
        if len(weights) != max_n:
            raise ValueError(f"token reward: weights needs one value per order 1..{max_n}, got {len(weights)}")
        if any(w < 0 for w in weights) or not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
            raise ValueError(f"token reward: weights must be non-negative and sum to 1, got {weights}")
        if mean == "geometric" and any(not math.isclose(w, 1.0 / max_n) for w in weights):
            raise ValueError("token reward: mean 'geometric' is sacrebleu's BLEU, which uses uniform weights")
        self.max_n = max_n
        self.weights = tuple(weights)
        self.mean = mean
        self._bleu = None

    def _sentence_bleu(self):
        if self._bleu is None:
            from sacrebleu.metrics import BLEU

            # Equal to sacrebleu.sentence_bleu(hyp, [ref], tokenize="none", smooth_method="exp") for max_n = 4;
            # built once because sentence_bleu builds a new BLEU object on every call.
            self._bleu = BLEU(tokenize="none", smooth_method="exp", max_ngram_order=self.max_n, effective_order=True)
        return self._bleu

    def score(self, texts: list[str], references: list[str], **columns: Any) -> list[dict[str, float | None]]:
        candidates = [candidate_tokens(text, self.sections) for text in texts]
        reference_tokens = [tokenize(reference) for reference in references]
        counts = clipped_counts(candidates, reference_tokens, self.max_n)
        results = []
        for i, (candidate, reference) in enumerate(zip(candidates, reference_tokens, strict=True)):
            if counts is None:
                parts = token_score(candidate, reference, self.weights)
            else:
                clipped, totals = counts[0][i].tolist(), counts[1][i].tolist()
                precisions = [c / t if t else 0.0 for c, t in zip(clipped, totals, strict=True)]
                parts = combine(precisions, brevity_penalty(len(candidate), len(reference)), self.weights)
            if self.mean == "geometric":
                bleu = self._sentence_bleu().sentence_score(" ".join(candidate), [" ".join(reference)])
                parts["value"] = bleu.score / 100.0
            results.append(parts)
        return results
