import pytest

from himed.rewards.format import FormatReward
from himed.rewards.registry import build_reward, resolve_reward

GOOD = "<think>heart wide</think>\n<finding>The heart is enlarged.</finding>\n<impression>Cardiomegaly.</impression>"


def test_registered_as_low_level_weight_one():
    info = resolve_reward("format")
    assert (info.factory, info.level, info.weight) == (FormatReward, "low", 1.0)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (GOOD, 1.0),
        ("  \n" + GOOD + "\n\n", 1.0),  # whitespace outside the tags is allowed
        ("Sure! " + GOOD, -1.0),
        (GOOD.replace("<think>heart wide</think>\n", ""), -1.0),
        (GOOD + "<finding>again</finding>", -1.0),
        (GOOD.replace("Cardiomegaly.", " "), -1.0),
        ("<finding>a <impression>b</impression></finding><think>c</think>", -1.0),
        ("", -1.0),
        ("The heart is enlarged.", -1.0),
    ],
)
def test_eq_7_plus_one_strict_parse_minus_one_otherwise(completion, expected):
    reward, _ = build_reward("format")
    assert reward([completion], reference=["ref"]) == [expected]


def test_sections_kwarg_changes_what_parses():
    findings_only = "<think>x</think><finding>Clear lungs.</finding>"
    default, _ = build_reward("format")
    short, _ = build_reward("format", {"sections": ["think", "finding"]})
    assert default([findings_only, GOOD]) == [-1.0, 1.0]
    assert short([findings_only, GOOD]) == [1.0, -1.0]


def test_conversational_completions_and_no_reference_column():
    reward, _ = build_reward("format")
    messages = [
        [{"role": "assistant", "content": GOOD}],
        [{"role": "assistant", "content": [{"type": "text", "text": "no"}]}],
    ]
    assert reward(messages) == [1.0, -1.0]  # format needs no reference


def test_bad_sections_fail_at_construction():
    with pytest.raises(ValueError, match="unknown section 'summary'"):
        FormatReward(sections=["think", "summary"])
