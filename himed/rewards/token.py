"""The token-level reward of HiMed-RL (eq. 1-3): clipped n-gram precision with a brevity penalty.

For a candidate ``c`` (the lenient extraction of the completion, DESIGN.md section 2) and its reference ``r``, both
tokenized by :mod:`himed.rewards.tokens`:

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

from himed.data.sections import DEFAULT_SECTIONS, validate_sections
from himed.rewards.base import Reward
from himed.rewards.registry import register_reward
from himed.rewards.tokens import candidate_tokens, ngram_counts, tokenize

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


def brevity_penalty(candidate_length: int, reference_length: int) -> float:
    """HiMed-RL eq. 2: ``min(1, exp(1 - r / c))``; 0 for an empty candidate."""
    if candidate_length == 0:
        return 0.0
    return min(1.0, math.exp(1.0 - reference_length / candidate_length))


def token_score(candidate: tuple[str, ...], reference: tuple[str, ...], weights: Sequence[float]) -> dict[str, float]:
    """HiMed-RL eq. 3 on token tuples: ``{"value": BP * sum(lambda_n p_n), "p1": ..., "bp": ...}``."""
    parts = {f"p{n}": clipped_precision(candidate, reference, n) for n in range(1, len(weights) + 1)}
    parts["bp"] = brevity_penalty(len(candidate), len(reference))
    mixed = sum(weight * parts[f"p{n}"] for n, weight in enumerate(weights, start=1))
    return {"value": parts["bp"] * mixed, **parts}


@register_reward("token", level="low", weight=1.0)
class TokenReward(Reward):
    """HiMed-RL token reward (eq. 1-3); see the module docstring for the exact definition."""

    name = "token"
    level = "low"
    weight = 1.0

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
        results = []
        for text, reference in zip(texts, references, strict=True):
            candidate = candidate_tokens(text, self.sections)
            parts = token_score(candidate, tokenize(reference), self.weights)
            if self.mean == "geometric":
                bleu = self._sentence_bleu().sentence_score(" ".join(candidate), [" ".join(tokenize(reference))])
                parts["value"] = bleu.score / 100.0
            results.append(parts)
        return results

    def __getstate__(self):
        state = super().__getstate__()
        state["_bleu"] = None  # rebuilt lazily; keeps the reward cheap to pickle
        return state
