"""The shared tokenizer of the token and concept rewards (DESIGN.md section 3)."""

import re

from hypothesis import given
from hypothesis import strategies as st

from himed.data.report_tokens import ngram_counts, ngrams, tokenize


def test_lowercases_and_splits_on_everything_but_ascii_alphanumerics():
    text = "The HEART is enlarged; 3.5-cm left-sided PICC\nline, no\tpneumothorax (café)."
    assert tokenize(text) == (
        "the", "heart", "is", "enlarged", "3", "5", "cm", "left", "sided", "picc",
        "line", "no", "pneumothorax", "caf",
    )  # fmt: skip


def test_no_stemming_and_empty_text():
    assert tokenize("effusions effusion") == ("effusions", "effusion")
    assert tokenize("") == ()
    assert tokenize(" ... ,;- ") == ()


def test_tags_are_tokens_when_not_extracted():
    # The rewards call extract_lenient first; the tokenizer itself does not know about tags.
    assert tokenize("<finding>clear</finding>") == ("finding", "clear", "finding")


@given(st.text())
def test_matches_rouge_score_tokenizer(text):
    from rouge_score.tokenize import tokenize as rouge_tokenize

    assert list(tokenize(text)) == rouge_tokenize(text, None)


@given(st.text())
def test_tokens_are_lowercase_ascii_runs_that_rejoin_in_order(text):
    tokens = tokenize(text)
    assert all(re.fullmatch(r"[a-z0-9]+", t) for t in tokens)
    assert " ".join(tokens) == " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def test_ngrams_and_counts():
    tokens = ("a", "b", "a", "b")
    assert ngrams(tokens, 2) == [("a", "b"), ("b", "a"), ("a", "b")]
    assert ngrams(tokens, 5) == []
    assert ngram_counts(tokens, 2) == {("a", "b"): 2, ("b", "a"): 1}
    assert ngram_counts(tokens, 1) == {("a",): 2, ("b",): 2}
