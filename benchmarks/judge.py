"""Benchmark the OpenAI-compatible judge's service layer: concurrent vs sequential against a 50 ms server.

    python benchmarks/judge.py [--pairs 512] [--latency 0.05] [--concurrency 32] [--output benchmarks/results/judge.json]
    python benchmarks/judge.py --pool [--pairs 512] [--latency 0.1] [--capacity 8] [--concurrency 16]

The server is the scripted OpenAI-compatible app of tests/verifiers/conftest.py, in its own process (so that it
does not share the client's interpreter lock), answering every request after ``--latency`` seconds. The same
``OpenAIJudge`` code runs three ways in one run, each on ``--pairs`` distinct pairs with a fresh judge (no cache
hits): concurrency N with the aiohttp transport (the default when installed), concurrency N with the default
httpx2 transport, and concurrency 1 (sequential). Targets on 2 cores: concurrent wall time <= 1.5x the ideal
(pairs x latency / concurrency) and >= 20x faster than sequential.

Each run records its wall time, the client process's CPU time per request (what limits a busy 2-core machine)
and the load average, because on a shared machine the wall time depends on what else runs. Two calibrations
separate the machine from the client: the same schedule of sleeps with no HTTP at all (the scheduler's floor), and
the same requests from a bare aiohttp session without the openai client (a Python HTTP client's floor).

``--pool`` measures the endpoint pool (``himed.verifiers.pool``, docs/judges.md) instead, writing
``benchmarks/results/judge_pool.json``. Each scripted server then has a ``--capacity``: it works on at most that many
requests at once, each for ``--latency`` seconds, and queues the rest, as a real server's batch does, so that its
throughput is bounded (capacity / latency) and a second server can add to it. Three runs, each with a fresh judge at
``--concurrency`` per endpoint: one endpoint; two endpoints (``base_url`` a list); two endpoints of which one stops
after answering an eighth of the pairs (in-flight requests dropped, later connections refused), so that every pair
it had not answered must be retried on the other one. Each records the wall time, how many pairs were scored, and
the per-endpoint calls, failures and ejections.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import multiprocessing
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_MODULE = ROOT / "tests" / "verifiers" / "conftest.py"


def _server_module():
    spec = importlib.util.spec_from_file_location("himed_judge_test_server", SERVER_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _serve(port_queue, latency: float, lifetime: float) -> None:
    server = _server_module().ScriptedJudgeServer(latency=latency, record=False, lifetime=lifetime)
    asyncio.run(server.serve(lambda: port_queue.put(server.port)))


def _serve_capped(port_queue, latency: float, capacity: int, lifetime: float, max_requests: int) -> None:
    base = _server_module().ScriptedJudgeServer

    class CappedServer(base):
        """At most ``capacity`` requests worked on at once, each for ``latency`` seconds; the rest wait their turn."""

        slots: asyncio.Semaphore | None = None

        async def _answer(self, *args):
            if self.slots is None:
                self.slots = asyncio.Semaphore(capacity)  # created on the server's own loop
            async with self.slots:
                await asyncio.sleep(latency)
                return await super()._answer(*args)

    server = CappedServer(record=False, lifetime=lifetime, max_requests=max_requests)
    asyncio.run(server.serve(lambda: port_queue.put(server.port)))


def run_once(
    url: str | list[str],
    pairs: list[tuple[str, str]],
    concurrency: int,
    http_backend: str,
    warm_up: bool = True,
    **judge_options,
) -> dict:
    from himed.verifiers.base import build_judge

    judge = build_judge(
        {
            "backend": "openai",
            "base_url": url,
            "model": "bench-judge",
            "concurrency": concurrency,
            "timeout": 30.0,
            "batch_deadline": 600.0,
            "http_backend": http_backend,
            **judge_options,
        }
    )
    # Warm up outside the timing: imports, the client, the event loop and one open connection per slot (steady
    # state: in training the pool is already open when a step's batch arrives, unless the server's keep-alive
    # timeout closed it between steps).
    if warm_up:
        judge.score_batch_sync([(f"warm-up {i}", "ref") for i in range(concurrency * len(judge.pool))])
    load = os.getloadavg()[0]
    cpu, wall = time.process_time(), time.perf_counter()
    results = judge.score_batch_sync(pairs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    metrics = judge.metrics()
    endpoints = judge.describe()["judge/endpoints"]
    judge.close()
    return {
        "concurrency": concurrency,
        "http_backend": http_backend,
        "wall_s": round(wall, 3),
        "client_cpu_ms_per_request": round(1000 * cpu / len(pairs), 3),
        "requests_per_s": round(len(pairs) / wall, 1),
        "scored": sum(result is not None for result in results),
        "latency_p50_s": round(metrics.get("judge/latency_p50", float("nan")), 4),
        "latency_p95_s": round(metrics.get("judge/latency_p95", float("nan")), 4),
        "loadavg_1min_before": round(load, 2),
        "failures": int(metrics.get("judge/failures", 0)),
        "retries": int(metrics.get("judge/retries", 0)),
        "endpoints": [{key: e[key] for key in ("state", "calls", "failures", "ejections")} for e in endpoints],
    }


def calibrate_sleep(n: int, latency: float, concurrency: int) -> dict:
    """No HTTP at all: n sleeps of ``latency``, ``concurrency`` at a time. What the machine's scheduler alone costs."""

    async def run() -> float:
        semaphore = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with semaphore:
                await asyncio.sleep(latency)

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return time.perf_counter() - started

    return {
        "calibration": "asyncio.sleep only, no HTTP",
        "concurrency": concurrency,
        "wall_s": round(asyncio.run(run()), 3),
    }


def calibrate_raw_aiohttp(url: str, n: int, concurrency: int) -> dict | None:
    """The same requests with a bare aiohttp session (no openai client, no judge): a Python HTTP client's floor."""
    if importlib.util.find_spec("aiohttp") is None:
        return None
    import aiohttp

    from himed.verifiers.prompt import build_messages, response_format

    async def run() -> tuple[float, float, int]:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            semaphore = asyncio.Semaphore(concurrency)

            async def one(i: int) -> bool:
                body = {
                    "model": "bench-judge",
                    "messages": build_messages(f"raw candidate {i}", "reference"),
                    "temperature": 0.0,
                    "max_tokens": 256,
                    "response_format": response_format("json_schema"),
                }
                async with semaphore:
                    async with session.post(f"{url}/chat/completions", json=body) as response:
                        answer = await response.json()
                return bool(answer["choices"][0]["message"]["content"])

            await asyncio.gather(*(one(-i - 1) for i in range(concurrency)))  # open the pool
            cpu, started = time.process_time(), time.perf_counter()
            ok = sum(await asyncio.gather(*(one(i) for i in range(n))))
            return time.perf_counter() - started, time.process_time() - cpu, ok

    wall, cpu, ok = asyncio.run(run())
    return {
        "calibration": "bare aiohttp session, same requests, no openai client",
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "client_cpu_ms_per_request": round(1000 * cpu / n, 3),
        "scored": ok,
    }


def _start_capped_server(latency: float, capacity: int, lifetime: float, max_requests: int = 10**9):
    context = multiprocessing.get_context("spawn")
    ports = context.Queue()
    process = context.Process(
        target=_serve_capped, args=(ports, latency, capacity, lifetime, max_requests), daemon=True
    )
    process.start()
    return process, f"http://127.0.0.1:{ports.get(timeout=60)}/v1"


def pool_main(args, argv: list[str] | None) -> int:
    """``--pool``: one endpoint, two endpoints, two endpoints with one dying (module docstring)."""
    lifetime = 120.0 + 6 * args.pairs * args.latency / args.capacity
    backend = "aiohttp" if importlib.util.find_spec("aiohttp") is not None else "httpx2"
    options = {"endpoint_max_failures": 3, "endpoint_cooldown": 600.0, "max_retries": 3, "backoff_max": 0.5}

    def pairs(tag: str) -> list[tuple[str, str]]:
        return [(f"{tag} candidate report {i}: the heart is enlarged.", f"reference {i}") for i in range(args.pairs)]

    runs, processes = [], []
    try:
        first, url_a = _start_capped_server(args.latency, args.capacity, lifetime)
        second, url_b = _start_capped_server(args.latency, args.capacity, lifetime)
        processes += [first, second]
        for name, urls in (("one endpoint", url_a), ("two endpoints", [url_a, url_b])):
            runs.append({"run": name, **run_once(urls, pairs(name), args.concurrency, backend, **options)})
            print(json.dumps(runs[-1]), file=sys.stderr)
        # The dying server answers an eighth of the pairs (its share would be a half), then stops mid-batch; no
        # warm-up, so that its request count is the batch's.
        dying, url_c = _start_capped_server(args.latency, args.capacity, lifetime, max_requests=args.pairs // 8)
        processes.append(dying)
        name = "two endpoints, one dies mid-batch"
        run = run_once([url_a, url_c], pairs(name), args.concurrency, backend, warm_up=False, **options)
        runs.append({"run": name, "dies_after_requests": args.pairs // 8, **run})
        print(json.dumps(runs[-1]), file=sys.stderr)
    finally:
        for process in processes:
            process.terminate()
            process.join(10)

    one, two, died = runs
    server_bound = args.pairs * args.latency / args.capacity  # one server's floor: its queue, not the client
    summary = {
        "one_server_floor_s": round(server_bound, 3),
        "two_over_one_speedup": round(one["wall_s"] / two["wall_s"], 2),
        "ideal_two_over_one_speedup": 2.0,
        "dying_run_scored": died["scored"],
        "dying_run_lost": args.pairs - died["scored"],
        "dying_run_over_one_endpoint": round(died["wall_s"] / one["wall_s"], 2),
    }
    record = {
        "benchmark": "judge_pool",
        "command": " ".join(["python benchmarks/judge.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "pairs": args.pairs,
        "latency_s": args.latency,
        "capacity_per_server": args.capacity,
        "concurrency_per_endpoint": args.concurrency,
        "http_backend": backend,
        "judge_options": options,
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
        "summary": summary,
        "runs": runs,
    }
    output = Path(args.output or ROOT / "benchmarks" / "results" / "judge_pool.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=512, help="distinct (candidate, reference) pairs per run")
    parser.add_argument("--latency", type=float, default=None, help="server latency per request, s (0.05; pool 0.1)")
    parser.add_argument("--concurrency", type=int, default=None, help="requests in flight (32; pool: 16 per endpoint)")
    parser.add_argument(
        "--output", default=None, help="JSON to write (benchmarks/results/judge.json or judge_pool.json)"
    )
    parser.add_argument("--skip-sequential", action="store_true", help="skip the (pairs x latency) sequential run")
    parser.add_argument("--pool", action="store_true", help="benchmark the endpoint pool instead (module docstring)")
    parser.add_argument("--capacity", type=int, default=8, help="--pool: requests each server works on at once")
    args = parser.parse_args(argv)
    os.environ.setdefault("OPENAI_API_KEY", "EMPTY")  # the local server takes any key
    if args.pool:
        args.latency = 0.1 if args.latency is None else args.latency
        args.concurrency = 16 if args.concurrency is None else args.concurrency
        return pool_main(args, argv)
    args.latency = 0.05 if args.latency is None else args.latency
    args.concurrency = 32 if args.concurrency is None else args.concurrency
    args.output = args.output or str(ROOT / "benchmarks" / "results" / "judge.json")

    lifetime = 60.0 + 3 * args.pairs * args.latency  # the server stops by itself even if this script dies
    ports = multiprocessing.get_context("spawn").Queue()
    server = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(ports, args.latency, lifetime), daemon=True
    )
    server.start()
    url = f"http://127.0.0.1:{ports.get(timeout=60)}/v1"

    def pairs(tag: str) -> list[tuple[str, str]]:
        return [(f"{tag} candidate report {i}: the heart is enlarged.", f"reference {i}") for i in range(args.pairs)]

    backends = ["httpx2"]
    if importlib.util.find_spec("aiohttp") is not None:
        backends.insert(0, "aiohttp")
    runs = []
    try:
        for backend in backends:
            runs.append(run_once(url, pairs(f"concurrent-{backend}"), args.concurrency, backend))
            print(json.dumps(runs[-1]), file=sys.stderr)
        if not args.skip_sequential:
            runs.append(run_once(url, pairs("sequential"), 1, backends[0]))
            print(json.dumps(runs[-1]), file=sys.stderr)
        calibrations = [calibrate_sleep(args.pairs, args.latency, args.concurrency)]
        raw = calibrate_raw_aiohttp(url, args.pairs, args.concurrency)
        if raw is not None:
            calibrations.append(raw)
        for calibration in calibrations:
            print(json.dumps(calibration), file=sys.stderr)
    finally:
        server.terminate()
        server.join(10)

    ideal = args.pairs * args.latency / args.concurrency
    best = runs[0]
    sequential = next((run for run in runs if run["concurrency"] == 1), None)
    summary = {
        "ideal_s": round(ideal, 3),
        "default_transport": backends[0],
        "concurrent_over_ideal": round(best["wall_s"] / ideal, 3),
        "target_concurrent_over_ideal": 1.5,
        "speedup_vs_sequential": round(sequential["wall_s"] / best["wall_s"], 2) if sequential else None,
        "target_speedup_vs_sequential": 20.0,
    }
    summary["meets_ideal_target"] = summary["concurrent_over_ideal"] <= 1.5
    summary["meets_speedup_target"] = sequential is not None and summary["speedup_vs_sequential"] >= 20.0
    import openai

    record = {
        "benchmark": "judge",
        "command": " ".join(["python benchmarks/judge.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "versions": {
            "openai": openai.__version__,
            "aiohttp": importlib.import_module("aiohttp").__version__ if "aiohttp" in backends else None,
        },
        "pairs": args.pairs,
        "latency_s": args.latency,
        "concurrency": args.concurrency,
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
        "summary": summary,
        "runs": runs,
        "calibrations": calibrations,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
