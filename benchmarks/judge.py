"""Benchmark the OpenAI-compatible judge's service layer: concurrent vs sequential against a 50 ms server.

    python benchmarks/judge.py [--pairs 512] [--latency 0.05] [--concurrency 32] [--output benchmarks/results/judge.json]

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


def run_once(url: str, pairs: list[tuple[str, str]], concurrency: int, http_backend: str) -> dict:
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
        }
    )
    # Warm up outside the timing: imports, the client, the event loop and one open connection per slot (steady
    # state: in training the pool is already open when a step's batch arrives, unless the server's keep-alive
    # timeout closed it between steps).
    judge.score_batch_sync([(f"warm-up {i}", "ref") for i in range(concurrency)])
    load = os.getloadavg()[0]
    cpu, wall = time.process_time(), time.perf_counter()
    results = judge.score_batch_sync(pairs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    metrics = judge.metrics()
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=512, help="distinct (candidate, reference) pairs per run")
    parser.add_argument("--latency", type=float, default=0.05, help="server latency per request, seconds")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight for the concurrent runs")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "judge.json"), help="JSON to write")
    parser.add_argument("--skip-sequential", action="store_true", help="skip the (pairs x latency) sequential run")
    args = parser.parse_args(argv)
    os.environ.setdefault("OPENAI_API_KEY", "EMPTY")  # the local server takes any key

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
