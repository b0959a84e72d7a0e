"""Property tests over every registered reward that runs offline: odd completions never crash a reward and every
value is a finite number or None.

The rewards are not listed here: each name in ``registered_names()`` is built with its default kwargs, and those
that cannot be built that way (they need a server, a checkpoint or other weights passed in the config) are skipped
with the reason. New rewards are covered as soon as they are registered.
"""

import asyncio
import inspect
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from himed.rewards.registry import build_reward, registered_names

GOOD = "<think>x</think><finding>The heart is enlarged.</finding><impression>Cardiomegaly.</impression>"
REFERENCES = [
    "The heart is enlarged. There is a small left pleural effusion. No pneumothorax.",
    "Lungs are clear. No acute cardiopulmonary process.",
    "Cœur élargi — épanchement pleural? 心脏增大。",  # non-ASCII reference
]

_BUILT: dict[str, object] = {}
_SKIPPED: dict[str, str] = {}


def _build(name):
    if name not in _BUILT and name not in _SKIPPED:
        try:
            _BUILT[name], _ = build_reward(name)
        except Exception as error:  # needs configuration this offline test cannot give it
            _SKIPPED[name] = f"{type(error).__name__}: {error}"
    if name in _SKIPPED:
        pytest.skip(f"reward {name!r} cannot be built with default kwargs offline: {_SKIPPED[name]}")
    return _BUILT[name]


def _call(reward, completions, **columns):
    result = reward(completions, **columns)
    if inspect.isawaitable(result):
        result = asyncio.run(result)
    return result


def _parts(reward, completions, **columns):
    scorer = getattr(reward, "score_completions", None)
    if scorer is None:
        return None
    result = scorer(completions, **columns)
    if inspect.isawaitable(result):
        result = asyncio.run(result)
    return result


def _check(reward, completions, references):
    # Reward.score_completions turns an exception into a batch of None and records its class: odd text must not
    # need that safety net (it would hide a bug as "could not score").
    errors_before = set(getattr(reward, "_logged_errors", ()))
    values = _call(reward, completions, reference=references)
    assert isinstance(values, list) and len(values) == len(completions)
    for value in values:
        assert value is None or (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ), f"{reward.__name__} returned {value!r}"
    parts = _parts(reward, completions, reference=references)
    if parts is not None:
        assert len(parts) == len(completions)
        for row in parts:
            assert "value" in row
            for key, value in row.items():
                if isinstance(value, float):
                    assert math.isfinite(value), f"{reward.__name__} part {key} = {value!r}"
    new_errors = set(getattr(reward, "_logged_errors", ())) - errors_before
    assert not new_errors, f"{reward.__name__} raised {sorted(new_errors)} inside score (see the log)"


TAGS = [
    "<think>",
    "</think>",
    "<finding>",
    "</finding>",
    "<impression>",
    "</impression>",
    "< finding >",
    "</ FINDING>",
    "<",
]
WORDS = ["heart", "enlarged", "no", "pleural", "effusion", "pneumothorax", "edema", ".", ",", "?", "cardiomegaly"]
fragments = st.one_of(
    st.sampled_from(TAGS),
    st.sampled_from(WORDS),
    st.text(max_size=20),  # arbitrary unicode, surrogates excluded by hypothesis
    st.text(st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp"]), max_size=10),  # control and space characters
    st.sampled_from([" ", "\n", "\t", "\r\n", "\x00", "\u200b", "\ufeff", "|||"]),
)
texts = st.lists(fragments, max_size=30).map(" ".join) | st.sampled_from(["", "   ", "\n\t ", GOOD, GOOD + GOOD])
messages = st.one_of(
    texts.map(lambda t: [{"role": "assistant", "content": t}]),
    texts.map(lambda t: [{"role": "assistant", "content": [{"type": "text", "text": t}]}]),
    texts.map(lambda t: [{"role": "user", "content": "ignored"}, {"role": "assistant", "content": t}]),
    st.just([]),
    st.just([{"role": "assistant"}]),
)
completions = st.lists(st.one_of(texts, messages), min_size=1, max_size=4)
NAMES = registered_names()


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=completions, reference=st.sampled_from(REFERENCES))
def test_odd_completions_score_finite_or_none(name, batch, reference):
    reward = _build(name)
    _check(reward, batch, [reference] * len(batch))


@pytest.mark.parametrize("name", NAMES)
def test_fixed_edge_cases(name):
    reward = _build(name)
    huge = GOOD[: -len("</impression>")] + " the heart is enlarged" * 2300 + "</impression>"  # ~50k characters
    assert len(huge) > 50_000
    cases = [
        "",
        "   \n\t",
        huge,
        "x" * 50_000,
        "<think>" * 50 + "<finding>" + "</finding>" * 20,  # unbalanced
        "<think><think>a</think></think><finding><finding>b</finding></finding><impression>c</impression>",
        "<finding>\x00\x01\x1b[31m\x7f</finding>",
        "\ud7ff\ue000\U0001f600 \u202e reversed \u0301",
        "<impression>only impression</impression>",
    ]
    _check(reward, cases, [REFERENCES[0]] * len(cases))
    conversational = [
        [{"role": "assistant", "content": GOOD}],
        [{"role": "assistant", "content": [{"type": "text", "text": GOOD}, {"type": "image"}]}],
        [{"role": "system", "content": "x"}],
    ]
    _check(reward, conversational, [REFERENCES[1]] * len(conversational))
