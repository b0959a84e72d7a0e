"""``OpenAIJudge``: the semantic judge of HiMed-RL eq. 6 served by any OpenAI-compatible endpoint.

The paper's judge is Qwen3-30B-A3B behind vLLM (``launch/serve_verifier.sh``); SGLang and hosted APIs work the
same way. One request per (candidate, reference) pair with the versioned STARD prompt of ``prompt.py``.

What keeps a slow or flaky judge from stalling or corrupting training:

- bounded concurrency (a semaphore of ``concurrency`` requests in flight per event loop) and an optional ``rpm``
  ceiling; both are per process, so with N trainer processes the server sees up to N x ``concurrency`` requests;
- a per-request ``timeout`` and a per-batch ``batch_deadline``: whatever is unfinished at the deadline is None;
- retries with backoff on 408/409/429/5xx, timeouts, connection errors and unusable answers (unparsable or out of
  range), honouring Retry-After; the client's own retries are off so that every attempt is counted here;
- structured outputs: ``response_format`` json_schema, falling back to json_object and then to the prompt alone
  when the server says it does not support the requested one (remembered for the judge's life);
- de-duplication of identical pairs within a batch (GRPO groups often repeat a completion) and a cache keyed by
  (model, prompt hash, candidate, reference), in memory and optionally in an SQLite file (``cache_path``);
- None, never 0, for a pair that could not be scored, with the failure counted by kind;
- several endpoints serving the same model (``base_url`` as a list): each request goes to the endpoint with the
  fewest in flight, an endpoint leaves the rotation after ``endpoint_max_failures`` consecutive failures and is
  probed again after ``endpoint_cooldown`` seconds, a retry goes to another endpoint, and per-endpoint counters are
  reported (``himed.verifiers.pool``, docs/judges.md). ``concurrency`` is per endpoint.

One ``AsyncOpenAI`` client per event loop and endpoint, created on first use and reused: its connection pool is what
lets 32 requests share a handful of keep-alive connections instead of opening one per request. The API key is read from
the environment variable named by ``api_key_env`` when the client is created; it is never stored in the config,
``describe()``, logs or checkpoints. A local vLLM server started without ``--api-key`` accepts any key: set
``OPENAI_API_KEY=EMPTY``.

Why one file of ~490 lines: one class whose request loop (retries, format fallback, endpoint choice, deadline,
counters) is a single path through shared state; the parts that stand alone already live beside it (``service.py``:
cache, rate limit, retry policy; ``pool.py``: endpoints; ``prompt.py``: prompt and parsing).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from himed.verifiers.base import Judge, JudgeConfigError, JudgeScore, Pair, register_judge
from himed.verifiers.pool import EndpointPool
from himed.verifiers.prompt import (
    DEFAULT_MAX_REPORT_CHARS,
    PROMPT_HASH,
    PROMPT_VERSION,
    JudgementError,
    build_messages,
    parse_judgement,
    response_format,
)
from himed.verifiers.service import (
    JudgeCache,
    JudgeCounters,
    RateLimiter,
    RetryPolicy,
    cache_key,
    retry_after_seconds,
    status_kind,
)

logger = logging.getLogger(__name__)

FORMAT_LEVELS = ("json_schema", "json_object", "none")
HTTP_BACKENDS = ("auto", "aiohttp", "httpx2")
# Words in a 400/422 error that say the server rejected the structured-output request rather than the prompt.
_FORMAT_REJECTION = re.compile(r"response_format|json_schema|json_object|guided|structured|schema", re.IGNORECASE)
# A 400 saying the prompt does not fit the server's context (vLLM: "maximum context length is N tokens", "longer than
# the maximum model length"): the same request can never succeed, so it is counted as errors/context_length, logged
# once with the server's own text, and not retried.
_CONTEXT_LENGTH = re.compile(
    r"context length|maximum model length|max_model_len|longer than the maximum|too long|is too large", re.IGNORECASE
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class _LoopState:
    """What an event loop needs of its own: asyncio objects and the HTTP clients are bound to one loop."""

    clients: list[Any]  # one per endpoint, in the pool's order
    semaphore: asyncio.Semaphore


def _close_clients(states: weakref.WeakKeyDictionary) -> None:
    """Close each loop's client on its own loop, where that loop is still running; forget them all."""
    items = list(states.items())
    states.clear()
    for loop, state in items:
        if loop.is_closed() or not loop.is_running():
            continue
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for client in state.clients:
            try:
                if loop is running:
                    loop.create_task(client.close())
                else:
                    asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=5)
            except Exception:  # closing is best effort: the process may be shutting the loop down too
                pass


def _strip_credentials(url: str) -> str:
    """``url`` without any user:password part, for logs and run records."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _answer_text(answer: Any) -> str | None:
    """The assistant text of a chat completion body, or None when the body has none."""
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


@register_judge("openai")
class OpenAIJudge(Judge):
    """LLM judge on an OpenAI-compatible chat completions endpoint; see the module docstring."""

    def __init__(
        self,
        base_url: str | list[str],
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 32,
        timeout: float = 60.0,
        batch_deadline: float = 600.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        rpm: float | None = None,
        cache_path: str | None = None,
        cache_size: int = 200_000,
        temperature: float = 0.0,
        max_tokens: int = 256,
        response_format: str = "json_schema",
        extra_body: dict[str, Any] | None = None,
        max_report_chars: int = DEFAULT_MAX_REPORT_CHARS,
        http_backend: str = "auto",
        endpoint_max_failures: int = 3,
        endpoint_cooldown: float = 30.0,
    ):
        urls = [base_url] if isinstance(base_url, str) else base_url
        if not isinstance(urls, list | tuple) or not urls or not all(isinstance(u, str) and u for u in urls):
            raise ValueError(
                "judge 'openai' needs base_url, e.g. http://127.0.0.1:8001/v1, or a list of URLs serving the same model"
            )
        if not model or not isinstance(model, str):
            raise ValueError("judge 'openai' needs model, the name the server serves (e.g. Qwen/Qwen3-30B-A3B)")
        if not _ENV_NAME.match(str(api_key_env)):
            raise ValueError(
                f"api_key_env must be the NAME of an environment variable (e.g. OPENAI_API_KEY), got {api_key_env!r}; "
                "never put a key itself in a config"
            )
        if int(concurrency) < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if timeout <= 0 or batch_deadline <= 0:
            raise ValueError(f"timeout and batch_deadline must be positive, got {timeout} and {batch_deadline}")
        if int(max_retries) < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if response_format not in FORMAT_LEVELS:
            raise ValueError(f"response_format must be one of {FORMAT_LEVELS}, got {response_format!r}")
        if extra_body is not None and not isinstance(extra_body, dict):
            raise ValueError(f"extra_body must be a mapping, got {type(extra_body).__name__}")
        if http_backend not in HTTP_BACKENDS:
            raise ValueError(f"http_backend must be one of {HTTP_BACKENDS}, got {http_backend!r}")
        if http_backend == "aiohttp" and importlib.util.find_spec("aiohttp") is None:
            raise ValueError("http_backend 'aiohttp' needs aiohttp: pip install 'openai[aiohttp]' (or use 'auto')")
        self.http_backend = http_backend
        self.base_url = base_url if isinstance(base_url, str) else list(base_url)
        self.pool = EndpointPool(
            urls,
            labels=[_strip_credentials(url) for url in urls],
            max_failures=endpoint_max_failures,
            cooldown=endpoint_cooldown,
        )
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = int(concurrency)
        self.timeout = float(timeout)
        self.batch_deadline = float(batch_deadline)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.extra_body = dict(extra_body) if extra_body else None
        self.max_report_chars = int(max_report_chars)
        self.prompt_hash = PROMPT_HASH
        self.retry = RetryPolicy(max_retries=int(max_retries), backoff_base=backoff_base, backoff_max=backoff_max)
        self.rate_limiter = RateLimiter(rpm)
        self.rpm = rpm
        self.cache = JudgeCache(cache_path, max_entries=int(cache_size))
        self.counters = JudgeCounters()
        self._format_level = response_format
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()
        self._states_lock = threading.Lock()
        self._logged_kinds: set[str] = set()
        # Close the clients (aiohttp sessions warn when collected open) when the judge goes or the process exits.
        weakref.finalize(self, _close_clients, self._states)

    # -- clients ---------------------------------------------------------------------------------------------

    def _api_key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if not key:
            raise JudgeConfigError(
                f"judge 'openai': environment variable {self.api_key_env} is not set; export the API key there "
                f"(a local vLLM server started without --api-key accepts any value: export {self.api_key_env}=EMPTY)"
            )
        return key

    def _http_client(self) -> Any:
        """The HTTP transport under the openai client, with a pool sized to the concurrency.

        aiohttp (openai's documented alternative transport, ``pip install openai[aiohttp]``) costs about a third of
        the CPU per request of the default httpx2 one (benchmarks/README.md, "Judge"): on a busy 2-core machine that
        is the difference between keeping 32 requests in flight and not. ``auto`` uses it when it is installed.
        """
        import httpx2
        import openai

        limits = httpx2.Limits(
            max_connections=max(self.concurrency, 8), max_keepalive_connections=max(self.concurrency, 8)
        )
        backend = self.http_backend
        if backend == "auto":
            backend = "aiohttp" if importlib.util.find_spec("aiohttp") is not None else "httpx2"
        if backend == "aiohttp":
            return openai.DefaultAioHttpClient(limits=limits, timeout=self.timeout)
        return openai.DefaultAsyncHttpxClient(limits=limits, timeout=self.timeout)

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._states_lock:
            state = self._states.get(loop)
            if state is None:
                import openai

                api_key = self._api_key()
                clients = [
                    openai.AsyncOpenAI(
                        base_url=endpoint.url,
                        api_key=api_key,
                        timeout=self.timeout,
                        max_retries=0,  # retries are ours: counted, deadline-bounded, Retry-After honoured
                        http_client=self._http_client(),
                    )
                    for endpoint in self.pool.endpoints
                ]
                semaphore = asyncio.Semaphore(self.concurrency * len(self.pool))
                state = self._states[loop] = _LoopState(clients, semaphore)
        return state

    def close(self) -> None:
        """Close the clients of every loop still running and the cache file; later calls start afresh."""
        _close_clients(self._states)
        self.cache.close()
        super().close()

    # -- scoring ---------------------------------------------------------------------------------------------

    async def score_batch(self, pairs: Sequence[Pair]) -> list[JudgeScore | None]:
        pairs = [(candidate or "", reference or "") for candidate, reference in pairs]
        self.counters.add("pairs", len(pairs))
        positions: dict[Pair, list[int]] = {}
        for index, pair in enumerate(pairs):
            positions.setdefault(pair, []).append(index)
        self.counters.add("dedup_hits", len(pairs) - len(positions))

        results: list[JudgeScore | None] = [None] * len(pairs)
        pending: dict[Pair, str] = {}
        for pair, indices in positions.items():
            key = cache_key(self.model, self.prompt_hash, *pair)
            cached = self.cache.get(key)
            if cached is not None:
                self.counters.add("cache_hits")
                self.counters.add("scored", len(indices))
                for index in indices:
                    results[index] = cached
            else:
                pending[pair] = key
        if not pending:
            return results

        state = self._state()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch_deadline
        tasks = {asyncio.create_task(self._judge_pair(state, pair, deadline)): pair for pair in pending}
        try:
            done, late = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()) + 0.05)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
        for task, pair in tasks.items():
            indices = positions[pair]
            score: JudgeScore | None = None
            if task in late or task.cancelled():
                kind = "deadline"
            elif task.exception() is not None:
                error = task.exception()
                if isinstance(error, JudgeConfigError):
                    raise error
                kind = "error"
                self._log_once(kind, f"unexpected {type(error).__name__}: {error}")
            else:
                score, kind = task.result()
            if score is None:
                self.counters.add("failures", len(indices))
                self.counters.add(f"failures/{kind}", len(indices))
            else:
                self.cache.put(pending[pair], score)
                self.counters.add("scored", len(indices))
            for index in indices:
                results[index] = score
        return results

    def _request(self, pair: Pair, level: str) -> dict[str, Any]:
        """The JSON body of one chat completions request (``extra_body`` merged in last, as the SDK does)."""
        request: dict[str, Any] = {
            "model": self.model,
            "messages": build_messages(pair[0], pair[1], self.max_report_chars),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        format_field = response_format(level)
        if format_field is not None:
            request["response_format"] = format_field
        if self.extra_body:
            request.update(self.extra_body)
        return request

    async def _judge_pair(self, state: _LoopState, pair: Pair, deadline: float) -> tuple[JudgeScore | None, str]:
        """One pair with retries: ``(score, "")`` or ``(None, kind of the last failure)``."""
        import httpx2
        import openai

        loop = asyncio.get_running_loop()
        attempt, kind, endpoint = 0, "deadline", None
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None, "deadline" if attempt == 0 else kind
            retry_after = None
            level = self._format_level
            async with state.semaphore:
                await self.rate_limiter.acquire()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None, "deadline" if attempt == 0 else kind
                limit = min(self.timeout, remaining)
                started = time.perf_counter()
                endpoint = self.pool.acquire(avoid=endpoint)  # a retry goes elsewhere when it can
                kind = "cancelled"  # until the attempt ends: a batch deadline may cancel it
                try:
                    async with asyncio.timeout(limit):
                        # The client's documented raw request (README: "undocumented endpoints"): same auth, pool,
                        # timeouts and status errors as chat.completions.create, without its per-request
                        # TypedDict transform and pydantic response models (most of its CPU cost per request).
                        response = await state.clients[endpoint.index].post(
                            "/chat/completions", body=self._request(pair, level), cast_to=httpx2.Response
                        )
                        answer = response.json()
                    kind, detail = "", ""
                except (openai.APITimeoutError, TimeoutError) as error:
                    elapsed = time.perf_counter() - started
                    if elapsed < 0.9 * limit:
                        # The aiohttp transport reports a dropped connection as a timeout, at once.
                        kind, detail = "connection", f"{type(error).__name__} after {elapsed:.2f} s: {error}"
                    else:
                        kind = "timeout" if limit >= self.timeout else "deadline"
                        detail = f"no answer within {limit:.1f} s"
                except openai.APIStatusError as error:
                    kind, detail = status_kind(error.status_code), f"HTTP {error.status_code}: {error.message}"
                    retry_after = retry_after_seconds(error.response.headers)
                    if error.status_code in (400, 413) and _CONTEXT_LENGTH.search(detail):
                        kind = "context_length"
                    elif error.status_code in (400, 422) and level != "none" and _FORMAT_REJECTION.search(detail):
                        kind = "format_rejected"
                except openai.APIConnectionError as error:
                    kind, detail = "connection", f"{type(error).__name__}: {error}"
                except ValueError as error:  # a 2xx whose body is not JSON
                    kind, detail = "parse", f"response body is not JSON: {error}"
                finally:
                    self.pool.release(endpoint, kind)
                    self.counters.add("calls")
                    self.counters.latency(time.perf_counter() - started)

            if kind == "format_rejected":
                self._downgrade_format(level, detail)
                continue  # not an attempt: the same request in a form the server accepts
            if not kind:
                try:
                    return self._parse_answer(answer), ""
                except JudgementError as error:
                    kind, detail = error.kind, str(error)
            self.counters.add(f"errors/{kind}")
            self._log_once(kind, detail, endpoint.label)
            if kind == "auth":
                raise JudgeConfigError(f"judge 'openai' at {endpoint.label}: the server refused the key ({detail})")
            if not self.retry.should_retry(kind, attempt):
                return None, kind
            delay = self.retry.delay(attempt, retry_after)
            if loop.time() + delay >= deadline:
                return None, kind
            attempt += 1
            self.counters.add("retries")
            await asyncio.sleep(delay)

    def _parse_answer(self, answer: Any) -> Any:
        """The result of one chat completions body; raises ``JudgementError`` (retried) when it is unusable.
        A subclass with another prompt (``himed.verifiers.green``) parses its own answer format here."""
        return JudgeScore(**parse_judgement(_answer_text(answer)))

    def _downgrade_format(self, level: str, detail: str) -> None:
        with self._states_lock:
            if self._format_level != level:
                return  # another request already moved on
            self._format_level = FORMAT_LEVELS[FORMAT_LEVELS.index(level) + 1]
        self.counters.add("format_fallbacks")
        logger.warning(
            "judge %s rejected response_format %s (%s); using %s from now on",
            self._safe_url(),
            level,
            detail[:200],
            self._format_level,
        )

    def _log_once(self, kind: str, detail: str, where: str | None = None) -> None:
        if kind not in self._logged_kinds:
            self._logged_kinds.add(kind)
            logger.warning("judge %s (%s): %s failure: %s", where or self._safe_url(), self.model, kind, detail[:300])

    def _safe_url(self) -> str:
        """The base URL(s) without any user:password part, for logs and run records."""
        return ", ".join(endpoint.label for endpoint in self.pool.endpoints)

    # -- reporting -------------------------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        metrics = self.counters.snapshot()
        if len(self.pool) > 1:
            metrics.update(self.pool.metrics())
        return metrics

    def describe(self) -> dict[str, Any]:
        return {
            "judge/backend": self.backend,
            "judge/base_url": self._safe_url(),
            "judge/endpoints": self.pool.describe(),
            "judge/model": self.model,
            "judge/api_key_env": self.api_key_env,
            "judge/prompt_version": PROMPT_VERSION,
            "judge/prompt_hash": self.prompt_hash,
            "judge/response_format": self._format_level,
            "judge/http_backend": self.http_backend,
            "judge/concurrency": self.concurrency,
            "judge/timeout": self.timeout,
            "judge/batch_deadline": self.batch_deadline,
            "judge/max_retries": self.retry.max_retries,
            "judge/endpoint_max_failures": self.pool.max_failures,
            "judge/endpoint_cooldown": self.pool.cooldown,
            "judge/rpm": self.rpm,
            "judge/temperature": self.temperature,
            "judge/max_tokens": self.max_tokens,
            **self.metrics(),
        }

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for key in ("_states", "_states_lock", "_logged_kinds"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def __repr__(self) -> str:
        return f"OpenAIJudge(base_url={self._safe_url()!r}, model={self.model!r}, prompt_hash={self.prompt_hash!r})"
