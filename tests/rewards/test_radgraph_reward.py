"""The radgraph reward through the real bridge and worker, with the stand-in radgraph package of the clinical tests."""

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

from himed.rewards.registry import build_reward

CLINICAL_TEST = Path(__file__).resolve().parents[1] / "clinical" / "test_radgraph.py"


@pytest.fixture(scope="module")
def fake_radgraph(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("radgraph_fakes", CLINICAL_TEST)
    fakes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fakes)
    root = tmp_path_factory.mktemp("fake_radgraph_reward")
    package = root / "site" / "radgraph"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from .core import RadGraph\n")
    (package / "core.py").write_text(textwrap.dedent(fakes.FAKE_PACKAGE))
    (package / "rewards.py").write_text(textwrap.dedent(fakes.FAKE_REWARDS))
    info = root / "site" / "radgraph-0.1.18.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: radgraph\nVersion: 0.1.18\n")
    (root / "cache" / "radgraph-xl").mkdir(parents=True)
    (root / "cache" / "radgraph-xl" / "config.json").write_text("{}")
    return root


def test_radgraph_reward_scores_levels_and_parts(fake_radgraph, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(fake_radgraph / "site"))
    reward, info = build_reward(
        "radgraph", {"radgraph_python": sys.executable, "model_cache_dir": str(fake_radgraph / "cache"), "timeout": 30}
    )
    assert (info.level, info.weight) == ("low", 1.0)
    completions = [
        "<think>x</think><finding>Heart enlarged.</finding><impression>Cardiomegaly.</impression>",
        "<finding>unrelated words</finding>",
    ]
    references = ["Heart enlarged. Cardiomegaly.", "Heart enlarged. Cardiomegaly."]
    rows = reward.score_completions(completions, reference=references)
    # The stand-in scores token F1 at `simple` and half of it at `partial` (the default level).
    assert rows[0]["simple"] == pytest.approx(1.0)
    assert rows[0]["value"] == rows[0]["partial"] == pytest.approx(0.5)
    assert rows[1]["value"] == 0.0
    assert reward(completions, reference=references) == [row["value"] for row in rows]


def test_radgraph_reward_needs_its_environment(monkeypatch):
    monkeypatch.delenv("HIMED_RADGRAPH_PYTHON", raising=False)
    with pytest.raises(ValueError, match="radgraph_python"):
        build_reward("radgraph")
    with pytest.raises(ValueError, match="reward_level"):
        build_reward("radgraph", {"radgraph_python": sys.executable, "reward_level": "best"})
