"""The semantic reward (HiMed-RL eq. 6): values and parts, None on judge failure, logging, TRL async detection."""

import asyncio
import importlib.util
import inspect
import json
import pickle
from pathlib import Path

import pytest

from himed.rewards.registry import build_reward, resolve_reward
from himed.rewards.semantic import AsyncSemanticReward, SemanticReward
from himed.verifiers.base import JudgeConfigError


def is_async_callable(function) -> bool:
    """TRL 1.16's ``trl.trainer.utils.is_async_callable`` (copied: importing trl takes ~40 s on a busy CPU box;
    ``test_trl_itself_sees_the_concurrent_reward_as_async`` checks the real one under ``-m slow``)."""
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(function.__call__)


REPORT = "<think>heart looks big</think><finding>The heart is enlarged.</finding><impression>Cardiomegaly.</impression>"

# The scripted OpenAI-compatible server lives in tests/verifiers/conftest.py; load it by path (importlib mode).
_spec = importlib.util.spec_from_file_location(
    "himed_test_judge_server", Path(__file__).resolve().parents[1] / "verifiers" / "conftest.py"
)
judge_server_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(judge_server_module)


@pytest.fixture
def server():
    server = judge_server_module.ScriptedJudgeServer(lifetime=60.0).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def openai_config(server, monkeypatch):
    monkeypatch.setenv("HIMED_TEST_SEMANTIC_KEY", "sk-semantic-test-0000")
    return {
        "backend": "openai",
        "base_url": server.url,
        "model": "test-judge",
        "api_key_env": "HIMED_TEST_SEMANTIC_KEY",
        "timeout": 5.0,
        "max_retries": 1,
        "backoff_base": 0.01,
    }


def test_registered_at_the_high_level_with_the_labeler_judge_by_default():
    info = resolve_reward("semantic")
    assert info.level == "high" and info.weight == 1.0
    reward, _ = build_reward("semantic", {})
    assert reward.describe()["judge/backend"] == "labeler" and reward.prompt_hash == "labeler-axes-v2"
    assert not is_async_callable(reward)  # TRL calls it synchronously by default


def test_values_and_parts_with_the_labeler_judge():
    reward, _ = build_reward("semantic", {})
    references = ["Cardiomegaly.", "Cardiomegaly. Small left pleural effusion.", "Cardiomegaly.", ""]
    completions = [REPORT, "The heart is enlarged. No pleural effusion.", "", REPORT]
    rows = reward.score_completions(completions, reference=references)
    assert rows[0] == {"value": 3.0, "accuracy": 1.0, "relevance": 1.0, "completeness": 1.0}
    # The effusion is contradicted (1 of effusion, cardiomegaly and the abnormal verdict) and missed.
    assert rows[1]["completeness"] == 0.5 and rows[1]["accuracy"] == pytest.approx(2 / 3)
    assert rows[1]["value"] == pytest.approx(2.0 + 2 / 3 - 0.5)
    # An empty report is a real (bad) answer: 0 on every axis, without asking the judge.
    assert rows[2] == {"value": 0.0, "accuracy": 0.0, "relevance": 0.0, "completeness": 0.0}
    # An empty reference is a data error: not scored.
    assert rows[3] == {"value": None, "accuracy": None, "relevance": None, "completeness": None}
    assert reward(completions, reference=references) == [3.0, pytest.approx(13 / 6), 0.0, None]

    mean, _ = build_reward("semantic", {"aggregate": "mean"})
    assert mean([REPORT], reference=["Cardiomegaly."]) == [1.0]
    conversational = [[{"role": "assistant", "content": [{"type": "text", "text": REPORT}]}]]
    assert mean(conversational, findings=["The heart is enlarged."], impression=["Cardiomegaly."]) == [1.0]


def test_lenient_candidate_reaches_the_judge_without_tags(server, openai_config):
    reward, _ = build_reward("semantic", {"judge": openai_config})
    reward([REPORT], reference=["Cardiomegaly."])
    assert server.requests[0]["candidate"] == "The heart is enlarged. Cardiomegaly."


def test_judge_failures_are_none_never_zero_and_are_logged(server, openai_config):
    server.rules["BROKEN"] = "500"
    reward, _ = build_reward("semantic", {"judge": openai_config})
    logged = {}
    completions = ["BROKEN report one", "a fine report", "BROKEN report two", "another fine report"]
    values = reward(completions, reference=["ref"] * 4, log_metric=lambda name, value: logged.setdefault(name, value))
    assert values[0] is None and values[2] is None
    assert values[1] == pytest.approx(sum(judge_server_module.expected_scores("a fine report", "ref").values()))
    assert logged["semantic/judge/failure_rate"] == 0.5
    assert logged["semantic/judge/failures"] == 2 and logged["semantic/judge/calls"] == 6  # 2 + 2 x (1 + 1 retry)
    assert logged["semantic/judge/latency_p95"] > 0 and logged["semantic/judge/batch_seconds"] > 0
    metrics = reward.metrics()
    assert metrics["judge/failures/server_error"] == 2 and metrics["judge/failure_rate"] == 0.5
    described = json.dumps(reward.describe())
    assert "sk-semantic-test-0000" not in described and reward.prompt_hash in described


def test_whole_judge_down_gives_none_for_every_completion(openai_config):
    openai_config["base_url"] = "http://127.0.0.1:9/v1"  # discard port: nothing listens
    openai_config["batch_deadline"] = 3.0
    reward, _ = build_reward("semantic", {"judge": openai_config})
    assert reward(["one", "two"], reference=["ref", "ref"]) == [None, None]


def test_missing_key_raises_instead_of_training_on_nones(openai_config, monkeypatch):
    monkeypatch.delenv("HIMED_TEST_SEMANTIC_KEY")
    reward, _ = build_reward("semantic", {"judge": openai_config})
    with pytest.raises(JudgeConfigError):
        reward(["one"], reference=["ref"])


def test_concurrent_option_makes_an_async_reward_for_trl(server, openai_config):
    reward, _ = build_reward("semantic", {"judge": openai_config, "concurrent": True}, alias="semantic_llm")
    assert isinstance(reward, AsyncSemanticReward) and reward.__name__ == "semantic_llm"
    assert is_async_callable(reward)  # TRL 1.16 gathers it with the other async rewards on its loop

    async def trl_like():
        # What TRL does: await the call on its event loop, concurrently with another async reward.
        logged = {}
        first, second = await asyncio.gather(
            reward(prompts=["p"], completions=["report a"], reference=["ref"], log_metric=logged.__setitem__),
            reward(prompts=["p"], completions=["report b"], reference=["ref"]),
        )
        return first, second, logged

    first, second, logged = asyncio.run(trl_like())
    expected = judge_server_module.expected_scores
    assert first == [pytest.approx(sum(expected("report a", "ref").values()))]
    assert second == [pytest.approx(sum(expected("report b", "ref").values()))]
    assert logged["semantic_llm/judge/calls"] >= 1
    # The synchronous path still works on the same object.
    assert reward.score_completions(["report c"], reference=["ref"])[0]["value"] is not None


def test_acall_from_async_code():
    reward = SemanticReward()
    assert asyncio.run(reward.acall([REPORT], reference=["Cardiomegaly."])) == [3.0]


def test_pickles_and_keeps_its_name_and_judge(server, openai_config):
    for kwargs in ({"judge": "labeler"}, {"judge": openai_config, "concurrent": True, "aggregate": "mean"}):
        reward, _ = build_reward("semantic", kwargs, alias="sem")
        # Used first, so that its event loop thread, HTTP client and locks exist: they must not travel.
        assert reward.score_completions(["The heart is enlarged."], reference=["Cardiomegaly."])[0]["value"] is not None
        clone = pickle.loads(pickle.dumps(reward))
        assert type(clone) is type(reward) and clone.__name__ == "sem" and clone.aggregate == reward.aggregate
        assert clone.prompt_hash == reward.prompt_hash
        assert clone.score_completions(["The heart is enlarged."], reference=["Cardiomegaly."])[0]["value"] is not None


def test_bad_kwargs():
    with pytest.raises(ValueError, match="aggregate"):
        build_reward("semantic", {"aggregate": "max"})
    with pytest.raises(ValueError, match="unknown judge backend"):
        build_reward("semantic", {"judge": {"backend": "nope"}})
    with pytest.raises(ValueError, match="bad kwargs"):
        build_reward("semantic", {"judge_backend": "labeler"})
    with pytest.raises(ValueError, match="must be a mapping"):
        build_reward("semantic", {"judge": ["labeler"]})


@pytest.mark.slow
def test_trl_itself_sees_the_concurrent_reward_as_async():
    from trl.trainer.utils import is_async_callable as trl_is_async_callable

    assert trl_is_async_callable(build_reward("semantic", {"concurrent": True})[0])
    assert not trl_is_async_callable(build_reward("semantic", {})[0])


def test_himed_score_with_an_llm_judge_writes_null_where_not_scored(server, openai_config, tmp_path):
    from himed.cli import main

    server.rules["BROKEN"] = "500"
    judge = ", ".join(f"{key}: {json.dumps(value)}" for key, value in openai_config.items())
    config = tmp_path / "rewards.yaml"
    config.write_text(f"rewards:\n  - name: semantic\n    kwargs: {{judge: {{{judge}}}}}\n")
    rows = [
        {"id": "ok", "completion": "<finding>Heart enlarged.</finding><impression>Cardiomegaly.</impression>"},
        {"id": "bad", "completion": "BROKEN report"},
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({**row, "reference": "Cardiomegaly."}) + "\n" for row in rows))
    output = tmp_path / "out.jsonl"
    assert main(["score", "--config", str(config), "--input", str(source), "--output", str(output)]) == 0
    ok, bad = (json.loads(line) for line in output.read_text().splitlines())
    expected = judge_server_module.expected_scores("Heart enlarged. Cardiomegaly.", "Cardiomegaly.")
    assert ok["semantic"] == pytest.approx(sum(expected.values()))
    assert ok["semantic/accuracy"] == expected["accuracy"] and ok["semantic/completeness"] == expected["completeness"]
    assert bad["semantic"] is None
    assert (
        bad["semantic/accuracy"] is None and bad["semantic/relevance"] is None and bad["semantic/completeness"] is None
    )


def test_concurrent_is_a_class_choice_made_by_from_config():
    assert type(SemanticReward.from_config()) is SemanticReward
    assert type(SemanticReward.from_config(concurrent=True)) is AsyncSemanticReward
    assert AsyncSemanticReward().concurrent and not SemanticReward().concurrent
    with pytest.raises(ValueError, match="from_config"):
        SemanticReward(concurrent=True)
