"""The OpenAI judge against a real vLLM OpenAI-compatible server on 127.0.0.1 (one server for the module).

The server forbids free whitespace in structured outputs (conftest.py), so the tiny random-weight model can only
answer the judge's json_schema with the object itself. The last test kills the server mid-batch.
"""

import logging
import threading
import time

import pytest

from himed.verifiers.base import build_judge

pytestmark = pytest.mark.vllm


@pytest.fixture
def judge_factory(vllm_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "local-vllm-needs-no-key")

    def make(**kwargs):
        config = {
            "backend": "openai",
            "base_url": f"{vllm_server.base_url}/v1",
            "model": vllm_server.model,
            "timeout": 60.0,
            "batch_deadline": 240.0,
            "backoff_base": 0.2,
            "backoff_max": 1.0,
            "max_tokens": 96,
            "concurrency": 4,
            **kwargs,
        }
        return build_judge(config)

    return make


def test_json_schema_is_accepted_and_scored(judge_factory):
    judge = judge_factory(response_format="json_schema", max_retries=4)
    pairs = [("No acute cardiopulmonary process.", "Normal chest."), ("Small left effusion.", "Left effusion.")]
    results = judge.score_batch_sync(pairs)
    metrics = judge.metrics()
    assert all(result is not None for result in results), metrics
    for result in results:
        for axis in ("accuracy", "relevance", "completeness"):
            assert 0.0 <= getattr(result, axis) <= 1.0
    assert judge.describe()["judge/response_format"] == "json_schema"
    assert metrics.get("judge/format_fallbacks", 0) == 0


def test_the_judge_falls_back_when_the_server_rejects_response_format(judge_factory, caplog):
    """A real rejection: a judge configured with its own structured-output constraint (``extra_body``, here a regex
    for the JSON object) makes vLLM refuse any ``response_format`` next to it (one constraint per request), with a
    400 naming structured outputs. The judge steps down json_schema -> json_object -> none, once, and scores."""
    regex = r'\{"accuracy":0\.[0-9],"relevance":0\.[0-9],"completeness":0\.[0-9]\}'
    judge = judge_factory(response_format="json_schema", extra_body={"structured_outputs": {"regex": regex}})
    with caplog.at_level(logging.WARNING, logger="himed.verifiers.openai_judge"):
        results = judge.score_batch_sync([("Small left effusion.", "Left effusion.")])
    assert results[0] is not None
    assert judge.describe()["judge/response_format"] == "none"
    assert judge.metrics()["judge/format_fallbacks"] == 2
    assert any("rejected response_format json_schema" in record.getMessage() for record in caplog.records)


def test_a_prompt_over_the_context_length_is_one_logged_counted_failure_not_retried(judge_factory, vllm_server, caplog):
    judge = judge_factory(max_retries=3, max_report_chars=1_000_000)
    too_long = " ".join(["bilateral pleural effusion with adjacent atelectasis"] * 1500)  # > 4,096 tokens
    with caplog.at_level(logging.WARNING, logger="himed.verifiers.openai_judge"):
        results = judge.score_batch_sync([(too_long, "Normal chest."), (too_long + " again", "Normal chest.")])
    assert results == [None, None]
    metrics = judge.metrics()
    assert metrics["judge/errors/context_length"] == 2  # counted under its own key, not errors/bad_request
    assert metrics.get("judge/retries", 0) == 0 and metrics["judge/calls"] == 2  # never retried
    messages = [record.getMessage() for record in caplog.records if "context_length" in record.getMessage()]
    assert len(messages) == 1, messages  # one message per kind, with the server's own text
    assert str(vllm_server.MAX_MODEL_LEN) in messages[0]  # the server's own text names its limit


def test_green_prompt_is_accepted_and_an_unusable_answer_is_counted_none_never_zero(vllm_server, monkeypatch):
    """GREEN's protocol on a real server: its free-text prompt is accepted (no request error of any kind), and each
    answer is either parsed into a score in [0, 1] or, as a random-weight model's text is, retried and then None,
    counted as a parse failure; never a 0 standing in for a failure."""
    from himed.verifiers.green import GreenJudge

    monkeypatch.setenv("OPENAI_API_KEY", "local-vllm-needs-no-key")
    judge = GreenJudge(
        base_url=f"{vllm_server.base_url}/v1", model=vllm_server.model, timeout=60.0, batch_deadline=240.0,
        backoff_base=0.2, backoff_max=1.0, max_tokens=64, max_retries=1, concurrency=2,
    )  # fmt: skip
    pairs = [("Small left pleural effusion.", "Left pleural effusion."), ("No acute process.", "Cardiomegaly.")]
    results = judge.score_batch_sync(pairs)
    metrics = judge.metrics()
    judge.close()
    assert metrics["judge/calls"] >= len(pairs)
    request_errors = [
        k for k, v in metrics.items() if k.startswith("judge/errors/") and k != "judge/errors/parse" and v
    ]
    assert not request_errors, metrics  # the server took every request; only answers can be unusable
    assert all(result is None or 0.0 <= result.score <= 1.0 for result in results)
    assert metrics.get("judge/failures", 0) == results.count(None), metrics  # each None counted, never scored 0
    assert metrics.get("judge/errors/parse", 0) >= 2 * results.count(None), metrics  # retried once before None


def test_the_server_killed_mid_batch_gives_retries_then_none_counted_no_crash(judge_factory, vllm_server):
    judge = judge_factory(max_retries=2, timeout=20.0, batch_deadline=120.0, concurrency=1)
    pairs = [(f"Finding number {i}: small effusion.", "Left effusion.") for i in range(200)]
    killer = threading.Timer(3.0, vllm_server.kill)
    killer.start()
    started = time.monotonic()
    results = judge.score_batch_sync(pairs)
    killer.join()
    metrics = judge.metrics()
    assert vllm_server.process.poll() is not None  # it really died during the batch
    assert results[-1] is None and None in results  # the pairs after the kill: None, never 0
    assert metrics["judge/retries"] >= 2 and metrics["judge/failures"] >= 1
    assert any(key.startswith("judge/errors/connection") for key in metrics), metrics
    assert time.monotonic() - started < 120.0
