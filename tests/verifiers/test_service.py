"""The judge service layer on its own: Retry-After parsing, retry policy, rate limit, cache, counters."""

import asyncio
import email.utils
import pickle
import time

import pytest

from himed.verifiers.base import JudgeScore
from himed.verifiers.service import (
    JudgeCache,
    JudgeCounters,
    RateLimiter,
    RetryPolicy,
    cache_key,
    percentile,
    retry_after_seconds,
    status_kind,
)


def test_retry_after_forms():
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "0.25"}) == 0.25
    assert retry_after_seconds({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5  # the precise one wins
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= retry_after_seconds({"Retry-After": date}, now=now) <= 31
    assert retry_after_seconds({"Retry-After": email.utils.formatdate(now - 60, usegmt=True)}, now=now) == 0.0
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None and retry_after_seconds(None) is None


def test_status_kinds_and_retry_policy():
    assert [status_kind(s) for s in (408, 409, 429, 500, 503, 400, 401, 404)] == [
        "request_timeout",
        "conflict",
        "rate_limit",
        "server_error",
        "server_error",
        "bad_request",
        "auth",
        "bad_request",
    ]
    policy = RetryPolicy(max_retries=2, backoff_base=0.5, backoff_max=1.0, retry_after_max=5.0)
    for kind in ("timeout", "connection", "rate_limit", "server_error", "request_timeout", "conflict", "parse"):
        assert policy.should_retry(kind, 0) and policy.should_retry(kind, 1) and not policy.should_retry(kind, 2)
    assert not policy.should_retry("bad_request", 0) and not policy.should_retry("auth", 0)
    assert policy.delay(0, retry_after=2.0) == 2.0
    assert policy.delay(0, retry_after=600.0) == 5.0  # capped
    delays = [policy.delay(attempt) for attempt in range(6) for _ in range(50)]
    assert all(0.0 <= d <= 1.0 for d in delays) and len(set(delays)) > 100  # jittered, capped at backoff_max


def test_rate_limiter_spaces_request_starts():
    limiter = RateLimiter(rpm=1200)  # one start every 50 ms

    async def run():
        starts = []
        for _ in range(5):
            await limiter.acquire()
            starts.append(time.monotonic())
        return starts

    starts = asyncio.run(run())
    assert starts[-1] - starts[0] >= 4 * 0.05 * 0.9
    assert RateLimiter(None).interval == 0.0
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_cache_key_separates_every_field():
    keys = {
        cache_key("m", "h", "c", "r"),
        cache_key("m2", "h", "c", "r"),
        cache_key("m", "h2", "c", "r"),
        cache_key("m", "h", "c2", "r"),
        cache_key("m", "h", "c", "r2"),
        cache_key("m", "h", "c r", ""),
    }
    assert len(keys) == 6


def test_memory_cache_is_lru():
    cache = JudgeCache(max_entries=2)
    a, b, c = JudgeScore(1, 1, 1), JudgeScore(0, 0, 0), JudgeScore(0.5, 0.5, 0.5)
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") == a  # a is now the most recent
    cache.put("c", c)
    assert cache.get("b") is None and cache.get("a") == a and cache.get("c") == c


def test_disk_cache_survives_a_new_instance_and_pickling(tmp_path):
    path = tmp_path / "judge" / "cache.sqlite"
    cache = JudgeCache(path)
    cache.put("k", JudgeScore(0.25, 0.5, 0.75))
    cache.put("k", JudgeScore(1, 1, 1))  # first writer wins on disk
    cache.close()
    fresh = JudgeCache(path)
    assert fresh.get("k") == JudgeScore(0.25, 0.5, 0.75)
    assert fresh.get("missing") is None
    clone = pickle.loads(pickle.dumps(fresh))
    assert clone.get("k") == JudgeScore(0.25, 0.5, 0.75)


def test_counters_totals_and_batches():
    counters = JudgeCounters()
    counters.add("calls", 3)
    counters.latency(0.1)
    mark = counters.mark()
    counters.add("calls", 2)
    counters.add("failures/timeout")
    for seconds in (0.2, 0.4, 0.6):
        counters.latency(seconds)
    total = counters.snapshot()
    assert total["judge/calls"] == 5 and total["judge/failures/timeout"] == 1 and total["judge/cache_hits"] == 0
    batch = counters.since(mark)
    assert batch["judge/calls"] == 2
    assert batch["judge/latency_p50"] == pytest.approx(0.4) and batch["judge/latency_max"] == pytest.approx(0.6)
    assert percentile([], 0.5) is None and percentile([1.0, 2.0], 0.95) == pytest.approx(1.95)
    assert pickle.loads(pickle.dumps(counters)).snapshot()["judge/calls"] == 0  # counts are per process
