import json
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himed.clinical.observations import CHEXBERT_OBSERVATIONS, FIVE_OBSERVATIONS
from himed.rewards.clinical import ClinicalReward, label_agreement
from himed.rewards.registry import build_reward, resolve_reward


def wrap(finding, impression):
    return f"<think>x</think><finding>{finding}</finding><impression>{impression}</impression>"


REF = "The heart is enlarged. There is a small left pleural effusion. No pneumothorax."


class CountingLabeler:
    """Wraps the rules labeler to count batched calls."""

    def __init__(self, inner):
        self.inner, self.calls, self.texts = inner, 0, 0

    def label(self, texts):
        self.calls += 1
        self.texts += len(texts)
        return self.inner.label(texts)


def test_registered_with_design_defaults():
    info = resolve_reward("clinical")
    assert (info.level, info.weight) == ("low", 1.0)
    reward = ClinicalReward()
    assert (reward.labeler_name, reward.metric, reward.observations, reward.uncertain, reward.reference_labels) == (
        "rules",
        "accuracy",
        FIVE_OBSERVATIONS,
        "positive",
        "report",
    )


def test_label_agreement_definitions():
    five = FIVE_OBSERVATIONS
    candidate = {"Cardiomegaly": 1, "Edema": -1, "Pleural Effusion": 0}
    reference = {"Cardiomegaly": 1, "Pleural Effusion": 1, "Atelectasis": 0}
    # positive view: candidate {Cardiomegaly, Edema}, reference {Cardiomegaly, Pleural Effusion}
    assert label_agreement(candidate, reference, five) == {"accuracy": 3 / 5, "f1": 2 * 1 / 4}
    # uncertain negative: candidate {Cardiomegaly}
    assert label_agreement(candidate, reference, five, "negative") == {"accuracy": 4 / 5, "f1": 2 * 1 / 3}
    # ignore drops Edema (uncertain in the candidate): 3 of 4 agree
    assert label_agreement(candidate, reference, five, "ignore") == {"accuracy": 3 / 4, "f1": 2 * 1 / 3}
    assert label_agreement({}, {}, five) == {"accuracy": 1.0, "f1": 1.0}  # 0/0 F1: agreement on nothing present
    assert label_agreement({"Edema": 1}, {}, five)["f1"] == 0.0
    assert label_agreement({"Edema": -1}, {"Edema": -1}, ["Edema"], "ignore") == {"accuracy": None, "f1": 1.0}


def test_scores_against_the_labelled_reference_text():
    reward = ClinicalReward()
    agree = wrap("Enlarged heart. Small left pleural effusion.", "Cardiomegaly with effusion.")
    miss = wrap("Normal heart size. No effusion.", "Normal chest.")
    rows = reward.score_completions([agree, miss, "cardiomegaly"], reference=[REF] * 3)
    assert rows[0] == {"value": 1.0, "accuracy": 1.0, "f1": 1.0}
    assert rows[1] == {"value": 3 / 5, "accuracy": 3 / 5, "f1": 0.0}
    assert rows[2]["accuracy"] == 4 / 5  # lenient extraction of an untagged completion
    f1_reward, _ = build_reward("clinical", {"metric": "f1"})
    assert f1_reward([agree, miss], reference=[REF, REF]) == [1.0, 0.0]


def test_observations_all_compares_fourteen():
    reward = ClinicalReward(observations="all")
    (row,) = reward.score_completions(
        [wrap("Enlarged heart. Left pleural effusion.", "Cardiomegaly.")], reference=[REF]
    )
    # Pneumothorax: reference 0, candidate not mentioned -> both not positive; every one of the 14 agrees.
    assert row["accuracy"] == 1.0


def test_batch_is_labelled_once_with_shared_references_deduplicated():
    reward = ClinicalReward()
    counting = CountingLabeler(reward.labeler)
    reward._labeler = counting
    completions = [wrap(f"Heart size {i}.", "Normal.") for i in range(4)] + [wrap("Heart size 0.", "Normal.")]
    reward(completions, reference=[REF] * 5)
    assert counting.calls == 1
    assert counting.texts == 4 + 1  # 4 distinct candidates + 1 reference


def test_row_labels_in_every_form_and_fallback():
    reward = ClinicalReward(reference_labels="row")
    completion = wrap("Enlarged heart.", "Cardiomegaly.")
    arrow_struct = {name: None for name in FIVE_OBSERVATIONS} | {"Cardiomegaly": 1}
    rows = reward.score_completions(
        [completion] * 5,
        reference=[REF] * 5,
        labels=[
            {"Cardiomegaly": 1},
            json.dumps({"Cardiomegaly": 1, "Edema": 1}),
            arrow_struct,
            None,  # no labels: the reference text is labelled (Cardiomegaly and Pleural Effusion)
            {"Cardiomegaly": 7},  # invalid: None
        ],
    )
    assert [row["value"] for row in rows] == [1.0, 4 / 5, 1.0, 4 / 5, None]
    assert reward.describe()["reference_label_fallbacks"] == 1
    assert reward.describe()["bad_row_labels"] == 1
    # No labels column at all: every row falls back.
    assert reward([completion], reference=[REF]) == [4 / 5]
    assert reward.describe()["reference_label_fallbacks"] == 2


def test_empty_reference_is_not_scored_and_empty_candidate_is():
    reward = ClinicalReward()
    assert reward(["cardiomegaly", ""], reference=["", "No acute findings."]) == [None, 1.0]


def test_bad_options_fail_at_construction():
    for kwargs, message in [
        ({"metric": "auc"}, "metric must be one of accuracy, f1"),
        ({"observations": "six"}, "observations must be one of five, all"),
        ({"uncertain": "maybe"}, "uncertain must be one of positive, negative, ignore"),
        ({"reference_labels": "csv"}, "reference_labels must be one of report, row"),
        ({"labeler": "magic"}, "unknown labeler 'magic'"),
        ({"labeler_kwargs": {"checkpoint": "x"}}, "the rules labeler takes no arguments"),  # built eagerly
    ]:
        with pytest.raises(ValueError, match=message):
            ClinicalReward(**kwargs)


def test_pickles_without_its_labeler():
    reward = ClinicalReward()
    reward([wrap("a", "b")], reference=[REF])
    assert reward._labeler is not None
    clone = pickle.loads(pickle.dumps(reward))
    assert clone._labeler is None
    assert clone([wrap("Enlarged heart.", "Effusion.")], reference=[REF]) == [1.0]


label_dicts = st.dictionaries(st.sampled_from(CHEXBERT_OBSERVATIONS), st.sampled_from([1, 0, -1]), max_size=8)


@settings(max_examples=100, deadline=None)
@given(a=label_dicts, b=label_dicts, uncertain=st.sampled_from(["positive", "negative", "ignore"]))
def test_label_agreement_is_symmetric_and_bounded(a, b, uncertain):
    forward = label_agreement(a, b, CHEXBERT_OBSERVATIONS, uncertain)
    assert forward == label_agreement(b, a, CHEXBERT_OBSERVATIONS, uncertain)
    assert 0.0 <= forward["f1"] <= 1.0
    assert forward["accuracy"] is None or 0.0 <= forward["accuracy"] <= 1.0
    assert label_agreement(a, a, CHEXBERT_OBSERVATIONS, uncertain)["f1"] == 1.0
