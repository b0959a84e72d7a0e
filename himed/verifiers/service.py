"""The service layer of an HTTP judge: cache, retry policy, rate limit and counters.

Each piece is independent of the HTTP client so that it can be tested alone and reused by another remote judge:

- ``JudgeCache``: judgements keyed by (model, prompt hash, candidate, reference); an LRU in memory and, when a path
  is given, an SQLite file that survives restarts and is safe to share between the ranks of one machine (WAL mode,
  one row per key, first writer wins). Only successful judgements are cached: a failure is retried next time.
- ``RetryPolicy``: which failures are worth retrying (408, 409, 429, 5xx, timeouts, connection errors, unusable
  answers) and how long to wait (the server's Retry-After when it gives one, else capped exponential backoff with
  full jitter, so that 32 clients refused together do not come back together).
- ``RateLimiter``: an optional requests-per-minute ceiling that spaces request starts evenly.
- ``JudgeCounters``: calls, cache hits, retries, failures by kind and request latencies; thread-safe, because the
  trainer reads them from its own thread while the judge's event loop writes them.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import random
import sqlite3
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from himed.verifiers.base import JudgeScore


def cache_key(model: str, prompt_hash: str, candidate: str, reference: str) -> str:
    """The cache key of one judgement: a hash, so the cache file does not hold report text."""
    material = json.dumps([model, prompt_hash, candidate, reference], ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class JudgeCache:
    """Judgements in memory (LRU of ``max_entries``) and optionally in an SQLite file at ``path``."""

    def __init__(self, path: str | Path | None = None, max_entries: int = 200_000):
        self.path = Path(path) if path else None
        self.max_entries = max_entries
        self._memory: OrderedDict[str, JudgeScore] = OrderedDict()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One connection per cache object, used under our lock from whichever thread runs the judge.
            db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS judgements "
                "(key TEXT PRIMARY KEY, accuracy REAL, relevance REAL, completeness REAL, created REAL)"
            )
            self._db = db
        return self._db

    def get(self, key: str) -> JudgeScore | None:
        with self._lock:
            score = self._memory.get(key)
            if score is not None:
                self._memory.move_to_end(key)
                return score
            if self.path is None:
                return None
            row = (
                self._connection()
                .execute("SELECT accuracy, relevance, completeness FROM judgements WHERE key = ?", (key,))
                .fetchone()
            )
            if row is None:
                return None
            score = JudgeScore(*row)
            self._remember(key, score)
            return score

    def put(self, key: str, score: JudgeScore) -> None:
        with self._lock:
            self._remember(key, score)
            if self.path is not None:
                self._connection().execute(
                    "INSERT OR IGNORE INTO judgements VALUES (?, ?, ?, ?, ?)",
                    (key, score.accuracy, score.relevance, score.completeness, time.time()),
                )

    def _remember(self, key: str, score: JudgeScore) -> None:
        self._memory[key] = score
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)

    def __len__(self) -> int:
        return len(self._memory)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __getstate__(self) -> dict[str, Any]:
        # The memory part travels (it is only a speed-up); the connection and lock are per process.
        return {"path": self.path, "max_entries": self.max_entries, "_memory": OrderedDict(self._memory)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._db = None


RETRYABLE_STATUS = frozenset({408, 409, 429})
# Failure kinds that a new attempt can fix. A 4xx other than the above (bad request, auth) would fail again.
RETRYABLE_KINDS = frozenset(
    {"timeout", "connection", "rate_limit", "server_error", "request_timeout", "conflict", "parse", "out_of_range"}
)


def status_kind(status: int) -> str:
    """The failure kind (a counter key) of an HTTP error status."""
    if status == 429:
        return "rate_limit"
    if status == 408:
        return "request_timeout"
    if status == 409:
        return "conflict"
    if status >= 500:
        return "server_error"
    if status in (401, 403):
        return "auth"
    return "bad_request"


def retry_after_seconds(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI's header) or ``Retry-After`` (seconds or an HTTP date)."""
    if not headers:
        return None
    lowered = {key.lower(): value for key, value in headers.items()}
    if lowered.get("retry-after-ms"):
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class RetryPolicy:
    """How many times and how long to wait before trying a failed request again."""

    max_retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    # A server asking for minutes is honoured only up to this; the batch deadline bounds it further.
    retry_after_max: float = 60.0

    def should_retry(self, kind: str, attempt: int) -> bool:
        """Whether attempt number ``attempt`` (0 = the first) that failed with ``kind`` gets another try."""
        return kind in RETRYABLE_KINDS and attempt < self.max_retries

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        return random.uniform(0.0, min(self.backoff_max, self.backoff_base * 2**attempt))


class RateLimiter:
    """At most ``rpm`` request starts per minute, evenly spaced; shared by every event loop of one judge."""

    def __init__(self, rpm: float | None):
        if rpm is not None and rpm <= 0:
            raise ValueError(f"rpm must be positive or None, got {rpm}")
        self.interval = 60.0 / rpm if rpm else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    async def acquire(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)

    def __getstate__(self) -> dict[str, Any]:
        return {"interval": self.interval}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.interval = state["interval"]
        self._next = 0.0
        self._lock = threading.Lock()


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class JudgeCounters:
    """What a judge did, for logs: counts by name, failures by kind, and a window of request latencies (seconds).

    ``snapshot()`` gives totals since the judge was built; ``mark()`` and ``since(mark)`` give one batch's share,
    which is what the reward logs every step.
    """

    LATENCY_WINDOW = 8192

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._latencies: deque[float] = deque(maxlen=self.LATENCY_WINDOW)
        self._latency_count = 0

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latencies.append(seconds)
            self._latency_count += 1

    def mark(self) -> tuple[Counter[str], int]:
        with self._lock:
            return Counter(self._counts), self._latency_count

    def _metrics(self, counts: Counter[str], latencies: list[float]) -> dict[str, float]:
        metrics = {f"judge/{name}": float(value) for name, value in sorted(counts.items())}
        for name in ("calls", "cache_hits", "retries", "failures", "pairs", "scored"):
            metrics.setdefault(f"judge/{name}", 0.0)
        if latencies:
            metrics["judge/latency_p50"] = percentile(latencies, 0.50)
            metrics["judge/latency_p95"] = percentile(latencies, 0.95)
            metrics["judge/latency_max"] = max(latencies)
        return metrics

    def snapshot(self) -> dict[str, float]:
        """Totals since the judge was built (latency percentiles over the last ``LATENCY_WINDOW`` requests)."""
        with self._lock:
            return self._metrics(Counter(self._counts), list(self._latencies))

    def since(self, mark: tuple[Counter[str], int]) -> dict[str, float]:
        """Counts and latency percentiles of what happened after ``mark`` (one batch)."""
        counts_then, latency_count_then = mark
        with self._lock:
            counts = Counter(self._counts)
            counts.subtract(counts_then)
            new = min(self._latency_count - latency_count_then, len(self._latencies))
            latencies = list(self._latencies)[len(self._latencies) - new :] if new > 0 else []
        return self._metrics(+counts, latencies)

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()
