import math

import pytest

from himed.rewards.guards import (
    KeywordStuffingGuard,
    LengthGuard,
    RepetitionGuard,
    keyword_mentions,
    load_keyword_terms,
)
from himed.rewards.registry import build_reward, resolve_reward

REF = "The heart is enlarged. There is a small left pleural effusion. No pneumothorax."
PROSE = "Mild cardiomegaly. Small left pleural effusion without pneumothorax. Lungs are otherwise clear."
STUFFED = "Cardiomegaly, pleural effusion, pneumothorax, edema, atelectasis, consolidation, pneumonia, opacity, nodule, mass, fracture, emphysema."


def wrap(finding, impression="Findings as above."):
    return f"<think>x</think><finding>{finding}</finding><impression>{impression}</impression>"


@pytest.mark.parametrize(("name", "weight"), [("repetition", 1.0), ("keyword_stuffing", 1.0), ("length", 0.5)])
def test_guards_are_registered_low_level(name, weight):
    info = resolve_reward(name)
    assert (info.level, info.weight) == ("low", weight)


def test_repetition_penalises_repeated_sentences_and_ngrams():
    guard = RepetitionGuard()
    normal, looped, ngram_loop = guard.score_completions(
        [wrap(PROSE), wrap("The heart is enlarged. " * 10), wrap("no acute process " * 12)]
    )
    assert normal == {"value": 0.0, "sentence_repeat": 0.0, "ngram_repeat": 0.0}
    # 10 copies of a sentence + the impression: 9 of 11 sentences repeat an earlier one.
    assert looped["sentence_repeat"] == pytest.approx(9 / 11)
    assert looped["value"] == pytest.approx(-(max(looped["sentence_repeat"], looped["ngram_repeat"]) - 0.1) / 0.9)
    assert looped["value"] < -0.8
    assert ngram_loop["sentence_repeat"] == 0.0 and ngram_loop["ngram_repeat"] > 0.8
    assert -1.0 <= ngram_loop["value"] < -0.7


def test_repetition_tolerance_and_validation():
    text = wrap("a b c d. a b c d. e f g h. i j k l. m n o p. q r s t.")  # 1 of 7 sentences repeats
    strict, lenient = RepetitionGuard(tolerance=0.0), RepetitionGuard(tolerance=0.5)
    assert strict([text])[0] < 0
    assert lenient([text]) == [0.0]
    for bad in ({"n": 0}, {"tolerance": 1.0}, {"tolerance": -0.1}, {"n": True}):
        with pytest.raises(ValueError, match="repetition reward"):
            RepetitionGuard(**bad)


def test_keyword_mentions_take_the_longest_term():
    terms = load_keyword_terms(["pleural effusion", "effusion", "pleural", "heart"])
    assert keyword_mentions(("small", "pleural", "effusion", "and", "effusion"), terms, [1, 2]) == 2
    assert keyword_mentions(("heart", "heart", "pleural"), terms, [1, 2]) == 2


def test_keyword_stuffing_penalises_lists_not_prose():
    guard = KeywordStuffingGuard()
    prose, stuffed, empty_reference = guard.score_completions(
        [wrap(PROSE), wrap(STUFFED, "Cardiomegaly."), wrap(STUFFED)], reference=[REF, REF, " "]
    )
    assert prose["value"] == 0.0
    assert prose["density"] < 0.5
    assert stuffed["density"] > 0.8
    allowed = max(1.5 * stuffed["reference_density"], 0.5)
    assert stuffed["value"] == pytest.approx(-min(1.0, (stuffed["density"] - allowed) / (1 - allowed)))
    assert stuffed["value"] < -0.5
    assert empty_reference == {"value": None, "density": None, "reference_density": None}


def test_keyword_stuffing_accepts_a_list_or_a_file(tmp_path):
    listed = KeywordStuffingGuard(keywords=["effusion", "edema"], floor=0.2)
    assert listed.density("effusion edema") == 1.0
    path = tmp_path / "kw.txt"
    path.write_text("# comment\neffusion\n\nedema  # inline\n")
    assert KeywordStuffingGuard(keywords=str(path)).terms == listed.terms
    (tmp_path / "bad.txt").write_text("# only punctuation\n---\n")
    with pytest.raises(ValueError, match="no keyword with an"):
        KeywordStuffingGuard(keywords=str(tmp_path / "bad.txt"))
    with pytest.raises(ValueError, match="does not exist"):
        KeywordStuffingGuard(keywords=str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="factor must be a number >= 1"):
        KeywordStuffingGuard(factor=0.5)


def test_length_guard_band_and_penalty_shape():
    guard = LengthGuard()  # reference has 13 tokens
    ref_tokens = 13
    short = " ".join(["word"] * 3)
    long = " ".join(["word"] * (ref_tokens * 4))
    huge = " ".join(["word"] * (ref_tokens * 20))
    values = guard([wrap(PROSE, "x"), wrap(short, "y"), wrap(long, "z"), wrap(huge, "w"), ""], reference=[REF] * 5)
    assert values[0] == 0.0
    assert values[1] == pytest.approx(-math.log(0.5 / (4 / 13)) / math.log(4))
    assert values[2] == pytest.approx(-math.log((53 / 13) / 2.0) / math.log(4))
    assert values[3] == -1.0
    assert values[4] == -1.0  # empty candidate
    assert guard(["x"], reference=[""]) == [None]
    with pytest.raises(ValueError, match="low <= 1 <= high"):
        LengthGuard(low=1.5)
    with pytest.raises(ValueError, match="full must be > 1"):
        LengthGuard(full=1.0)


def test_repetition_takes_an_alias_and_needs_no_reference():
    reward, _ = build_reward("repetition", alias="repetition_monitor")
    assert reward.__name__ == "repetition_monitor"
    assert reward(["<think></think>"]) == [0.0]  # no reference column needed
