"""Guards against reward hacking: cheap penalties that also serve as monitors (none is in the paper).

A GRPO policy that maximises n-gram, keyword and label rewards can learn degenerate reports: the same sentence
over and over, lists of radiology keywords, or far too long or short text. Each guard scores one such pattern on
the lenient extraction of the completion (docs/data.md), tokenized like the token reward (lowercase ASCII
``[a-z0-9]+`` runs), as a penalty in [-1, 0]: 0 for a normal report, down to -1 for a fully degenerate one. With a
positive weight it subtracts from the total; with ``weight: 0`` it is only logged (``rewards/<name>/mean``) and
written by ``himed score``. Guards are off unless a config lists them.

- ``repetition``: ``ratio = max(sentence_repeat, ngram_repeat)``, where ``sentence_repeat`` is the fraction of
  sentences (split at . ! ? or a line break, compared by their tokens) that repeat an earlier one and
  ``ngram_repeat`` the fraction of the ``n``-grams (default 4) that repeat an earlier one. ``value =
  -max(0, ratio - tolerance) / (1 - tolerance)`` (default tolerance 0.1: a few repeated phrases are normal).
- ``keyword_stuffing``: keyword density = distinct radiology keywords named / tokens. Keywords come from
  ``himed/rewards/data/keywords.txt`` (the concept reward's list), or a ``keywords`` file or list; they are read left
  to right, longest term first, so "left pleural effusion" is one keyword here. (The concept bonus counts nested
  terms each; that would put ordinary prose near 0.7 and hide stuffing.) Allowed density:
  ``max(factor * reference density, floor)`` (defaults 1.5 and 0.5). ``value = -min(1, (density - allowed) / (1 -
  allowed))`` above it, else 0; None for an empty reference. Calibration on hand-written chest reports: ordinary
  prose 0.25-0.45, a comma-separated keyword list 0.9-1.0, prose padded with a keyword list ~0.65.
- ``length``: ``r = candidate tokens / reference tokens``. 0 inside ``[low, high]`` (defaults 0.5 and 2.0);
  outside, ``-min(1, d / log(full))`` where ``d`` is the distance of ``log r`` from the band and ``full`` (default 4)
  the factor beyond the band at which the penalty is total. An empty candidate gets -1; an empty reference None.

Default weights (used when a config lists a guard without a weight): 1.0 for ``repetition`` and
``keyword_stuffing``: a fully degenerate report then loses at least as much as any single low-level reward can give
(each is at most 1; the concept keyword bonus is capped at 0.2). 0.5 for ``length``: the token reward's brevity
penalty already punishes short reports, so this guard mostly catches long ones.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from himed.data.report_tokens import tokenize
from himed.data.sections import DEFAULT_SECTIONS, completion_text, extract_lenient, validate_sections
from himed.rewards.base import Reward
from himed.rewards.registry import register_reward

_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)|\n+")


def _check_fraction(value: float, what: str, reward: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{reward} reward: {what} must be a number in [0, 1), got {value!r}")
    return value


def repeat_fraction(items: Sequence) -> float:
    """The fraction of ``items`` equal to an earlier item (0 for fewer than two items)."""
    if len(items) < 2:
        return 0.0
    return 1.0 - len(set(items)) / len(items)


def sentence_token_runs(text: str) -> list[tuple[str, ...]]:
    """The sentences of ``text`` as token tuples (empty sentences dropped)."""
    return [tokens for tokens in (tokenize(s) for s in _SENTENCE_END.split(text)) if tokens]


@register_reward
class RepetitionGuard(Reward):
    """Guard: a penalty in [-1, 0] for repeated sentences or n-grams.

    The exact definition: the module docstring.
    """

    name = "repetition"
    level = "low"
    weight = 1.0
    parts = ("sentence_repeat", "ngram_repeat")

    def __init__(self, n: int = 4, tolerance: float = 0.1, sections: Sequence[str] = DEFAULT_SECTIONS):
        super().__init__(sections=validate_sections(sections))
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"repetition reward: n must be an integer >= 1, got {n!r}")
        self.n = n
        self.tolerance = _check_fraction(tolerance, "tolerance", "repetition")

    def score(self, texts: list[str], references: list[str], **columns: Any) -> list[dict[str, float | None]]:
        return [self._score_one(extract_lenient(text, self.sections)) for text in texts]

    def _score_one(self, text: str) -> dict[str, float | None]:
        tokens = tokenize(text)
        grams = [tokens[i : i + self.n] for i in range(len(tokens) - self.n + 1)]
        sentence_repeat = repeat_fraction(sentence_token_runs(text))
        ngram_repeat = repeat_fraction(grams)
        ratio = max(sentence_repeat, ngram_repeat)
        value = -(ratio - self.tolerance) / (1.0 - self.tolerance) if ratio > self.tolerance else 0.0
        return {"value": value, "sentence_repeat": sentence_repeat, "ngram_repeat": ngram_repeat}

    def score_completions(self, completions: Sequence, **columns: Any) -> list[dict[str, float | None]]:
        # Needs no reference: monitor rows without one too.
        try:
            return self.score([completion_text(c) for c in completions], [], **columns)
        except Exception:
            return super().score_completions(completions, **columns)


def load_keyword_terms(keywords: str | Path | Iterable[str] | None = None) -> frozenset[tuple[str, ...]]:
    """Keyword terms as token tuples, read exactly as the concept reward reads them (``concept.read_keywords``):
    the packaged list (None), a file (one term per line, '#' comments) or a list of terms."""
    from himed.rewards.concept import read_keywords

    if isinstance(keywords, str | Path) and not Path(keywords).is_file():
        raise ValueError(f"keyword_stuffing reward: keywords file {keywords} does not exist")
    terms = frozenset(tokens for tokens in (tokenize(term) for term in read_keywords(keywords)) if tokens)
    if not terms:
        raise ValueError("keyword_stuffing reward: no keyword with an [a-z0-9] token in the keywords given")
    return terms


def keyword_mentions(tokens: tuple[str, ...], terms: frozenset[tuple[str, ...]], lengths: Sequence[int]) -> int:
    """Distinct keywords named in ``tokens``, reading left to right and taking the longest term at each position
    ("left pleural effusion" is one mention, not three as in the concept bonus's nested count)."""
    longest_first = sorted(lengths, reverse=True)
    found = set()
    i = 0
    while i < len(tokens):
        for length in longest_first:
            run = tokens[i : i + length]
            if len(run) == length and run in terms:
                found.add(run)
                i += length
                break
        else:
            i += 1
    return len(found)


@register_reward
class KeywordStuffingGuard(Reward):
    """Guard: a penalty in [-1, 0] for a keyword density far above the reference's.

    The exact definition: the module docstring.
    """

    name = "keyword_stuffing"
    level = "low"
    weight = 1.0
    parts = ("density", "reference_density")

    def __init__(
        self,
        keywords: str | Sequence[str] | None = None,
        factor: float = 1.5,
        floor: float = 0.5,
        sections: Sequence[str] = DEFAULT_SECTIONS,
    ):
        super().__init__(sections=validate_sections(sections))
        self.keywords = keywords
        self.terms = load_keyword_terms(keywords)
        self.lengths = sorted({len(term) for term in self.terms})
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not factor >= 1:
            raise ValueError(f"keyword_stuffing reward: factor must be a number >= 1, got {factor!r}")
        self.factor = float(factor)
        self.floor = _check_fraction(floor, "floor", "keyword_stuffing")

    def density(self, text: str) -> float:
        tokens = tokenize(text)
        return keyword_mentions(tokens, self.terms, self.lengths) / len(tokens) if tokens else 0.0

    def score(self, texts: list[str], references: list[str], **columns: Any) -> list[dict[str, float | None]]:
        results = []
        for text, reference in zip(texts, references, strict=True):
            if not tokenize(reference):
                results.append({"value": None, "density": None, "reference_density": None})
                continue
            density = self.density(extract_lenient(text, self.sections))
            reference_density = self.density(reference)
            allowed = max(self.factor * reference_density, self.floor)
            value = -min(1.0, (density - allowed) / (1.0 - allowed)) if density > allowed and allowed < 1 else 0.0
            results.append({"value": value, "density": density, "reference_density": reference_density})
        return results


@register_reward
class LengthGuard(Reward):
    """Guard: a penalty in [-1, 0] for a length far from the reference's.

    The exact definition: the module docstring.
    """

    name = "length"
    level = "low"
    weight = 0.5
    parts = ("ratio",)

    def __init__(
        self, low: float = 0.5, high: float = 2.0, full: float = 4.0, sections: Sequence[str] = DEFAULT_SECTIONS
    ):
        super().__init__(sections=validate_sections(sections))
        for what, value in (("low", low), ("high", high), ("full", full)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"length reward: {what} must be a positive number, got {value!r}")
        if not low <= 1.0 <= high:
            raise ValueError(
                f"length reward: need low <= 1 <= high (a band around the reference length), got {low}, {high}"
            )
        if full <= 1:
            raise ValueError(f"length reward: full must be > 1 (a factor beyond the band), got {full}")
        self.low, self.high, self.full = float(low), float(high), float(full)

    def score(self, texts: list[str], references: list[str], **columns: Any) -> list[dict[str, float | None]]:
        results = []
        for text, reference in zip(texts, references, strict=True):
            reference_length = len(tokenize(reference))
            if reference_length == 0:
                results.append({"value": None, "ratio": None})
                continue
            ratio = len(tokenize(extract_lenient(text, self.sections))) / reference_length
            if ratio == 0:
                value = -1.0
            else:
                distance = max(0.0, math.log(ratio / self.high), math.log(self.low / ratio))
                value = -min(1.0, distance / math.log(self.full)) if distance > 0 else 0.0
            results.append({"value": value, "ratio": ratio})
        return results
