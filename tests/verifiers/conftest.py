"""A scripted OpenAI-compatible chat completions server on 127.0.0.1, for the judge tests and benchmarks/judge.py.

Real HTTP (asyncio streams, HTTP/1.1 keep-alive) so that the ``openai`` client is exercised end to end: its HTTP
layer (httpx2) is not intercepted by mocking libraries. The server runs in a daemon thread (or, for the benchmark,
in its own process) and stops by itself after ``lifetime`` seconds or ``max_requests`` requests.

Behaviour per request, first match wins: the ``queue`` of modes (consumed one per request), then ``rules``
(substring of the candidate -> mode), then ``default_mode``. Modes:

- ``good``: answers ``expected_scores(candidate, reference)`` as JSON;
- ``slow``: waits ``slow_seconds`` first, then answers as ``good``;
- ``429``: HTTP 429 with ``Retry-After: retry_after``; ``500``: HTTP 500; ``drop``: closes the connection;
- ``malformed``: 200 with text that holds no usable JSON; ``out_of_range``: 200 with accuracy 7;
- ``no_structured``: HTTP 400 when the request asks for a json_schema response format, else ``good`` wrapped in
  prose (what a server without structured outputs returns); ``think``: ``good`` after a Qwen3 ``<think>`` block.

With ``answer_text`` set (a function of the user message), ``good`` answers its text instead of the JSON scores (a
judge with another answer format, e.g. GREEN); ``rules`` then match substrings of the whole user message.

Every request's body and headers are recorded, with the candidate and reference found between the prompt's
delimiters (None when the delimiters are not there exactly once each), and the peak number of concurrent requests.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import deque
from typing import Any

import pytest

_CANDIDATE = re.compile(r"<candidate_report>\n(.*?)\n</candidate_report>", re.DOTALL)
_REFERENCE = re.compile(r"<reference_report>\n(.*?)\n</reference_report>", re.DOTALL)


def expected_scores(candidate: str, reference: str) -> dict[str, float]:
    """What ``good`` answers: deterministic and different across pairs, so a mixed-up fan-out shows."""
    return {
        "accuracy": 1.0 if candidate == reference else 0.5,
        "relevance": round(min(len(candidate), 100) / 100, 2),
        "completeness": 0.25 if "omit" in candidate else 0.75,
    }


def _extract(pattern: re.Pattern, text: str, opening: str, closing: str) -> str | None:
    if text.count(opening) != 1 or text.count(closing) != 1:
        return None
    match = pattern.search(text)
    return match.group(1) if match else None


class ScriptedJudgeServer:
    """See the module docstring. Use ``start()`` / ``stop()`` or the ``judge_server`` fixture."""

    def __init__(
        self,
        default_mode: str = "good",
        latency: float = 0.0,
        slow_seconds: float = 2.0,
        retry_after: str = "0",
        lifetime: float = 60.0,
        max_requests: int = 20_000,
        record: bool = True,
    ):
        self.default_mode = default_mode
        self.latency = latency
        self.slow_seconds = slow_seconds
        self.retry_after = retry_after
        self.lifetime = lifetime
        self.max_requests = max_requests
        self.record = record
        self.queue: deque[str] = deque()
        self.rules: dict[str, str] = {}
        self.answer_text = None  # optional: user message -> answer text for mode ``good``
        self.requests: list[dict[str, Any]] = []
        self.count = 0
        self.active = 0
        self.max_active = 0
        self.connections = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> ScriptedJudgeServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name="judge-test-server")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the test judge server did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        asyncio.run(self.serve(ready.set))

    async def serve(self, on_ready=None) -> None:
        """Serve until ``stop()``, ``lifetime`` seconds or ``max_requests`` requests, whichever comes first."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=256)
        self.port = server.sockets[0].getsockname()[1]
        if on_ready:
            on_ready()
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=self.lifetime)
        except TimeoutError:
            pass
        finally:
            server.close()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass  # the loop already finished (lifetime reached)
        if self._thread is not None:
            self._thread.join(10)

    # -- HTTP ----------------------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while not self._stop.is_set():
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                    return  # the client closed the connection, or the server is shutting down
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                keep = await self._respond(method, path, headers, body, writer)
                if not keep:
                    return
        except asyncio.CancelledError:
            return  # shutting down with a slow answer still pending: the client sees the connection close
        finally:
            writer.close()

    async def _respond(self, method: str, path: str, headers: dict, body: bytes, writer) -> bool:
        self.count += 1
        if self.count >= self.max_requests:
            self._stop.set()
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if method != "POST" or not path.endswith("/chat/completions"):
                await self._send(writer, 404, {"error": {"message": f"no route {method} {path}"}})
                return True
            request = json.loads(body or b"{}")
            user = next((m["content"] for m in request.get("messages", []) if m.get("role") == "user"), "")
            candidate = _extract(_CANDIDATE, user, "<candidate_report>", "</candidate_report>")
            reference = _extract(_REFERENCE, user, "<reference_report>", "</reference_report>")
            if self.record:
                self.requests.append(
                    {"body": request, "headers": headers, "candidate": candidate, "reference": reference}
                )
            mode = self._mode(candidate or (user if self.answer_text else ""))
            if self.latency:
                await asyncio.sleep(self.latency)
            if self.answer_text is not None and mode == "good":
                return await self._answer_content(self.answer_text(user), request, writer)
            return await self._answer(mode, request, candidate or "", reference or "", writer)
        finally:
            self.active -= 1

    def _mode(self, candidate: str) -> str:
        if self.queue:
            return self.queue.popleft()
        for substring, mode in self.rules.items():
            if substring in candidate:
                return mode
        return self.default_mode

    async def _answer(self, mode: str, request: dict, candidate: str, reference: str, writer) -> bool:
        scores = expected_scores(candidate, reference)
        if mode == "slow":
            await asyncio.sleep(self.slow_seconds)
            mode = "good"
        if mode == "429":
            await self._send(writer, 429, {"error": {"message": "slow down"}}, {"Retry-After": self.retry_after})
            return True
        if mode == "500":
            await self._send(writer, 500, {"error": {"message": "internal error"}})
            return True
        if mode == "drop":
            return False
        format_type = (request.get("response_format") or {}).get("type")
        if mode == "no_structured":
            if format_type == "json_schema":
                message = "response_format of type json_schema is not supported by this server"
                await self._send(writer, 400, {"error": {"message": message, "type": "BadRequestError"}})
                return True
            content = f"Here is my evaluation:\n```json\n{json.dumps(scores)}\n```\nThe candidate is fine."
        elif mode == "malformed":
            content = "The report looks {accurate, mostly"
        elif mode == "out_of_range":
            content = json.dumps({**scores, "accuracy": 7})
        elif mode == "think":
            content = '<think>The candidate says {"accuracy": 2}; check.</think>\n' + json.dumps(scores)
        elif mode == "good":
            content = json.dumps(scores)
        else:
            raise ValueError(f"unknown server mode {mode!r}")
        return await self._answer_content(content, request, writer)

    async def _answer_content(self, content: str, request: dict, writer) -> bool:
        payload = {
            "id": f"chatcmpl-{self.count}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", ""),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        await self._send(writer, 200, payload)
        return True

    async def _send(self, writer, status: int, payload: dict, extra_headers: dict | None = None) -> None:
        body = json.dumps(payload).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}.get(status, "Error")
        head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in (extra_headers or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()


@pytest.fixture
def judge_server():
    """A started ``ScriptedJudgeServer`` (mode ``good``, no latency), stopped after the test."""
    server = ScriptedJudgeServer(lifetime=60.0).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api_key(monkeypatch):
    """A dummy API key in the default environment variable (what a local vLLM server accepts)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret-4242")
    return "sk-test-not-a-secret-4242"


@pytest.fixture
def expected_score():
    """``expected_scores`` as the ``JudgeScore`` a judge should return for a pair the server answered ``good``."""
    from himed.verifiers.base import JudgeScore

    return lambda candidate, reference: JudgeScore(**expected_scores(candidate, reference))
