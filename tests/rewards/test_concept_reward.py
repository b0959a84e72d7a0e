"""The concept reward (HiMed-RL eq. 4-5) against rouge_score, pycocoevalcap, nltk and hand-counted keywords."""

import pickle
import random
import shutil
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.translate.meteor_score import meteor_score

from himed.data.report_tokens import tokenize
from himed.rewards.concept import (
    ConceptReward,
    KeywordMatcher,
    keyword_bonus,
    lcs_length,
    read_keywords,
    rouge_l,
)
from himed.rewards.meteor import find_wordnet


def naive_lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
    return table[len(a)][len(b)]


def test_lcs_equals_dynamic_programming_including_long_sequences():
    rng = random.Random(0)
    for _ in range(120):
        alphabet = "abcdefgh"[: rng.randint(1, 8)]
        a = tuple(rng.choices(alphabet, k=rng.randint(0, 130)))
        b = tuple(rng.choices(alphabet, k=rng.randint(0, 130)))
        assert lcs_length(a, b) == naive_lcs(a, b) == lcs_length(b, a)


text_strategy = st.text(alphabet=st.sampled_from(list("abc d.E,\n-é1")), max_size=60)


@pytest.fixture(scope="module")
def rouge_scorer():
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"])


@settings(max_examples=200, deadline=None)
@given(candidate=text_strategy, reference=text_strategy)
def test_rouge_l_f1_equals_rouge_score(rouge_scorer, candidate, reference):
    expected = rouge_scorer.score(reference, candidate)["rougeL"].fmeasure
    assert rouge_l(tokenize(candidate), tokenize(reference)) == pytest.approx(expected, abs=1e-12)


def test_rouge_l_beta_1_2_equals_pycocoevalcap_on_pretokenised_text():
    from pycocoevalcap.rouge.rouge import Rouge

    rng = random.Random(3)
    words = "the heart is normal no effusion left pleural mild size".split()
    for _ in range(200):
        cand = tuple(rng.choices(words, k=rng.randint(1, 30)))
        ref = tuple(rng.choices(words, k=rng.randint(1, 30)))
        expected = Rouge().calc_score([" ".join(cand)], [" ".join(ref)])
        assert rouge_l(cand, ref, beta=1.2) == pytest.approx(expected, abs=1e-12)


def test_rouge_l_hand_computed():
    cand, ref = tokenize("heart normal, small effusion"), tokenize("the heart is normal with no effusion")
    # LCS = heart, normal, effusion = 3; P = 3/4, R = 3/7
    p, r = 3 / 4, 3 / 7
    assert rouge_l(cand, ref) == pytest.approx(2 * p * r / (p + r))
    assert rouge_l(cand, ref, beta=2.0) == pytest.approx(5 * p * r / (r + 4 * p))
    assert rouge_l((), ref) == 0.0
    assert rouge_l(("x",), ref) == 0.0


def test_keywords_distinct_nested_and_contiguous():
    matcher = KeywordMatcher(["effusion", "pleural effusion", "left pleural effusion", "chest tube", "heart"])
    found = matcher.found(tokenize("Left pleural effusion. Effusion again; pleural fluid. Chest and tube."))
    # nested terms each count, repeats count once, "chest tube" is not contiguous here
    assert found == {("effusion",), ("pleural", "effusion"), ("left", "pleural", "effusion")}
    assert matcher.found(tokenize("chest tube in place")) == {("chest", "tube")}
    # contiguity is over tokens: punctuation separates tokens but does not break a run
    assert matcher.found(tokenize("chest-tube")) == {("chest", "tube")}
    assert matcher.found(()) == set()


def test_keyword_bonus_cap():
    assert keyword_bonus(3) == pytest.approx(0.06)
    assert keyword_bonus(10) == pytest.approx(0.2)
    assert keyword_bonus(25) == pytest.approx(0.2)
    assert keyword_bonus(4, beta=0.1, cap=0.3) == pytest.approx(0.3)


def test_reward_parts_and_value_hand_checked():
    keywords = ["effusion", "pleural effusion", "cardiomegaly", "pneumothorax"]
    reward = ConceptReward(keywords=keywords)
    cand = "<finding>Small pleural effusion. No pneumothorax.</finding><impression>Effusion.</impression>"
    ref = "There is a small pleural effusion and cardiomegaly."
    [parts] = reward.score([cand], [ref])
    c, r = tokenize("Small pleural effusion. No pneumothorax. Effusion."), tokenize(ref)
    assert parts["rouge_l"] == pytest.approx(rouge_l(c, r))
    wordnet, _ = find_wordnet()
    assert parts["meteor"] == pytest.approx(meteor_score([list(r)], list(c), wordnet=wordnet), abs=1e-12)
    assert parts["bonus"] == pytest.approx(3 * 0.02)  # effusion, pleural effusion, pneumothorax
    assert parts["value"] == pytest.approx(parts["rouge_l"] + parts["meteor"] + parts["bonus"])  # eq. 5

    [reference_mode] = ConceptReward(keywords=keywords, keyword_match="reference").score([cand], [ref])
    assert reference_mode["bonus"] == pytest.approx(2 * 0.02)  # pneumothorax is not in the reference
    assert reference_mode["rouge_l"] == parts["rouge_l"]


def test_meteor_part_equals_nltk_on_many_pairs():
    wordnet, _ = find_wordnet()
    rng = random.Random(5)
    words = "the heart is normal no effusions effusion left pleural mild size enlarged enlargement clear".split()
    cands = [" ".join(rng.choices(words, k=rng.randint(1, 40))) for _ in range(300)]
    refs = [" ".join(rng.choices(words, k=rng.randint(1, 40))) for _ in range(300)]
    results = ConceptReward().score(cands, refs)
    for cand, ref, parts in zip(cands, refs, results, strict=True):
        expected = meteor_score([list(tokenize(ref))], list(tokenize(cand)), wordnet=wordnet)
        assert parts["meteor"] == pytest.approx(expected, abs=1e-12)


def test_empty_candidate_scores_zero_everywhere():
    reward = ConceptReward()
    results = reward.score(["", "<think>effusion</think>", "..."], ["pleural effusion"] * 3)
    assert results == [{"value": 0.0, "rouge_l": 0.0, "meteor": 0.0, "bonus": 0.0}] * 3


def test_identical_report_scores_near_the_maximum():
    report = "Mild cardiomegaly. Small left pleural effusion with adjacent atelectasis. No pneumothorax."
    [parts] = ConceptReward().score([report], [report])
    assert parts["rouge_l"] == pytest.approx(1.0)
    assert 0.95 < parts["meteor"] < 1.0  # nltk's fragmentation penalty never reaches 0
    assert parts["bonus"] == pytest.approx(0.2)  # >= 10 vocabulary terms in this report


def test_shipped_vocabulary_is_curated_and_tokenizer_ready():
    text = resources.files("himed.rewards").joinpath("data", "keywords.txt").read_text(encoding="utf-8")
    terms = read_keywords()
    assert 300 <= len(terms) <= 1000
    assert len(set(terms)) == len(terms)
    for term in terms:
        # written the way the tokenizer sees it, so a reader of the file knows what is matched
        assert " ".join(tokenize(term)) == term, term
    for generic in ("the", "left", "right", "seen", "prior", "line"):
        assert generic not in terms
    for expected in ("pleural effusion", "cardiomegaly", "pneumothorax", "endotracheal tube", "hemidiaphragm"):
        assert expected in terms
    assert text.startswith("#") and "Rationale" in text
    assert len(ConceptReward().keywords) == len(terms)


def test_custom_keywords_from_a_path_or_a_list(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# my terms\nWidened Mediastinum\n\nnodule  # trailing comment\n")
    assert read_keywords(path) == ["Widened Mediastinum", "nodule"]
    reward = ConceptReward(keywords=str(path))
    [parts] = reward.score(["widened mediastinum, nodule and effusion"], ["x"])
    assert parts["bonus"] == pytest.approx(0.04)
    [parts] = ConceptReward(keywords=["effusion"]).score(["widened mediastinum, nodule and effusion"], ["x"])
    assert parts["bonus"] == pytest.approx(0.02)


def test_bad_kwargs_are_errors(tmp_path):
    with pytest.raises(ValueError, match="meteor"):
        ConceptReward(meteor="bleurt")
    with pytest.raises(ValueError, match="keyword_match"):
        ConceptReward(keyword_match="both")
    with pytest.raises(ValueError, match="rouge_beta"):
        ConceptReward(rouge_beta=0)
    with pytest.raises(ValueError, match="empty"):
        ConceptReward(keywords=["...", "# only a comment"])
    with pytest.raises(ValueError, match="cannot read"):
        ConceptReward(keywords=str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="meteor_workers"):
        ConceptReward(meteor_workers=2)  # nltk runs in-process: a worker count would silently do nothing
    with pytest.raises(ValueError, match="section"):
        ConceptReward(sections=("impression",))


def test_describe_reports_the_meteor_mode():
    mode = find_wordnet()[1]
    assert ConceptReward().describe() == {"meteor_mode": mode}
    assert ConceptReward(meteor="meteor15").describe() == {"meteor_mode": "meteor-1.5"}


def test_trl_contract_registry_and_pickle():
    from himed.rewards.registry import build_reward

    reward, info = build_reward("concept", {"rouge_beta": 1.2, "keyword_match": "reference"})
    assert isinstance(reward, ConceptReward) and info.level == "low" and info.weight == 1.0
    completions = [[{"role": "assistant", "content": "No pleural effusion."}], "no pleural effusion"]
    values = reward(completions, reference=["No pleural effusion.", "No pleural effusion."])
    assert values[0] == values[1] > 1.0
    clone = pickle.loads(pickle.dumps(reward))
    assert clone(completions, reference=["No pleural effusion."] * 2) == values


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR 1.5 needs Java")
def test_meteor15_part_equals_pycocoevalcap_on_our_tokens():
    from pycocoevalcap.meteor.meteor import Meteor

    cands = ["Small left pleural effusion.\nNo pneumothorax.", "Heart size normal |||", ""]
    refs = ["There is a small left pleural effusion.", "The heart is normal in size.", "Clear lungs."]
    reward = ConceptReward(meteor="meteor15")
    try:
        results = reward.score(cands, refs)
    finally:
        reward._meteor_scorer().close()
    coco = Meteor()
    try:
        joined = [" ".join(tokenize(text)) for text in cands[:2]]
        _, expected = coco.compute_score(
            {i: [" ".join(tokenize(refs[i]))] for i in range(2)}, {i: [joined[i]] for i in range(2)}
        )
    finally:
        coco.__del__()
    assert [r["meteor"] for r in results[:2]] == pytest.approx(expected, abs=1e-9)
    assert results[2] == {"value": 0.0, "rouge_l": 0.0, "meteor": 0.0, "bonus": 0.0}
    assert reward.describe() == {"meteor_mode": "meteor-1.5"}
