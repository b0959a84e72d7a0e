"""Checking every image of a dataset once: in parallel, with a progress bar, cached for all ranks and later runs.

``check_image_files(paths, level, cache_key=...)`` returns the problem of each bad file (``rows.image_file_problem``)
and nothing for good ones. The files are checked by a thread pool in chunks: opening, verifying and decoding are
file reads plus PIL's C code, which releases the GIL, so threads scale without pickling paths to processes.

The result of every file is cached in ``<cache dir>/<key>.json`` keyed by the file's size and mtime, so a second
load of the same dataset (the next epoch's run, the evaluation, the other ranks of a multi-GPU run) checks only the
files that changed. An exclusive ``flock`` on the cache during the check makes the ranks of one run take turns: the
first checks, the others wait and then find every result in the cache (on one machine, or on a shared file system
that supports flock). The cache directory is ``$HIMED_CACHE_DIR/image_checks``, else ``~/.cache/himed/image_checks``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from himed.data.rows import IMAGE_CHECK_LEVELS, image_file_problem

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
PROGRESS_MIN_FILES = 1000  # smaller checks take well under a second: no bar
_CHUNK = 256  # files per pool task: big enough that the pool's overhead is small, small enough for a smooth bar


def cache_dir() -> Path:
    root = os.environ.get("HIMED_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "himed") / "image_checks"


def default_workers() -> int:
    return max(1, min(32, 2 * (os.cpu_count() or 1)))


def _stat_key(path: str) -> list[int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _check_chunk(paths: Sequence[str], level: str, cached: dict) -> list[tuple[str, list]]:
    """``(path, [size, mtime_ns, reason, message])`` for each path, reusing a cached result whose key still holds."""
    out = []
    for path in paths:
        key = _stat_key(path)
        hit = cached.get(path)
        if key is not None and hit is not None and hit[:2] == key:
            out.append((path, hit))
            continue
        problem = image_file_problem(path, level)
        reason, message = problem if problem is not None else (None, None)
        out.append((path, [*(key or [-1, -1]), reason, message]))
    return out


def _progress(total: int, level: str):
    from tqdm.auto import tqdm

    # mininterval: a bar in a log file (nohup, Slurm) writes a line every 10 s, not hundreds.
    return tqdm(
        total=total, desc=f"checking images ({level})", unit="img", mininterval=10.0, disable=total < PROGRESS_MIN_FILES
    )


def check_image_files(
    paths: Sequence[str],
    level: str,
    *,
    cache_key: str | None = None,
    workers: int | None = None,
) -> dict[str, tuple[str, str]]:
    """``{path: (reason, message)}`` for every path in ``paths`` that fails the ``level`` check.

    ``cache_key`` names the dataset (e.g. its root folder and split); None checks without a cache.
    """
    if level not in IMAGE_CHECK_LEVELS:
        raise ValueError(f"unknown image check level {level!r}; use one of {', '.join(IMAGE_CHECK_LEVELS)}")
    unique = list(dict.fromkeys(paths))
    if level == "none" or not unique:
        return {}
    if cache_key is None:
        return _run_checks(unique, level, {}, workers)[0]
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(f"{CACHE_VERSION}\n{level}\n{cache_key}".encode()).hexdigest()[:16]
    cache_file = directory / f"{digest}.json"
    with open(directory / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other ranks wait here, then read what the first one wrote
        cached = _read_cache(cache_file, level, cache_key)
        problems, results, reused = _run_checks(unique, level, cached, workers)
        if reused < len(unique):
            cached.update(results)
            temporary = cache_file.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps({"level": level, "key": cache_key, "files": cached}))
            os.replace(temporary, cache_file)
        logger.info(
            "image check (%s) of %d files: %d bad, %d results from the cache %s",
            level,
            len(unique),
            len(problems),
            reused,
            cache_file,
        )
    return problems


def _read_cache(cache_file: Path, level: str, cache_key: str) -> dict:
    if not cache_file.is_file():
        return {}
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError) as error:  # a damaged cache only costs a re-check
        logger.warning("image check cache %s is unreadable (%s); checking again", cache_file, error)
        return {}
    if data.get("level") != level or data.get("key") != cache_key:
        return {}
    return data.get("files", {})


def _run_checks(
    paths: list[str], level: str, cached: dict, workers: int | None
) -> tuple[dict[str, tuple[str, str]], dict[str, list], int]:
    """Check ``paths`` in a thread pool: (problems, every result, how many came from ``cached``)."""
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    results: dict[str, list] = {}
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool, _progress(len(paths), level) as bar:
        for chunk_results in pool.map(lambda chunk: _check_chunk(chunk, level, cached), chunks):
            results.update(chunk_results)
            bar.update(len(chunk_results))
    reused = sum(1 for path, result in results.items() if cached.get(path) is result)
    problems = {path: (r[2], r[3]) for path, r in results.items() if r[2] is not None}
    return problems, results, reused
