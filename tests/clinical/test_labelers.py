"""The labeler registry: names, caching, argument checks, duplicate registration."""

from __future__ import annotations

import pytest

from himed.clinical import labelers
from himed.clinical.labelers import Labeler, available_labelers, clear_labeler_cache, get_labeler, register_labeler
from himed.clinical.rules import ChexpertRuleLabeler


def test_rules_is_the_default_and_is_cached():
    clear_labeler_cache()
    first = get_labeler()
    assert isinstance(first, ChexpertRuleLabeler) and first.name == "rules"
    assert get_labeler("rules") is first
    assert isinstance(first, Labeler)
    assert first.label(["No effusion.", ""]) == [{"Pleural Effusion": 0, "No Finding": 1}, {"No Finding": 1}]


def test_known_names_and_unknown_name_error():
    assert {"rules", "chexbert"} <= set(available_labelers())
    with pytest.raises(ValueError, match=r"unknown labeler 'bogus'; available: .*chexbert.*rules"):
        get_labeler("bogus")


def test_rules_rejects_arguments():
    with pytest.raises(ValueError, match="takes no arguments, got: checkpoint"):
        get_labeler("rules", checkpoint="x")


def test_chexbert_without_files_explains_the_setup():
    with pytest.raises(ValueError, match="chexbert.pth"):
        get_labeler("chexbert")


def test_registering_a_labeler_needs_no_central_edit(monkeypatch):
    monkeypatch.setattr(labelers, "_FACTORIES", dict(labelers._FACTORIES))
    monkeypatch.setattr(labelers, "_CACHE", {})
    built = []

    class Constant:
        name = "constant"

        def __init__(self, value: int) -> None:
            self.value = value
            built.append(value)

        def label(self, texts):
            return [{"Edema": self.value} for _ in texts]

    register_labeler("constant")(Constant)
    assert get_labeler("constant", value=1).label(["a", "b"]) == [{"Edema": 1}, {"Edema": 1}]
    get_labeler("constant", value=1)
    get_labeler("constant", value=0)
    assert built == [1, 0]  # one instance per distinct arguments
    with pytest.raises(ValueError, match="already registered"):
        register_labeler("constant")(Constant)


def test_unhashable_arguments_are_cached_by_value(monkeypatch):
    monkeypatch.setattr(labelers, "_FACTORIES", dict(labelers._FACTORIES))
    monkeypatch.setattr(labelers, "_CACHE", {})

    class WithConfig:
        name = "with_config"

        def __init__(self, config: dict) -> None:
            self.config = config

        def label(self, texts):
            return [{} for _ in texts]

    register_labeler("with_config")(WithConfig)
    first = get_labeler("with_config", config={"a": [1, 2]})
    assert get_labeler("with_config", config={"a": [1, 2]}) is first
    assert get_labeler("with_config", config={"a": [1, 3]}) is not first


def test_observation_sets_and_labeler_checks_have_one_source():
    from himed.clinical.consistency import CLASH_OBSERVATION_SETS
    from himed.clinical.labelers import check_labeler
    from himed.clinical.observations import (
        CHEXBERT_OBSERVATIONS,
        FIVE_OBSERVATIONS,
        NO_FINDING,
        observation_set,
    )

    assert observation_set("five") == FIVE_OBSERVATIONS
    assert observation_set("all") == CHEXBERT_OBSERVATIONS
    assert CLASH_OBSERVATION_SETS["all"] == tuple(o for o in CHEXBERT_OBSERVATIONS if o != NO_FINDING)
    with pytest.raises(ValueError, match="clinical reward: observations must be one of five, all, got 'six'"):
        observation_set("six", "clinical reward")
    assert check_labeler("rules", "x") == "rules"
    with pytest.raises(ValueError, match="judge: unknown labeler 'nope'; available: .*rules"):
        check_labeler("nope", "judge")
