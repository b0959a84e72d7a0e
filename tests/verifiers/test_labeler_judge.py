"""LabelerJudge: the three axes from CheXpert-style labels, by hand-derived cases and with the rule labeler."""

import asyncio
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himed.clinical.observations import CHEXBERT_OBSERVATIONS, FIVE_OBSERVATIONS
from himed.verifiers.base import JudgeScore, build_judge, judge_backends
from himed.verifiers.labeler_judge import LabelerJudge, axes_from_labels


@pytest.mark.parametrize(
    "candidate, reference, expected",
    [
        # Same positive finding, nothing else: perfect.
        ({"Cardiomegaly": 1}, {"Cardiomegaly": 1}, (1.0, 1.0, 1.0)),
        # Both normal (No Finding derived on both sides): perfect.
        ({"Pneumothorax": 0}, {}, (1.0, 1.0, 1.0)),
        # Candidate says effusion absent, reference says present: contradicted (1 of 2 shared + the verdict, on
        # which both agree: abnormal), and missed.
        ({"Cardiomegaly": 1, "Pleural Effusion": 0}, {"Cardiomegaly": 1, "Pleural Effusion": 1}, (2 / 3, 1.0, 0.5)),
        # Hallucinated edema the reference never mentions: not a contradiction, but filler (precision 1/2).
        ({"Cardiomegaly": 1, "Edema": 1}, {"Cardiomegaly": 1}, (1.0, 0.5, 1.0)),
        # Candidate silent (normal by default), reference abnormal: the verdict is contradicted, nothing else is
        # shared, so accuracy 0 (it was a vacuous 1.0 before the verdict was compared).
        ({}, {"Cardiomegaly": 1}, (0.0, 0.0, 0.0)),
        # Candidate only negatives (a normal study), reference abnormal: the normal claim contradicts its findings;
        # the agreeing negative counts for it (1 of 2).
        ({"Pleural Effusion": 0}, {"Cardiomegaly": 1, "Pleural Effusion": 0}, (0.5, 0.0, 0.0)),
        # Both abnormal, no observation in common: nothing contradicted (a wrong finding is filler and an omission).
        ({"Edema": 1}, {"Cardiomegaly": 1}, (1.0, 0.0, 0.0)),
        # A device alone is still a normal study, as for No Finding.
        ({"Support Devices": 1}, {}, (1.0, 0.5, 1.0)),
        # Uncertain counts positive by default: agrees with a positive, contradicts an explicit negative.
        ({"Edema": -1}, {"Edema": 1}, (1.0, 1.0, 1.0)),
        ({"Edema": -1}, {"Edema": 0}, (0.0, 0.0, 0.0)),
    ],
)
def test_axes_from_labels_by_hand(candidate, reference, expected):
    assert axes_from_labels(candidate, reference).as_dict() == pytest.approx(JudgeScore(*expected).as_dict())


def test_uncertain_policies_and_observation_sets():
    assert axes_from_labels({"Edema": -1}, {"Edema": 0}, uncertain="negative") == JudgeScore(1.0, 1.0, 1.0)
    # ignore: the uncertain observation leaves the comparison; what is left is normal vs normal.
    assert axes_from_labels({"Edema": -1}, {"Edema": 1}, uncertain="ignore") == JudgeScore(1.0, 1.0, 1.0)
    # Restricted to the five: a fracture is invisible, so "fracture" vs "normal" agrees on the five.
    assert axes_from_labels({"Fracture": 1}, {}, FIVE_OBSERVATIONS) == JudgeScore(1.0, 1.0, 1.0)
    assert axes_from_labels({"Fracture": 1}, {}) == JudgeScore(0.0, 0.0, 0.0)  # a finding vs a normal study
    # Silence against findings scores 0 on the five too (the verdict does not need No Finding in the set).
    assert axes_from_labels({}, {"Edema": 1}, FIVE_OBSERVATIONS) == JudgeScore(0.0, 0.0, 0.0)


def test_with_the_rule_labeler_on_report_text():
    judge = build_judge({"backend": "labeler"})
    assert isinstance(judge, LabelerJudge) and "labeler" in judge_backends() and "openai" in judge_backends()
    pairs = [
        ("The heart is enlarged. There is a small left pleural effusion.", "Cardiomegaly. Small left effusion."),
        ("The heart is enlarged. No pleural effusion.", "Cardiomegaly. Small left pleural effusion."),
        ("No acute cardiopulmonary process.", "Cardiomegaly. Small left pleural effusion."),
        ("Lungs are clear. No pneumothorax.", "No acute cardiopulmonary abnormality."),
    ]
    results = judge.score_batch_sync(pairs)
    assert results[0] == JudgeScore(1.0, 1.0, 1.0)
    assert results[1].accuracy < 1.0 and results[1].completeness == 0.5  # the effusion is contradicted and missed
    # A normal template against findings: 0 on every axis (its normal claim contradicts them).
    assert results[2] == JudgeScore(0.0, 0.0, 0.0)
    assert results[3] == JudgeScore(1.0, 1.0, 1.0)
    # The async interface gives the same answers (through a worker thread).
    assert asyncio.run(judge.score_batch(pairs)) == results
    metrics = judge.metrics()
    assert metrics["judge/pairs"] == 8 and metrics["judge/scored"] == 8 and metrics["judge/failures"] == 0


class _FlakyLabeler:
    """Labels like the rules labeler but raises on any batch holding the word ``boom``."""

    name = "flaky"

    def label(self, texts):
        if any("boom" in text for text in texts):
            raise RuntimeError("labeler crashed")
        return [{"Cardiomegaly": 1} if "heart" in text else {} for text in texts]


def test_a_text_that_breaks_the_labeler_costs_only_its_pairs():
    judge = LabelerJudge()
    judge._labeler = _FlakyLabeler()
    results = judge.score_batch_sync([("boom", "big heart"), ("big heart", "big heart"), ("clear", "boom")])
    assert results == [None, JudgeScore(1.0, 1.0, 1.0), None]
    assert judge.metrics()["judge/failures/labeler"] == 2


def test_config_errors_and_pickling():
    with pytest.raises(ValueError, match="unknown labeler"):
        build_judge({"backend": "labeler", "labeler": "nope"})
    with pytest.raises(ValueError, match="unknown keys \\['observation'\\]"):
        build_judge({"backend": "labeler", "observation": "five"})
    with pytest.raises(ValueError, match="unknown judge backend 'gpt'"):
        build_judge({"backend": "gpt"})
    with pytest.raises(ValueError, match="needs a 'backend'"):
        build_judge({"labeler": "rules"})
    judge = build_judge({"backend": "labeler", "observations": "five", "uncertain": "negative"})
    clone = pickle.loads(pickle.dumps(judge))
    assert clone.score_batch_sync([("Cardiomegaly.", "Cardiomegaly.")]) == [JudgeScore(1.0, 1.0, 1.0)]
    assert clone.describe()["judge/observations"] == "five" and clone.prompt_hash == "labeler-axes-v2"


_LABELS = st.dictionaries(
    st.sampled_from([name for name in CHEXBERT_OBSERVATIONS if name != "No Finding"]), st.sampled_from([1, 0, -1])
)


@settings(max_examples=300, deadline=None)
@given(candidate=_LABELS, reference=_LABELS, uncertain=st.sampled_from(["positive", "negative", "ignore"]))
def test_axes_are_bounded_and_mirror_each_other(candidate, reference, uncertain):
    forward = axes_from_labels(candidate, reference, uncertain=uncertain)
    backward = axes_from_labels(reference, candidate, uncertain=uncertain)
    assert all(0.0 <= value <= 1.0 for value in forward.as_dict().values())
    # Contradiction is symmetric; the candidate's precision is the reference's recall and vice versa.
    assert forward.accuracy == backward.accuracy
    assert forward.relevance == pytest.approx(backward.completeness)
    assert forward.completeness == pytest.approx(backward.relevance)
    assert axes_from_labels(candidate, candidate, uncertain=uncertain) == JudgeScore(1.0, 1.0, 1.0)
