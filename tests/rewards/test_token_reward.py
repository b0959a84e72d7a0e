"""The token reward (HiMed-RL eq. 1-3) against hand-computed values, a naive implementation and sacrebleu."""

import math
import pickle
import re

import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st

from himed.data.report_tokens import tokenize
from himed.rewards.token import TokenReward, brevity_penalty, clipped_counts, clipped_precision, token_score


def naive_token_reward(candidate: str, reference: str, weights=(0.25, 0.25, 0.25, 0.25)):
    """Eq. 1-3 written out independently: plain lists, no Counter, no caching."""
    c = re.findall(r"[a-z0-9]+", candidate.lower())
    r = re.findall(r"[a-z0-9]+", reference.lower())
    precisions = []
    for n in range(1, len(weights) + 1):
        cand = [tuple(c[i : i + n]) for i in range(len(c) - n + 1)]
        ref = [tuple(r[i : i + n]) for i in range(len(r) - n + 1)]
        if not cand:
            precisions.append(0.0)
            continue
        matched = sum(min(cand.count(g), ref.count(g)) for g in set(cand))
        precisions.append(matched / len(cand))
    bp = 0.0 if not c else min(1.0, math.exp(1 - len(r) / len(c)))
    return bp * sum(w * p for w, p in zip(weights, precisions, strict=True)), precisions, bp


def test_hand_computed_pair():
    reward = TokenReward()
    [parts] = reward.score(["The heart is enlarged."], ["The heart is normal in size."])
    # p1 = 3/4 (the, heart, is), p2 = 2/3, p3 = 1/2, p4 = 0/1; BP = exp(1 - 6/4).
    assert parts["p1"] == pytest.approx(0.75)
    assert parts["p2"] == pytest.approx(2 / 3)
    assert parts["p3"] == pytest.approx(0.5)
    assert parts["p4"] == 0.0
    assert parts["bp"] == pytest.approx(math.exp(-0.5))
    assert parts["value"] == pytest.approx(math.exp(-0.5) * (0.75 + 2 / 3 + 0.5) / 4)


def test_counts_are_clipped_by_the_reference():
    [parts] = TokenReward().score(["the the the the"], ["the cat"])
    assert parts["p1"] == pytest.approx(0.25)  # min(4, 1) / 4
    assert parts["p2"] == parts["p3"] == parts["p4"] == 0.0
    assert parts["bp"] == 1.0  # longer than the reference: no penalty
    assert parts["value"] == pytest.approx(0.25 / 4)


def test_orders_longer_than_the_candidate_give_zero_precision():
    [parts] = TokenReward().score(["Effusion."], ["No effusion."])
    assert parts["p1"] == 1.0
    assert parts["p2"] == parts["p3"] == parts["p4"] == 0.0
    assert parts["bp"] == pytest.approx(math.exp(1 - 2))
    assert parts["value"] == pytest.approx(math.exp(-1) * 0.25)


def test_identical_text_scores_one_and_empty_scores_zero():
    report = "Mild cardiomegaly. Small left pleural effusion. No pneumothorax."
    [same, empty, only_tags] = TokenReward().score([report, "", "<think>x</think>"], [report] * 3)
    assert same["value"] == pytest.approx(1.0)
    assert empty == {"value": 0.0, "p1": 0.0, "p2": 0.0, "p3": 0.0, "p4": 0.0, "bp": 0.0}
    assert only_tags["value"] == 0.0 and only_tags["bp"] == 0.0


def test_candidate_is_the_lenient_extraction():
    completion = (
        "<think>the heart rationale</think>\n<finding>Heart size normal.</finding>\n"
        "<impression>Lungs clear.</impression>"
    )
    reference = "heart size normal lungs clear"
    [tagged] = TokenReward().score([completion], [reference])
    [plain] = TokenReward().score(["Heart size normal. Lungs clear."], [reference])
    assert tagged == plain
    assert tagged["value"] == pytest.approx(1.0)
    # findings-only sections: the impression tag is deleted, its text kept
    reward = TokenReward(sections=("think", "finding"))
    [loose] = reward.score(["<finding>Heart size normal.</finding><impression>Lungs clear.</impression>"], [reference])
    assert loose["value"] == pytest.approx(1.0)


def test_arithmetic_mean_caps_identical_short_texts():
    # Eq. 3 as printed: orders longer than the candidate contribute p_n = 0, even for an exact copy.
    [parts] = TokenReward().score(["Heart normal."], ["Heart normal."])
    assert parts["value"] == pytest.approx(0.5)


words = st.sampled_from(["the", "heart", "is", "normal", "no", "effusion", "left", "pleural", "mild", "size"])


@settings(max_examples=200, deadline=None)
@given(st.lists(words, max_size=30), st.lists(words, min_size=1, max_size=30))
def test_equals_naive_implementation(candidate, reference):
    cand, ref = " ".join(candidate), " ".join(reference)
    [parts] = TokenReward().score([cand], [ref])
    value, precisions, bp = naive_token_reward(cand, ref)
    assert parts["value"] == pytest.approx(value, abs=1e-12)
    assert [parts[f"p{n}"] for n in range(1, 5)] == pytest.approx(precisions, abs=1e-12)
    assert parts["bp"] == pytest.approx(bp, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(words, max_size=20), st.lists(words, min_size=1, max_size=20))
def test_custom_orders_and_weights_equal_naive(candidate, reference):
    cand, ref = " ".join(candidate), " ".join(reference)
    [parts] = TokenReward(max_n=2, weights=[0.7, 0.3]).score([cand], [ref])
    value, precisions, bp = naive_token_reward(cand, ref, weights=(0.7, 0.3))
    assert set(parts) == {"value", "p1", "p2", "bp"}
    assert parts["value"] == pytest.approx(value, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(words, max_size=30), st.lists(words, min_size=1, max_size=30))
def test_geometric_equals_sacrebleu_sentence_bleu(candidate, reference):
    cand, ref = " ".join(candidate) + ".", "; ".join(reference).upper()
    [parts] = TokenReward(mean="geometric").score([cand], [ref])
    expected = sacrebleu.sentence_bleu(
        " ".join(tokenize(cand)), [" ".join(tokenize(ref))], tokenize="none", smooth_method="exp"
    )
    assert parts["value"] == pytest.approx(expected.score / 100, abs=1e-12)
    # the parts are the unsmoothed eq. 1-2 quantities in both modes
    assert parts["p1"] == TokenReward().score([cand], [ref])[0]["p1"]


def test_geometric_differs_from_arithmetic_when_an_order_has_no_match():
    cand, ref = "heart normal lungs clear", "heart size normal lungs are clear"
    [arith] = TokenReward().score([cand], [ref])
    [geo] = TokenReward(mean="geometric").score([cand], [ref])
    assert arith["p4"] == 0.0 and arith["value"] > 0
    assert geo["value"] != pytest.approx(arith["value"])


def test_helpers_directly():
    assert clipped_precision(("a", "b"), ("a",), 3) == 0.0
    assert clipped_precision(("a", "a", "b"), ("a", "b", "a"), 1) == 1.0
    assert brevity_penalty(0, 5) == 0.0
    assert brevity_penalty(10, 5) == 1.0
    assert brevity_penalty(5, 10) == pytest.approx(math.exp(-1))


def test_trl_contract_conversational_and_columns():
    reward = TokenReward()
    text = "Heart size is normal."
    completions = [[{"role": "assistant", "content": text}], text]
    values = reward(completions, findings=["Heart size", "Heart size"], impression=["is normal.", "is normal."])
    assert values[0] == values[1] == pytest.approx(1.0)
    assert reward.__name__ == "token"


def test_bad_kwargs_are_errors():
    with pytest.raises(ValueError, match="mean"):
        TokenReward(mean="harmonic")
    with pytest.raises(ValueError, match="one value per order"):
        TokenReward(weights=[0.5, 0.5])
    with pytest.raises(ValueError, match="sum to 1"):
        TokenReward(weights=[1, 1, 1, 1])
    with pytest.raises(ValueError, match="uniform"):
        TokenReward(mean="geometric", weights=[0.4, 0.2, 0.2, 0.2])
    with pytest.raises(ValueError, match="max_n"):
        TokenReward(max_n=0)
    with pytest.raises(ValueError, match="section"):
        TokenReward(sections=("finding", "think"))


def test_picklable_and_registered():
    from himed.rewards.registry import build_reward

    reward, info = build_reward("token", {"mean": "geometric"})
    assert isinstance(reward, TokenReward) and info.level == "low" and info.weight == 1.0
    reward(["heart normal"], reference=["heart normal"])
    clone = pickle.loads(pickle.dumps(reward))
    assert clone(["heart normal"], reference=["heart normal"]) == reward(["heart normal"], reference=["heart normal"])


token_lists = st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=12).map(tuple)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(token_lists, token_lists), max_size=12), st.integers(1, 5))
def test_batched_counts_equal_the_per_pair_precision(pairs, max_n):
    candidates = [c for c, _ in pairs]
    references = [r for _, r in pairs]
    if pairs and len(pairs) > 2:
        references[1] = references[0]  # shared references, as in a GRPO group
        candidates[-1] = (*candidates[-1], "never-in-a-reference")
    clipped, totals = clipped_counts(candidates, references, max_n)
    assert clipped.shape == totals.shape == (len(pairs), max_n)
    for i, (candidate, reference) in enumerate(zip(candidates, references, strict=True)):
        for n in range(1, max_n + 1):
            assert totals[i, n - 1] == max(len(candidate) - n + 1, 0)
            expected = clipped_precision(candidate, reference, n)
            got = clipped[i, n - 1] / totals[i, n - 1] if totals[i, n - 1] else 0.0
            assert got == pytest.approx(expected, abs=1e-12)


def test_batched_counts_fall_back_when_codes_could_overflow():
    reference = tuple(f"w{i}" for i in range(50_000))  # base**4 > 2**62: n-gram codes would not fit in int64
    candidate = reference[10:20] + ("w5", "w5")
    assert clipped_counts([candidate], [reference], 4) is None
    [parts] = TokenReward().score([" ".join(candidate)], [" ".join(reference)])
    assert parts == token_score(candidate, reference, (0.25,) * 4)
    assert parts["p1"] == pytest.approx(11 / 12)


def test_batched_counts_of_an_empty_batch():
    clipped, totals = clipped_counts([], [], 4)
    assert clipped.shape == (0, 4) and totals.shape == (0, 4)
    assert TokenReward().score([], []) == []
