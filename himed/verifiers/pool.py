"""A pool of equivalent judge endpoints: least-in-flight routing, ejection after consecutive failures, cool-down.

One judge server is one point of failure and one queue. ``EndpointPool`` spreads the requests of one judge over
several servers that serve the same model (``base_url: [http://a:8001/v1, http://b:8001/v1]``):

- **Routing**: each request goes to the endpoint with the fewest requests in flight among those in rotation (ties:
  the one with the fewest calls so far, then the first listed), so a slow server gets fewer new requests. A retry
  avoids the endpoint that just failed it when another one is in rotation.
- **Ejection**: after ``max_failures`` consecutive failures of its own (connection errors, timeouts, 5xx, 429; not
  an unusable answer, which shows the server is alive) an endpoint leaves the rotation for ``cooldown`` seconds.
  Then one request probes it: success puts it back, failure ejects it for another cool-down. Any success resets its
  count.
- **Never refuse**: when every endpoint is out of rotation, the request goes to the one whose cool-down ends first,
  so a pool of one behaves exactly like a single endpoint, and the judge's retries and deadline still bound the
  batch.
- **Counters** per endpoint (calls, failures, in flight, state, times ejected) for logs (``metrics``: numbers under
  ``judge/endpoint<i>/...``) and run records (``describe``: one dict per endpoint with its URL).

Pure bookkeeping with an injectable clock; no HTTP here. Thread-safe: a judge may run batches on several event loops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# Failure kinds (himed.verifiers.service.status_kind and the judge's own) that say the endpoint itself is unwell.
ENDPOINT_FAILURE_KINDS = frozenset({"connection", "timeout", "server_error", "rate_limit", "request_timeout"})
# Attempts that ended without telling anything about the endpoint: cancelled, or cut short by the batch deadline.
NEUTRAL_KINDS = frozenset({"cancelled", "deadline"})
STATES = ("up", "down", "probing")


@dataclass
class Endpoint:
    """One server of the pool and its counters."""

    index: int
    url: str
    label: str  # the URL without credentials, for logs and records
    in_flight: int = 0
    calls: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    state: str = "up"
    down_until: float = 0.0
    ejections: int = 0

    def counters(self) -> dict[str, Any]:
        return {
            "url": self.label,
            "state": self.state,
            "calls": self.calls,
            "failures": self.failures,
            "in_flight": self.in_flight,
            "consecutive_failures": self.consecutive_failures,
            "ejections": self.ejections,
        }


class EndpointPool:
    """See the module docstring. ``acquire()`` before a request, ``release(endpoint, kind)`` after it, always."""

    def __init__(
        self,
        urls: Sequence[str],
        labels: Sequence[str] | None = None,
        max_failures: int = 3,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        urls = list(urls)
        if not urls:
            raise ValueError("an endpoint pool needs at least one URL")
        if len(set(urls)) != len(urls):
            raise ValueError(f"endpoint URLs must be distinct, got {urls}")
        if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 1:
            raise ValueError(f"endpoint_max_failures must be a whole number >= 1, got {max_failures!r}")
        if not cooldown >= 0:
            raise ValueError(f"endpoint_cooldown must be >= 0 seconds, got {cooldown!r}")
        labels = list(labels) if labels is not None else urls
        self.max_failures = max_failures
        self.cooldown = float(cooldown)
        self.clock = clock
        self.endpoints = [Endpoint(i, url, label) for i, (url, label) in enumerate(zip(urls, labels, strict=True))]
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.endpoints)

    def _in_rotation(self, endpoint: Endpoint, now: float) -> bool:
        if endpoint.state == "up":
            return True
        # A down endpoint whose cool-down is over gets one probe at a time.
        return endpoint.state == "down" and now >= endpoint.down_until

    def acquire(self, avoid: Endpoint | None = None) -> Endpoint:
        """The endpoint for the next request (module docstring), with its in-flight count already taken."""
        with self._lock:
            now = self.clock()
            candidates = [e for e in self.endpoints if self._in_rotation(e, now)]
            if avoid is not None and len(candidates) > 1:
                candidates = [e for e in candidates if e is not avoid]
            if candidates:
                chosen = min(candidates, key=lambda e: (e.in_flight, e.calls, e.index))
            else:  # none in rotation: the one that comes back first, rather than refusing the request
                chosen = min(self.endpoints, key=lambda e: (e.down_until, e.in_flight, e.index))
            if chosen.state == "down":
                chosen.state = "probing"
            chosen.in_flight += 1
            chosen.calls += 1
            return chosen

    def release(self, endpoint: Endpoint, kind: str = "") -> None:
        """The request on ``endpoint`` ended: ``kind`` is "" on an answer, else the failure kind; ``NEUTRAL_KINDS``
        (cancelled, or cut short by the batch deadline) say nothing about the endpoint."""
        failed = kind in ENDPOINT_FAILURE_KINDS
        with self._lock:
            endpoint.in_flight -= 1
            if kind in NEUTRAL_KINDS:
                if endpoint.state == "probing":
                    endpoint.state = "down"  # its cool-down is over: the next request probes it again
                return
            if not failed:
                if endpoint.state != "up":
                    logger.warning("judge endpoint %s answers again: back in rotation", endpoint.label)
                endpoint.state, endpoint.consecutive_failures = "up", 0
                return
            endpoint.failures += 1
            endpoint.consecutive_failures += 1
            probing = endpoint.state == "probing"
            if probing or (endpoint.state == "up" and endpoint.consecutive_failures >= self.max_failures):
                endpoint.state = "down"
                endpoint.down_until = self.clock() + self.cooldown
                endpoint.ejections += 1
                others = sum(e.state == "up" for e in self.endpoints)
                logger.warning(
                    "judge endpoint %s out of rotation after %d consecutive failures (last: %s); probed again in "
                    "%.0f s; %d of %d endpoints in rotation",
                    endpoint.label,
                    endpoint.consecutive_failures,
                    kind,
                    self.cooldown,
                    others,
                    len(self.endpoints),
                )

    def metrics(self) -> dict[str, float]:
        """Numbers per endpoint: ``judge/endpoint<i>/calls|failures|in_flight|ejections|up`` (up: 1 in rotation)."""
        with self._lock:
            out: dict[str, float] = {}
            for e in self.endpoints:
                prefix = f"judge/endpoint{e.index}"
                out[f"{prefix}/calls"] = float(e.calls)
                out[f"{prefix}/failures"] = float(e.failures)
                out[f"{prefix}/in_flight"] = float(e.in_flight)
                out[f"{prefix}/ejections"] = float(e.ejections)
                out[f"{prefix}/up"] = 1.0 if e.state == "up" else 0.0
            out["judge/endpoints_up"] = float(sum(e.state == "up" for e in self.endpoints))
            return out

    def describe(self) -> list[dict[str, Any]]:
        """One dict per endpoint: URL (no credentials), state and counters."""
        with self._lock:
            return [e.counters() for e in self.endpoints]

    def __getstate__(self) -> dict[str, Any]:
        # A copy in another process starts with fresh counters (like JudgeCounters) and nothing in flight.
        return {
            "urls": [e.url for e in self.endpoints],
            "labels": [e.label for e in self.endpoints],
            "max_failures": self.max_failures,
            "cooldown": self.cooldown,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["urls"], state["labels"], state["max_failures"], state["cooldown"])
