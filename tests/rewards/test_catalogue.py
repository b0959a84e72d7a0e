"""``himed rewards`` and the generated table of docs/rewards.md: one generator, read from the registry."""

import inspect

import pytest

from himed.cli import main
from himed.rewards import registry
from himed.rewards.base import Reward
from himed.rewards.catalogue import (
    BEGIN_MARKER,
    END_MARKER,
    SCHEDULE_BEGIN_MARKER,
    SCHEDULE_END_MARKER,
    catalogue,
    format_default,
    markdown_table,
    replace_marked_block,
    schedule_table,
)
from himed.rewards.config import RewardsConfig
from himed.rewards.registry import register_reward, registered_names, resolve_reward

GUARDS_AND_BRIDGES = {"radgraph", "repetition", "keyword_stuffing", "length"}


def test_every_registered_reward_is_listed_with_its_registry_values():
    entries = {e.name: e for e in catalogue()}
    assert set(entries) == set(registered_names()) and GUARDS_AND_BRIDGES <= set(entries)
    for name, e in entries.items():
        info = resolve_reward(name)
        assert (e.level, e.weight, e.parts) == (info.level, info.weight, info.factory.parts)
        assert e.summary and "module docstring" not in e.summary


def test_listed_kwargs_are_accepted_by_a_reward_config_with_their_defaults():
    # The config validation rejects unknown kwargs, so a listed name that the reward does not take would fail here.
    entries = [{"name": e.name, "kwargs": dict(e.kwargs)} for e in catalogue()]
    config = RewardsConfig.from_dict({"rewards": entries})
    assert [entry.name for entry in config.rewards] == [e.name for e in catalogue()]
    token = next(e for e in catalogue() if e.name == "token")
    assert token.kwargs == {"max_n": 4, "weights": None, "mean": "arithmetic"}
    assert "sections" not in token.kwargs


def test_cli_lists_and_prints_the_markdown_table(capsys):
    assert main(["rewards"]) == 0
    listing = capsys.readouterr().out
    for e in catalogue():
        assert f"{e.name}  (level {e.level}, weight {e.weight})" in listing
    assert "max_n: 4" in listing and "parts:  p1, p2, p3, p4, bp" in listing
    assert main(["rewards", "--markdown"]) == 0
    assert capsys.readouterr().out == markdown_table()


def test_a_plugin_registered_reward_appears(monkeypatch, capsys):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_reward
    class Hedges(Reward):
        """Counts hedging words."""

        name = "hedges_test"
        level = "high"
        weight = 0.3
        parts = ("count",)

        def __init__(self, words: tuple = ("possible", "may"), **kwargs):
            super().__init__(**kwargs)

        def score(self, texts, references, **columns):
            return [{"value": 0.0, "count": 0.0} for _ in texts]

    assert main(["rewards", "--markdown"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "hedges_test" in line)
    assert row == (
        '| `hedges_test` | high | 0.3 | `words: ["possible", "may"]` | `hedges_test/count` | Counts hedging words. |'
    )


def test_update_rewrites_only_the_marked_block(tmp_path, capsys):
    page = tmp_path / "rewards.md"
    page.write_text(
        f"# Rewards\n\nintro\n\n{BEGIN_MARKER}\nold table\n{END_MARKER}\n\n"
        f"{SCHEDULE_BEGIN_MARKER}\nold schedules\n{SCHEDULE_END_MARKER}\n\nafter\n"
    )
    assert main(["rewards", "--update", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("# Rewards\n\nintro\n\n") and text.endswith(f"{SCHEDULE_END_MARKER}\n\nafter\n")
    assert markdown_table() in text and "old table" not in text
    assert schedule_table() in text and "old schedules" not in text
    assert main(["rewards", "--update", str(page)]) == 0
    assert "already up to date" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no catalogue markers"):
        replace_marked_block("no markers", "table", "x.md")
    (tmp_path / "plain.md").write_text("nothing\n")
    assert main(["rewards", "--update", str(tmp_path / "plain.md")]) == 2


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "null"), (True, "true"), (4, "4"), (0.5, "0.5"), ("nltk", "nltk"), ((1, 2), "[1, 2]")],
)
def test_defaults_read_as_yaml(value, text):
    assert format_default(value) == text
    assert format_default(inspect.Parameter.empty) == "(required)"


def test_schedule_table_lists_every_schedule_with_its_defaults():
    from himed.rewards.schedules import build_schedule, schedule_names

    table = schedule_table()
    for name in schedule_names():
        assert f"| `{name}` |" in table
    assert "`total_steps` (default 10000)" in table and "`alpha_min` (default 0.1)" in table
    assert "`alpha_low` (default 0.5)" in table
    # The defaults shown are what a schedule built with no parameters uses.
    assert build_schedule({"name": "linear"}).params() == {"name": "linear", "total_steps": 10000, "alpha_min": 0.1}
    assert build_schedule({"name": "constant"}).params() == {"name": "constant", "alpha_low": 0.5}
    assert "`boundaries` (required)" in table


def test_green_parts_are_the_judge_error_categories():
    from himed.rewards.green import GreenReward
    from himed.verifiers.green import ERROR_NAMES

    assert GreenReward.parts == ("matched", "significant_errors", *(f"significant/{n}" for n in ERROR_NAMES))
