import asyncio
import inspect
import pickle
import textwrap

import pytest

from himed.rewards import registry
from himed.rewards.base import Reward
from himed.rewards.registry import (
    AsyncBoundReward,
    BoundReward,
    build_reward,
    register_reward,
    registered_names,
    resolve_reward,
)


@pytest.fixture
def isolated_registry(monkeypatch):
    """A copy of the registry, so that test registrations do not leak into other tests."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = "registry_test_rewards"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from himed.rewards.base import Reward

            def char_count(completions, scale=1.0, **columns):
                return [scale * len(c) for c in completions]

            async def async_reward(completions, **columns):
                return [1.0 for _ in completions]

            class Namespace:
                @staticmethod
                def nested(completions, **columns):
                    return [0.0 for _ in completions]

            class Matches(Reward):
                name = "matches"
                level = "high"
                weight = 0.3

                def __init__(self, bonus=0.0, **kwargs):
                    super().__init__(**kwargs)
                    self.bonus = bonus

                def score(self, texts, references, **columns):
                    return [{"value": float(t == r) + self.bonus, "exact": float(t == r)} for t, r in zip(texts, references)]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_builtin_rewards_are_registered():
    names = registered_names()
    assert {"format", "clinical", "consistency", "repetition", "keyword_stuffing", "length"} <= set(names)
    assert names == sorted(names)


def test_duplicate_registration_is_rejected(isolated_registry):
    with pytest.raises(
        ValueError, match="reward name 'format' is already registered by himed.rewards.format.FormatReward"
    ):
        register_reward("format")(lambda completions, **kw: [])

    @register_reward("fresh_test_reward", level="high", weight=0.2)
    def fresh(completions, **kwargs):
        return [1.0] * len(completions)

    assert resolve_reward("fresh_test_reward").level == "high"
    with pytest.raises(ValueError, match="already registered"):
        register_reward("fresh_test_reward")(fresh)


def test_bad_level_is_rejected():
    with pytest.raises(ValueError, match="level must be one of"):
        register_reward("x", level="middle")


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as error:
        resolve_reward("tokne")
    message = str(error.value)
    assert "unknown reward 'tokne'" in message
    for name in registered_names():
        assert name in message
    assert "package.module:function" in message


def test_dotted_path_to_a_function(user_module):
    info = resolve_reward(f"{user_module}:char_count")
    assert (info.name, info.level, info.weight) == ("char_count", "low", 1.0)
    reward, _ = build_reward(f"{user_module}:char_count", {"scale": 2.0}, alias="chars")
    assert isinstance(reward, BoundReward) and reward.__name__ == "chars"
    assert reward(["abc", ""]) == [6.0, 0.0]
    clone = pickle.loads(pickle.dumps(reward))
    assert clone(["ab"]) == [4.0] and clone.__name__ == "chars"
    nested, _ = build_reward(f"{user_module}:Namespace.nested")
    assert nested(["a"]) == [0.0] and nested.__name__ == "nested"


def test_dotted_path_to_a_reward_class(user_module):
    info = resolve_reward(f"{user_module}:Matches")
    assert (info.name, info.level, info.weight) == ("Matches", "high", 0.3)
    reward, _ = build_reward(f"{user_module}:Matches", {"bonus": 0.5}, alias="match")
    assert isinstance(reward, Reward) and reward.__name__ == "match"
    assert reward(["a", "b"], reference=["a", "c"]) == [1.5, 0.5]
    assert reward.score_completions(["a"], reference=["a"]) == [{"value": 1.5, "exact": 1.0}]
    with pytest.raises(ValueError, match="reward 'match': bad kwargs \\['bonsu'\\]"):
        build_reward(f"{user_module}:Matches", {"bonsu": 1}, alias="match")


def test_async_functions_stay_async_for_trl(user_module):
    reward, _ = build_reward(f"{user_module}:async_reward")
    assert isinstance(reward, AsyncBoundReward)
    # TRL 1.16's is_async_callable looks at the instance's __call__ (importing TRL here would cost seconds).
    assert inspect.iscoroutinefunction(reward.__call__)
    assert asyncio.run(reward(["a", "b"])) == [1.0, 1.0]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_module_xyz:fn", "cannot import module 'no_such_module_xyz'"),
        ("himed.rewards.format:NoSuchThing", "has no attribute 'NoSuchThing'"),
        (":fn", "must look like 'package.module:attribute'"),
        ("himed.rewards.format:", "must look like 'package.module:attribute'"),
    ],
)
def test_bad_dotted_paths(path, message):
    with pytest.raises(ValueError, match=message):
        resolve_reward(path)


def test_entry_point_plugin_resolves(tmp_path, monkeypatch):
    (tmp_path / "himed_test_plugin.py").write_text(
        "level = 'low'\n\ndef plugin_reward(completions, **columns):\n    return [0.25 for _ in completions]\n"
    )
    dist_info = tmp_path / "himed_test_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: himed-test-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[himed.rewards]\nmy_plugin_reward = himed_test_plugin:plugin_reward\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    info = resolve_reward("my_plugin_reward")
    assert info.name == "my_plugin_reward"
    reward, _ = build_reward("my_plugin_reward")
    assert reward.__name__ == "my_plugin_reward"
    assert reward(["x", "y"]) == [0.25, 0.25]
    # Plugins are listed among the valid names when a name is unknown.
    with pytest.raises(ValueError, match="my_plugin_reward"):
        resolve_reward("not_a_reward_anywhere")


# --- one source for name, level, weight and parts ---------------------------------------------------------------


def test_a_class_registers_under_its_own_name_level_and_weight(isolated_registry):
    @register_reward
    class Echo(Reward):
        name = "echo_test_reward"
        level = "high"
        weight = 0.25
        parts = ("same",)

        def score(self, texts, references, **columns):
            return [{"value": float(t == r), "same": float(t == r)} for t, r in zip(texts, references, strict=True)]

    info = resolve_reward("echo_test_reward")
    assert (info.factory, info.level, info.weight) == (Echo, "high", 0.25)
    with pytest.raises(ValueError, match="already registered"):
        register_reward(Echo)


def test_a_class_registered_with_other_values_than_it_declares_is_rejected(isolated_registry):
    class Declared(Reward):
        name = "declared_test_reward"
        level = "low"
        weight = 1.0

        def score(self, texts, references, **columns):
            return [{"value": 0.0} for _ in texts]

    with pytest.raises(ValueError, match="bare @register_reward"):
        register_reward("declared_test_reward", weight=0.5)(Declared)
    register_reward("declared_test_reward", level="low", weight=1.0)(Declared)  # agreeing values are accepted
    with pytest.raises(TypeError, match="reward class"):
        register_reward(42)


@pytest.mark.parametrize("name", [n for n in registered_names() if n != "radgraph"])
def test_declared_parts_are_what_score_returns(name):
    # radgraph needs its own environment (tests/clinical/test_radgraph.py); its parts are RADGRAPH_LEVELS there.
    try:
        reward, info = build_reward(name)
    except ValueError as error:  # a reward that cannot run without configuration (a judge endpoint, weights)
        pytest.skip(f"{name} needs configuration to score: {error}")
    completion = "<think>x</think><finding>Small left pleural effusion.</finding><impression>Effusion.</impression>"
    scored = reward.score_completions([completion], reference=["Small left pleural effusion. Effusion."])
    assert tuple(key for key in scored[0] if key != "value") == info.factory.parts


def test_pickling_drops_lazy_attributes_without_touching_the_live_reward():
    reward, _ = build_reward("concept")
    reward.score_completions(["<finding>Effusion.</finding>"], reference=["Effusion."])
    scorer = reward._scorer
    assert scorer is not None and "_scorer" in type(reward).lazy_attributes
    copy = pickle.loads(pickle.dumps(reward))
    assert copy._scorer is None and reward._scorer is scorer
