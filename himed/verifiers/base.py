"""The semantic judge interface (docs/judges.md) and the registry that builds judges from reward configs.

A judge scores a batch of (candidate, reference) pairs; each result is a ``JudgeScore`` (accuracy, relevance,
completeness, each in [0, 1]) or None when the pair could not be scored (an error, a timeout, an unusable answer).
None is never replaced by 0 here: the reward passes it on and the composite imputes it (docs/rewards.md).

Judges are asynchronous (``await judge.score_batch(pairs)``) so that many requests can be in flight at once.
Synchronous callers use ``judge.score_batch_sync(pairs)``, which runs the batch on one event loop that the judge
keeps in a daemon thread for its whole life: the same loop every time, so an HTTP judge keeps one client and its
connection pool instead of paying a new client and new connections per batch.

Backends register themselves with ``@register_judge(name)``; ``build_judge({"backend": name, **kwargs})`` builds
one. Unknown backends and unknown keys are errors that name the valid ones.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from himed.verifiers.prompt import AXES

T = TypeVar("T")


class JudgeConfigError(ValueError):
    """A judge set-up error that would fail every request (a missing or refused API key): raised, never scored None.

    Any backend raises it for a problem no retry can fix; the semantic reward lets it through (a run whose high
    level is always None would silently train on the low level alone).
    """


@dataclass(frozen=True)
class JudgeScore:
    """One judged pair: the three STARD axes of HiMed-RL eq. 6, each in [0, 1]."""

    accuracy: float
    relevance: float
    completeness: float

    def __post_init__(self) -> None:
        for axis in AXES:
            value = getattr(self, axis)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"JudgeScore.{axis} must be a finite number, got {value!r}")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"JudgeScore.{axis} must be in [0, 1], got {value!r}")
            object.__setattr__(self, axis, float(value))

    def total(self, aggregate: str = "sum") -> float:
        """HiMed-RL eq. 6: J = accuracy + relevance + completeness (``sum``, 0..3) or their ``mean`` (0..1)."""
        total = self.accuracy + self.relevance + self.completeness
        if aggregate == "sum":
            return total
        if aggregate == "mean":
            return total / 3.0
        raise ValueError(f"unknown aggregate {aggregate!r}; use 'sum' or 'mean'")

    def as_dict(self) -> dict[str, float]:
        return {axis: getattr(self, axis) for axis in AXES}


Pair = tuple[str, str]


class _LoopThread:
    """One asyncio event loop running forever in a daemon thread: the home of a judge's synchronous calls."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name=name, daemon=True)
        self.thread.start()
        ready.wait()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coroutine.close()
            raise RuntimeError("score_batch_sync was called from the judge's own event loop; await score_batch")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


class Judge(ABC):
    """Base class of semantic judges. Subclasses set ``backend`` and implement ``score_batch``."""

    backend: str = "judge"
    # The identity of what produced a score (the prompt hash for an LLM judge); written next to results.
    prompt_hash: str | None = None

    @abstractmethod
    async def score_batch(self, pairs: Sequence[Pair]) -> list[JudgeScore | None]:
        """One result per (candidate, reference) pair, in order; None where the pair could not be scored."""

    def score_batch_sync(self, pairs: Sequence[Pair]) -> list[JudgeScore | None]:
        """``score_batch`` for synchronous code, on the judge's own long-lived event loop (module docstring)."""
        if not pairs:
            return []
        lock = self.__dict__.setdefault("_loop_lock", threading.Lock())
        with lock:
            if self.__dict__.get("_loop_thread") is None:
                self._loop_thread = _LoopThread(name=f"himed-judge-{self.backend}")
        return self._loop_thread.run(self.score_batch(list(pairs)))

    def metrics(self) -> dict[str, float]:
        """Numeric counters since the judge was built, under ``judge/...`` keys (for the trainer's logs)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """What a run should record about this judge (backend, model, prompt version and hash, counters).

        Never contains secrets: an API key is named by its environment variable, never read into this dict.
        """
        return {"judge/backend": self.backend, **self.metrics()}

    def close(self) -> None:
        """Release the judge's resources (its event loop thread); later calls start them again."""
        loop_thread = self.__dict__.pop("_loop_thread", None)
        if loop_thread is not None:
            loop_thread.stop()

    def __getstate__(self) -> dict[str, Any]:
        # Threads, loops and locks do not pickle and must not be shared across processes: each copy starts its own.
        return {key: value for key, value in self.__dict__.items() if key not in ("_loop_thread", "_loop_lock")}


_JUDGES: dict[str, type[Judge]] = {}
# Modules that register the built-in backends; imported on demand so that `openai` loads only when used.
_BUILTIN_BACKENDS = {"openai": "himed.verifiers.openai_judge", "labeler": "himed.verifiers.labeler_judge"}


def register_judge(name: str) -> Callable[[type[Judge]], type[Judge]]:
    """Class decorator: register a judge backend under ``name``; duplicate names are an error."""

    def decorator(cls: type[Judge]) -> type[Judge]:
        if name in _JUDGES and _JUDGES[name] is not cls:
            raise ValueError(f"judge backend {name!r} is already registered by {_JUDGES[name].__qualname__}")
        _JUDGES[name] = cls
        cls.backend = name
        return cls

    return decorator


def judge_backends() -> list[str]:
    """Names of the available judge backends."""
    return sorted(set(_JUDGES) | set(_BUILTIN_BACKENDS))


def build_judge(config: dict[str, Any] | str | Judge | None) -> Judge:
    """A judge from a reward's ``judge`` kwarg: ``{backend: openai|labeler, ...backend kwargs}``.

    A backend name alone (``judge: labeler``, as docs/rewards.md writes it) means that backend's defaults; a
    ready ``Judge`` is returned as is; None means the offline default ``{backend: labeler}``.
    """
    if isinstance(config, Judge):
        return config
    if isinstance(config, str):
        config = {"backend": config}
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"judge must be a mapping like {{backend: labeler}} or a backend name, got {config!r}")
    config = dict(config or {"backend": "labeler"})
    backend = config.pop("backend", None)
    if backend is None:
        raise ValueError(f"judge config needs a 'backend' ({', '.join(judge_backends())}); got keys {sorted(config)}")
    if backend not in _JUDGES and backend in _BUILTIN_BACKENDS:
        importlib.import_module(_BUILTIN_BACKENDS[backend])
    if backend not in _JUDGES:
        raise ValueError(f"unknown judge backend {backend!r}; available: {', '.join(judge_backends())}")
    cls = _JUDGES[backend]
    parameters = inspect.signature(cls.__init__).parameters
    unknown = sorted(key for key in config if key not in parameters or key == "self")
    if unknown:
        valid = sorted(key for key in parameters if key != "self")
        raise ValueError(f"judge backend {backend!r}: unknown keys {unknown}; valid keys: {', '.join(valid)}")
    return cls(**config)
