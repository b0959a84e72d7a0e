"""The concept-level reward of HiMed-RL (eq. 4-5): ROUGE-L + METEOR + a capped radiology-keyword bonus.

``R_concept = ROUGE-L + METEOR + min(keyword_beta * K, keyword_cap)`` (eq. 5), where, on himed's tokens
(:mod:`himed.data.report_tokens`) of the candidate (the lenient extraction of the completion) and the reference:

- ROUGE-L (eq. 4) is the LCS F-measure: ``P = LCS / len(c)``, ``R = LCS / len(r)``,
  ``F = (1 + b^2) P R / (R + b^2 P)`` (0 when the LCS is 0), ``b = rouge_beta``. The default 1.0 is plain F1 and
  equals ``rouge_score``'s ``rougeL`` F-measure (same tokenizer, no stemmer); 1.2 is pycocoevalcap's ROUGE-L
  (which is computed on whitespace tokens, so it agrees on pre-tokenised text).
- METEOR is nltk's sentence METEOR on the same tokens (``meteor: nltk``, see :mod:`himed.rewards.meteor` for the
  WordNet modes) or the METEOR 1.5 jar on the tokens joined by spaces (``meteor: meteor15``, in ``meteor_workers``
  = 1 or 2 long-lived JVMs of ~1-2 GB each; needs Java). ``describe()`` says which mode is in use.
- K is the number of DISTINCT keywords of the vocabulary that occur in the candidate as contiguous token
  sequences (``keyword_match: candidate``, the paper), or in both candidate and reference (``keyword_match:
  reference``, which a policy cannot farm by listing terms the reference does not mention). A keyword counts once
  however often it appears; nested keywords each count ("effusion" inside "pleural effusion").

The keyword vocabulary (``himed/rewards/data/keywords.txt``) is ours: ~730 chest-radiograph terms (findings and
diagnoses, anatomy, support devices, descriptors of severity, change and distribution) chosen because each names a
clinical concept; function words, generic report words and bare directions are left out, so that a candidate
cannot reach the cap (ten keywords at the defaults) without naming findings, anatomy or devices. The file header
gives the full rationale. ``keywords=`` takes another file or a list of terms.

Parts: ``rouge_l``, ``meteor``, ``bonus`` (``himed score`` writes them as ``concept/rouge_l``, ...). An empty
candidate scores 0 on every part. The value ranges over [0, 2 + keyword_cap].

Speed: the LCS is the bit-parallel algorithm of Allison and Dix (1986) in Hyyro's form (2004): one big-integer
bit vector over the reference, a few integer operations per candidate token, O(len(c) * len(r) / wordsize); the
reference's match masks and n-gram sets are cached, since GRPO scores a group of completions per reference.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

from himed.data.report_tokens import candidate_tokens, tokenize
from himed.data.sections import DEFAULT_SECTIONS, validate_sections
from himed.rewards.base import Reward
from himed.rewards.registry import register_reward

logger = logging.getLogger(__name__)

METEOR_BACKENDS = ("nltk", "meteor15")
KEYWORD_MATCHES = ("candidate", "reference")
DEFAULT_KEYWORDS = "keywords.txt"


# ---------------------------------------------------------------------------------------------------------------
# ROUGE-L (HiMed-RL eq. 4)


@lru_cache(maxsize=1024)  # per reference: a step's distinct references (GRPO: batch / num_generations)
def _match_masks(tokens: tuple[str, ...]) -> dict[str, int]:
    """For each distinct token, the bit set of its positions in ``tokens`` (bit i = position i)."""
    masks: dict[str, int] = {}
    for position, token in enumerate(tokens):
        masks[token] = masks.get(token, 0) | (1 << position)
    return masks


def lcs_length(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """Length of the longest common subsequence of two token tuples (bit-parallel, Hyyro 2004).

    ``V`` starts as all ones over the positions of ``b``; for each token of ``a`` with match mask ``M``,
    ``U = V & M; V = (V + U) | (V - U)``. The LCS is the number of zero bits left among the low ``len(b)`` bits.
    """
    if not a or not b:
        return 0
    masks = _match_masks(b)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        match = masks.get(token)
        if match:
            u = v & match
            v = (v + u) | (v - u)
    return len(b) - (v & full).bit_count()


def rouge_l(candidate: tuple[str, ...], reference: tuple[str, ...], beta: float = 1.0) -> float:
    """HiMed-RL eq. 4: ROUGE-L F_beta from the LCS; 0 when either side is empty or nothing is shared."""
    lcs = lcs_length(candidate, reference)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(candidate), lcs / len(reference)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


# ---------------------------------------------------------------------------------------------------------------
# Keywords (the bonus of HiMed-RL eq. 5)


def read_keywords(source: str | os.PathLike | Iterable[str] | None = None) -> list[str]:
    """Keyword terms from a file (one per line, ``#`` comments) or an iterable of terms; None = the shipped list."""
    if source is None:
        text = resources.files("himed.rewards").joinpath("data", DEFAULT_KEYWORDS).read_text(encoding="utf-8")
        lines = text.splitlines()
    elif isinstance(source, str | os.PathLike):
        with open(source, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    else:
        lines = list(source)
    terms = []
    for line in lines:
        if not isinstance(line, str):
            raise ValueError(f"keywords must be strings, got {line!r}")
        term = line.split("#", 1)[0].strip()
        if term:
            terms.append(term)
    return terms


class KeywordMatcher:
    """Finds which keywords occur as contiguous token sequences; precompiled as one set of token tuples per length.

    A text's n-grams of each keyword length are built and intersected with that length's keyword set, all in C
    (set construction and intersection), which beats scanning the text position by position in Python.
    """

    def __init__(self, terms: Iterable[str]):
        keywords = {tokenize(term) for term in terms}
        keywords.discard(())
        if not keywords:
            raise ValueError("the keyword list is empty (after tokenization)")
        self.keywords = frozenset(keywords)
        by_length: dict[int, set[tuple[str, ...]]] = {}
        for keyword in keywords:
            by_length.setdefault(len(keyword), set()).add(keyword)
        self._unigrams = frozenset(k[0] for k in by_length.pop(1, ()))
        self._by_length = {length: frozenset(group) for length, group in sorted(by_length.items())}

    def __len__(self) -> int:
        return len(self.keywords)

    def found(self, tokens: tuple[str, ...]) -> set[tuple[str, ...]]:
        """The distinct keywords (as token tuples) present in ``tokens``; nested keywords each count."""
        present = {(t,) for t in self._unigrams.intersection(tokens)}
        for length, group in self._by_length.items():
            if length > len(tokens):
                break
            present |= group.intersection(zip(*(tokens[i:] for i in range(length)), strict=False))
        return present


def keyword_bonus(count: int, beta: float = 0.02, cap: float = 0.2) -> float:
    """HiMed-RL eq. 5 bonus: ``min(beta * K, cap)`` for K distinct keywords found."""
    return min(beta * count, cap)


# ---------------------------------------------------------------------------------------------------------------
# The reward


@register_reward
class ConceptReward(Reward):
    """ROUGE-L + METEOR + a capped radiology-keyword bonus (HiMed-RL eq. 4-5).

    The exact definition: the module docstring.
    """

    name = "concept"
    level = "low"
    weight = 1.0
    parts = ("rouge_l", "meteor", "bonus")
    lazy_attributes = ("_scorer",)  # JVM workers and WordNet readers are rebuilt in the receiving process

    def __init__(
        self,
        rouge_beta: float = 1.0,
        meteor: str = "nltk",
        keyword_beta: float = 0.02,
        keyword_cap: float = 0.2,
        keyword_match: str = "candidate",
        keywords: str | os.PathLike | Sequence[str] | None = None,
        meteor_workers: int = 1,
        sections: Sequence[str] = DEFAULT_SECTIONS,
    ):
        super().__init__(sections=validate_sections(sections))
        if not rouge_beta > 0:
            raise ValueError(f"concept reward: rouge_beta must be positive, got {rouge_beta!r}")
        if meteor not in METEOR_BACKENDS:
            raise ValueError(f"concept reward: meteor must be one of {METEOR_BACKENDS}, got {meteor!r}")
        if keyword_match not in KEYWORD_MATCHES:
            raise ValueError(f"concept reward: keyword_match must be one of {KEYWORD_MATCHES}, got {keyword_match!r}")
        if keyword_beta < 0 or keyword_cap < 0:
            raise ValueError("concept reward: keyword_beta and keyword_cap must be non-negative")
        self.rouge_beta = float(rouge_beta)
        self.meteor = meteor
        self.keyword_beta = float(keyword_beta)
        self.keyword_cap = float(keyword_cap)
        self.keyword_match = keyword_match
        self.meteor_workers = meteor_workers
        try:
            self.keywords = KeywordMatcher(read_keywords(keywords))
        except OSError as error:
            raise ValueError(f"concept reward: cannot read keywords {keywords!r}: {error}") from None
        self._scorer = None
        if meteor_workers not in (1, 2) or (meteor == "nltk" and meteor_workers != 1):
            raise ValueError(
                "concept reward: meteor_workers is the number of METEOR 1.5 processes, 1 or 2, and applies to "
                f"meteor: meteor15 only; got {meteor_workers!r} with meteor: {meteor}"
            )
        if meteor == "meteor15":
            if shutil.which("java") is None:
                raise ValueError("concept reward: meteor 'meteor15' needs Java on PATH; install it or use meteor: nltk")

    def _meteor_scorer(self):
        if self._scorer is None:
            if self.meteor == "nltk":
                from himed.rewards.meteor import NltkMeteor

                self._scorer = NltkMeteor()
            else:
                from himed.rewards.meteor import Meteor15Pool

                self._scorer = Meteor15Pool(workers=self.meteor_workers)
        return self._scorer

    def describe(self) -> dict[str, str]:
        """How this reward is computing METEOR, for ``himed score`` to report: ``{"meteor_mode": ...}``."""
        if self.meteor == "meteor15":
            from himed.rewards.meteor import MODE_METEOR15

            return {"meteor_mode": MODE_METEOR15}
        return {"meteor_mode": self._meteor_scorer().mode}

    def _meteor_scores(self, candidates: list[tuple[str, ...]], references: list[tuple[str, ...]]) -> list[float]:
        scorer = self._meteor_scorer()
        if self.meteor == "nltk":
            return scorer.score_batch(candidates, references, lowercased=True)
        return scorer.score([" ".join(c) for c in candidates], [" ".join(r) for r in references])

    def score(self, texts: list[str], references: list[str], **columns: Any) -> list[dict[str, float | None]]:
        candidates = [candidate_tokens(text, self.sections) for text in texts]
        reference_tokens = [tokenize(reference) for reference in references]
        scored = [i for i, candidate in enumerate(candidates) if candidate]
        meteor_scores = dict(
            zip(
                scored,
                self._meteor_scores([candidates[i] for i in scored], [reference_tokens[i] for i in scored]),
                strict=True,
            )
        )
        results = []
        for i, (candidate, reference) in enumerate(zip(candidates, reference_tokens, strict=True)):
            if not candidate:
                results.append({"value": 0.0, "rouge_l": 0.0, "meteor": 0.0, "bonus": 0.0})
                continue
            found = self.keywords.found(candidate)
            if self.keyword_match == "reference":
                found &= self.keywords.found(reference)
            parts = {
                "rouge_l": rouge_l(candidate, reference, self.rouge_beta),
                "meteor": meteor_scores[i],
                "bonus": keyword_bonus(len(found), self.keyword_beta, self.keyword_cap),
            }
            # HiMed-RL eq. 5
            results.append({"value": parts["rouge_l"] + parts["meteor"] + parts["bonus"], **parts})
        return results
