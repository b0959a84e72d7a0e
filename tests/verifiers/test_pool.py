"""The judge endpoint pool: routing and ejection on a fake clock, and two real scripted servers, one dying mid-batch."""

from __future__ import annotations

import logging
import pickle

import pytest

from himed.verifiers.base import build_judge
from himed.verifiers.pool import EndpointPool

from .conftest import ScriptedJudgeServer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_pool(n: int = 2, **kwargs) -> tuple[EndpointPool, FakeClock]:
    clock = FakeClock()
    pool = EndpointPool([f"http://judge{i}:8001/v1" for i in range(n)], clock=clock, **kwargs)
    return pool, clock


def test_routes_to_the_endpoint_with_fewest_in_flight():
    pool, _ = make_pool(3)
    taken = [pool.acquire() for _ in range(6)]
    assert [e.index for e in taken] == [0, 1, 2, 0, 1, 2]
    pool.release(taken[0])
    pool.release(taken[3])  # endpoint 0 now has nothing in flight
    assert pool.acquire().index == 0
    assert pool.metrics()["judge/endpoint0/in_flight"] == 1 and pool.metrics()["judge/endpoint1/in_flight"] == 2


def test_ejects_after_consecutive_failures_and_probes_after_the_cooldown(caplog):
    pool, clock = make_pool(2, max_failures=2, cooldown=10.0)
    dead = pool.endpoints[1]
    pool.release(pool.acquire(), "")  # endpoint 0 answers
    with caplog.at_level(logging.WARNING, logger="himed.verifiers.pool"):
        pool.release(pool.acquire(), "connection")  # endpoint 1, first failure: still in rotation
        assert dead.state == "up"
        pool.release(pool.acquire(avoid=pool.endpoints[0]), "server_error")
    assert dead.state == "down" and dead.ejections == 1
    assert "out of rotation after 2 consecutive failures" in caplog.text
    assert all(pool.acquire().index == 0 for _ in range(5))  # only endpoint 0 while 1 cools down
    clock.now += 10.0
    probe = pool.acquire()  # endpoint 0 has 5 in flight, the probe goes to 1
    assert probe is dead and dead.state == "probing"
    assert pool.acquire().index == 0  # one probe at a time
    pool.release(probe, "timeout")  # the probe fails: out again for a full cool-down
    assert dead.state == "down" and dead.ejections == 2 and pool.acquire().index == 0
    clock.now += 10.0
    pool.release(pool.acquire(), "")  # the probe answers: back in rotation
    assert dead.state == "up" and dead.consecutive_failures == 0
    assert pool.metrics()["judge/endpoint1/failures"] == 3 and pool.metrics()["judge/endpoints_up"] == 2


def test_unusable_answers_and_cancellations_do_not_eject():
    pool, _ = make_pool(2, max_failures=2)
    for kind in ("parse", "out_of_range", "bad_request", "cancelled", "deadline"):
        endpoint = pool.acquire()
        pool.release(endpoint, kind)
        assert endpoint.state == "up", kind
    assert pool.metrics()["judge/endpoint0/failures"] == 0
    # Neutral ends do not reset a run of failures either; an answer does.
    endpoint = pool.endpoints[0]
    for kind in ("connection", "deadline", "cancelled"):
        pool.release(pool.acquire(avoid=pool.endpoints[1]), kind)
    assert endpoint.consecutive_failures == 1
    pool.release(pool.acquire(avoid=pool.endpoints[1]), "parse")
    assert endpoint.consecutive_failures == 0


def test_a_cancelled_probe_leaves_the_endpoint_ready_for_the_next_probe():
    pool, clock = make_pool(1, max_failures=1, cooldown=5.0)
    pool.release(pool.acquire(), "connection")
    clock.now += 5.0
    probe = pool.acquire()
    pool.release(probe, "cancelled")
    assert probe.state == "down" and pool.acquire().state == "probing"


def test_with_every_endpoint_out_the_first_back_is_used_rather_than_refusing():
    pool, clock = make_pool(2, max_failures=1, cooldown=10.0)
    first = pool.acquire()
    pool.release(first, "connection")
    clock.now += 3.0
    second = pool.acquire()
    pool.release(second, "connection")
    assert {first.state, second.state} == {"down"}
    assert pool.acquire() is first  # its cool-down ends first
    # A pool of one behaves like a single endpoint: never refuses.
    single, _ = make_pool(1, max_failures=1)
    only = single.acquire()
    single.release(only, "server_error")
    assert single.acquire() is only


def test_validation_and_pickling():
    with pytest.raises(ValueError, match="at least one URL"):
        EndpointPool([])
    with pytest.raises(ValueError, match="distinct"):
        EndpointPool(["http://a/v1", "http://a/v1"])
    with pytest.raises(ValueError, match="endpoint_max_failures"):
        EndpointPool(["http://a/v1"], max_failures=0)
    with pytest.raises(ValueError, match="endpoint_cooldown"):
        EndpointPool(["http://a/v1"], cooldown=-1)
    pool, _ = make_pool(2)
    pool.acquire()
    clone = pickle.loads(pickle.dumps(pool))
    assert [e.url for e in clone.endpoints] == [e.url for e in pool.endpoints]
    assert clone.metrics()["judge/endpoint0/in_flight"] == 0  # a copy in another process starts afresh


def test_a_server_dying_mid_batch_loses_no_pair(api_key, expected_score):
    alive = ScriptedJudgeServer(latency=0.02, lifetime=60.0).start()
    # The second server answers 12 requests and then stops: requests in flight on it are dropped and every later
    # connection is refused, in the middle of the batch.
    dying = ScriptedJudgeServer(latency=0.02, lifetime=60.0, max_requests=12).start()
    try:
        judge = build_judge(
            {
                "backend": "openai",
                "base_url": [alive.url, dying.url],
                "model": "test-judge",
                "concurrency": 4,
                "timeout": 5.0,
                "batch_deadline": 30.0,
                "max_retries": 3,
                "backoff_base": 0.01,
                "backoff_max": 0.05,
                "endpoint_max_failures": 2,
                "endpoint_cooldown": 600.0,
            }
        )
        pairs = [(f"candidate report {i}", f"reference {i}") for i in range(60)]
        results = judge.score_batch_sync(pairs)
        assert results == [expected_score(c, r) for c, r in pairs]  # every pair scored, in order, none lost
        metrics = judge.metrics()
        assert metrics["judge/failures"] == 0 and metrics["judge/scored"] == 60
        assert metrics["judge/endpoint1/failures"] >= 2 and metrics["judge/endpoint1/ejections"] == 1
        assert metrics["judge/endpoint1/up"] == 0.0 and metrics["judge/endpoint0/up"] == 1.0
        assert metrics["judge/endpoint0/failures"] == 0 and metrics["judge/endpoints_up"] == 1
        # Both took load before the death (a request or two read as it stopped may count past 12); the survivor
        # answered every pair the dying one did not.
        assert 6 <= dying.count <= 24 and alive.count >= 60 - dying.count
        assert metrics["judge/endpoint0/calls"] == alive.count
        endpoints = judge.describe()["judge/endpoints"]
        assert [e["url"] for e in endpoints] == [alive.url, dying.url]
        assert endpoints[1]["state"] == "down" and endpoints[0]["in_flight"] == 0
        judge.close()
    finally:
        alive.stop()
        dying.stop()


def test_a_single_url_string_still_works_and_records_one_endpoint(judge_server, api_key, expected_score):
    judge = build_judge({"backend": "openai", "base_url": judge_server.url, "model": "m", "timeout": 5.0})
    assert judge.score_batch_sync([("a", "b")]) == [expected_score("a", "b")]
    assert not any(key.startswith("judge/endpoint0") for key in judge.metrics())
    assert judge.describe()["judge/base_url"] == judge_server.url
    assert judge.describe()["judge/endpoints"][0]["calls"] == 1
    with pytest.raises(ValueError, match="list of URLs"):
        build_judge({"backend": "openai", "base_url": [], "model": "m"})
    with pytest.raises(ValueError, match="distinct"):
        build_judge({"backend": "openai", "base_url": [judge_server.url, judge_server.url], "model": "m"})
    judge.close()
