"""Report tokens: what the token and concept rewards, the guards and the severity score count (docs/data.md).

Lowercase the text, then keep the ASCII runs ``[a-z0-9]+``; everything else (punctuation, whitespace, other
scripts) separates tokens; no stemming. This is the tokenizer of ``rouge_score`` without its stemmer, so ROUGE-L on
these tokens equals ``rouge_score``'s ``rougeL`` F1.

Tokenization is cached: in GRPO every prompt's reference is scored against a whole group of completions, the
token and concept rewards see the same completions in one step, and ``himed score`` often repeats references too.
The cached values are immutable (tuples) or must be treated as read-only (the n-gram Counters).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

from himed.data.sections import DEFAULT_SECTIONS, extract_lenient

_TOKEN = re.compile(r"[a-z0-9]+")

# Sized for one large GRPO step (512-1024 completions and their references) with room to spare, while bounding
# memory: a ~100-word text and its tokens take ~6 KB, the four n-gram Counters of a reference ~80 KB.
_TEXT_CACHE_SIZE = 8192
_NGRAM_CACHE_SIZE = 2048


@lru_cache(maxsize=_TEXT_CACHE_SIZE)
def tokenize(text: str) -> tuple[str, ...]:
    """Lowercased ASCII alphanumeric runs of ``text``, in order, as a tuple (hashable, so callers can cache)."""
    return tuple(_TOKEN.findall(text.lower()))


@lru_cache(maxsize=_TEXT_CACHE_SIZE)
def _candidate_tokens(text: str, sections: tuple[str, ...]) -> tuple[str, ...]:
    return tokenize(extract_lenient(text, sections))


def candidate_tokens(text: str, sections: Sequence[str] = DEFAULT_SECTIONS) -> tuple[str, ...]:
    """Tokens of the report a completion holds: its lenient extraction (docs/data.md), tokenized."""
    return _candidate_tokens(text, tuple(sections))


def ngrams(tokens: tuple[str, ...], n: int) -> list[tuple[str, ...]]:
    """The contiguous n-grams of ``tokens`` (empty when there are fewer than ``n`` tokens)."""
    return list(zip(*(tokens[i:] for i in range(n)), strict=False))


@lru_cache(maxsize=_NGRAM_CACHE_SIZE)
def ngram_counts(tokens: tuple[str, ...], n: int) -> Counter:
    """Counts of the n-grams of ``tokens`` (read-only); cached because a reference serves a group of completions."""
    return Counter(ngrams(tokens, n))


def clear_caches() -> None:
    """Empty the tokenization caches (benchmarks use this to time a cold start)."""
    tokenize.cache_clear()
    _candidate_tokens.cache_clear()
    ngram_counts.cache_clear()
