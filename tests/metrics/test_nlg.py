"""NLG metrics: equal to pycocoevalcap's own scorers on the same cleaned text; guards and the nltk fallback."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge, my_lcs

from himed.data.normalize import clean_report
from himed.metrics import nlg
from himed.metrics.nlg_statistics import meteor_corpus, meteor_scores, parse_meteor_stats

# Report text as radiologists write it; the scorers get it through R2Gen's MIMIC-CXR cleaning, as in evaluate.
RAW_REFERENCES = [
    "The heart is normal in size. The mediastinum is unremarkable.\nThe lungs are clear.",
    "There is a small left pleural effusion. No pneumothorax. Mild cardiomegaly.",
    "The cardiomediastinal silhouette is within normal limits. No focal consolidation.",
    "Interval placement of a right internal jugular central venous catheter with tip in the SVC.",
    "1. Bibasilar atelectasis. 2. No pleural effusion or pneumothorax. 3. Heart size is normal.",
    "Lungs are hyperexpanded. No acute cardiopulmonary process.",
]
RAW_PREDICTIONS = [
    "The heart is normal in size.  The lungs are clear.",
    "Small left pleural effusion; no pneumothorax. The heart is enlarged.",
    "The cardiomediastinal silhouette is normal. No focal consolidation, effusion or pneumothorax.",
    "Right internal jugular catheter tip in the SVC. No pneumothorax.",
    "",
    "No acute cardiopulmonary process. Lungs are hyperexpanded. Lungs are clear.",
]
REFERENCES = [clean_report(text, "mimic_cxr") for text in RAW_REFERENCES]
PREDICTIONS = [clean_report(text, "mimic_cxr") for text in RAW_PREDICTIONS]


def test_the_texts_are_r2gen_cleaned() -> None:
    assert REFERENCES[0] == "the heart is normal in size . the mediastinum is unremarkable . the lungs are clear ."
    assert all("\n" not in text and text == text.lower() for text in REFERENCES + PREDICTIONS)


@pytest.fixture(scope="module")
def pycoco_meteor() -> Meteor:
    """pycocoevalcap's METEOR scorer: the one JVM of this module (our driver reuses its process)."""
    return Meteor()


@pytest.fixture(scope="module")
def both(pycoco_meteor: Meteor) -> tuple[dict, dict]:
    """Our metrics and pycocoevalcap's on the same texts.

    One JVM: our jar driver talks to the process pycocoevalcap's ``Meteor`` started (its command line is checked to
    be ours), after pycocoevalcap has computed its own score with it.
    """
    gts = {i: [r] for i, r in enumerate(REFERENCES)}
    res = {i: [p] for i, p in enumerate(PREDICTIONS)}
    scorer = pycoco_meteor
    theirs = {"meteor": scorer.compute_score(gts, res)[0]}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    theirs.update({f"bleu_{n + 1}": bleu[n] for n in range(4)})
    theirs["rouge_l"] = Rouge().compute_score(gts, res)[0]
    theirs["cider"] = Cider().compute_score(gts, res)[0]

    assert scorer.meteor_cmd == list(nlg.Meteor15Jar.COMMAND)
    ours, info = nlg.nlg_metrics(PREDICTIONS, REFERENCES, meteor="nltk")
    ours["meteor"] = nlg.Meteor15Jar(process=scorer.meteor_p).score(PREDICTIONS, REFERENCES)[0]
    return ours, theirs


@pytest.mark.parametrize("name", ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"])
def test_equal_to_pycocoevalcap(both: tuple[dict, dict], name: str) -> None:
    ours, theirs = both
    assert ours[name] == theirs[name]  # exactly, not approximately
    assert 0 < ours[name]


@pytest.mark.slow
def test_nlg_metrics_starts_its_own_jar_and_matches_pycocoevalcap() -> None:
    gts = {i: [r] for i, r in enumerate(REFERENCES)}
    res = {i: [p] for i, p in enumerate(PREDICTIONS)}
    theirs = Meteor().compute_score(gts, res)[0]
    ours, info = nlg.nlg_metrics(PREDICTIONS, REFERENCES, meteor="jar")
    assert info["meteor"] == "meteor-1.5 jar"
    assert ours["meteor"] == theirs


def test_meteor_recomputed_from_the_jar_statistics_equals_the_jar(pycoco_meteor: Meteor) -> None:
    """The jar's EVAL from summed segment statistics, on the full set and on a resample with duplicates, and each
    segment's score, recomputed by himed.metrics.nlg_statistics as the jar computes them."""
    jar = nlg.Meteor15Jar(process=pycoco_meteor.meteor_p)
    corpus, segments, lines = jar.score(PREDICTIONS, REFERENCES)
    stats = [parse_meteor_stats(line) for line in lines]
    samples = [{"stats": {"meteor": s}} for s in stats]
    assert meteor_scores(np.array(stats)) == pytest.approx(segments, rel=1e-12)
    assert meteor_corpus(samples, ["meteor"], np.ones((1, len(stats))))["meteor"][0] == pytest.approx(corpus, rel=1e-12)
    drawn = [0, 0, 2, 3, 3, 3, 5]  # study 4 (the empty prediction) and study 1 left out, others repeated
    theirs = jar.score([PREDICTIONS[i] for i in drawn], [REFERENCES[i] for i in drawn])[0]
    counts = np.bincount(drawn, minlength=len(stats)).astype(float)[None, :]
    assert meteor_corpus(samples, ["meteor"], counts)["meteor"][0] == pytest.approx(theirs, rel=1e-12)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c", "d", ".", "effusion"]), max_size=40),
    st.lists(st.sampled_from(["a", "b", "c", "e", ".", "effusion"]), max_size=40),
)
def test_bit_parallel_lcs_matches_pycocoevalcap_loop(a: list[str], b: list[str]) -> None:
    assert nlg.lcs_length(a, b) == my_lcs(a, b)


def test_rouge_l_per_pair_is_bit_identical() -> None:
    gts = {i: [r] for i, r in enumerate(REFERENCES)}
    res = {i: [p] for i, p in enumerate(PREDICTIONS)}
    _, theirs = Rouge().compute_score(gts, res)
    assert list(nlg.rouge_l_scores(PREDICTIONS, REFERENCES)) == list(theirs)


def test_coco_text_guards_the_jar_protocol() -> None:
    assert nlg.coco_text("no effusion .\n\nno pneumothorax ||| .  ") == "no effusion . no pneumothorax ."
    jar = nlg.Meteor15Jar.__new__(nlg.Meteor15Jar)  # the check runs before any I/O
    with pytest.raises(ValueError, match="coco_text"):
        jar.score(["a\nb"], ["a b"])


def test_newlines_do_not_deadlock_and_score_like_spaces() -> None:
    with_newlines, _ = nlg.nlg_metrics(["the heart\nis normal ."], ["the heart is\r\nnormal ."], meteor="nltk")
    flat, _ = nlg.nlg_metrics(["the heart is normal ."], ["the heart is normal ."], meteor="nltk")
    assert with_newlines == flat
    assert flat["bleu_4"] == pytest.approx(1.0)


def test_without_java_meteor_is_named_meteor_nltk(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no java anywhere on the PATH
    assert not nlg.java_available()
    metrics, info = nlg.nlg_metrics(PREDICTIONS, REFERENCES, meteor="auto")
    assert "meteor" not in metrics
    assert 0 < metrics["meteor_nltk"] < 1
    assert info["meteor"] == "nltk"
    with pytest.raises(FileNotFoundError, match="java"):
        nlg.nlg_metrics(PREDICTIONS, REFERENCES, meteor="jar")


def test_empty_reference_is_an_error() -> None:
    with pytest.raises(ValueError, match="reference 1 is empty"):
        nlg.nlg_metrics(["a .", "b ."], ["a .", "  \n"], meteor="nltk")
