import pytest

from himed.clinical.consistency import count_clashes
from himed.rewards.consistency import ConsistencyReward
from himed.rewards.registry import build_reward, resolve_reward


def wrap(finding, impression):
    return f"<think>x</think><finding>{finding}</finding><impression>{impression}</impression>"


def test_registered_low_with_weight_half():
    info = resolve_reward("consistency")
    assert (info.level, info.weight) == ("low", 0.5)


def test_count_clashes_only_counts_positive_against_negative():
    finding = {"Cardiomegaly": 1, "Edema": 0, "Pneumothorax": -1, "Atelectasis": 1}
    impression = {"Cardiomegaly": 0, "Edema": 1, "Pneumothorax": 0}
    assert count_clashes(finding, impression, ["Cardiomegaly", "Edema", "Pneumothorax", "Atelectasis"]) == (2, 2)


def test_value_is_one_over_one_plus_clashes():
    reward = ConsistencyReward()
    rows = reward.score_completions(
        [
            wrap("The heart is enlarged. Small pleural effusion.", "Cardiomegaly and pleural effusion."),
            wrap("The heart is enlarged.", "Normal heart size."),
            wrap("The heart is enlarged. No pleural effusion.", "Large pleural effusion. Normal heart size."),
            wrap("The heart is enlarged.", "No acute findings."),  # omission is not a clash
        ]
    )
    assert [row["value"] for row in rows] == [1.0, 0.5, pytest.approx(1 / 3), 1.0]
    assert [row["clashes"] for row in rows] == [0.0, 1.0, 2.0, 0.0]
    assert rows[0]["shared"] == 2.0


def test_padding_the_impression_with_agreeing_negatives_does_not_dilute_a_clash():
    reward = ConsistencyReward()
    base = wrap("The heart is enlarged. No pneumothorax. No edema.", "Normal heart size.")
    padded = wrap("The heart is enlarged. No pneumothorax. No edema.", "Normal heart size. No pneumothorax. No edema.")
    assert reward([base, padded]) == [0.5, 0.5]


def test_unparsed_completion_is_none_and_counted():
    reward = ConsistencyReward()
    assert reward(["The heart is enlarged. Normal heart size.", ""]) == [None, None]
    assert reward.describe()["unparsed"] == 2


def test_needs_an_impression_section():
    with pytest.raises(ValueError, match="drop it for findings-only data"):
        build_reward("consistency", {"sections": ["think", "finding"]})
    with pytest.raises(ValueError, match="observations must be one of five, all"):
        ConsistencyReward(observations="14")
    with pytest.raises(ValueError, match="the rules labeler takes no arguments"):
        ConsistencyReward(labeler_kwargs={"device": "cpu"})


def test_five_observations_ignore_others():
    clash_on_pneumothorax = wrap("Small pneumothorax.", "No pneumothorax.")
    assert ConsistencyReward(observations="all")([clash_on_pneumothorax]) == [0.5]
    assert ConsistencyReward(observations="five")([clash_on_pneumothorax]) == [1.0]
