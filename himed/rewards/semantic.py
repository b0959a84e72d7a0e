"""The semantic reward of HiMed-RL (eq. 6, the high level): a judge scores each report against its reference.

``J = accuracy + relevance + completeness`` (``aggregate: sum``, 0..3, the paper) or their mean (``mean``, 0..1),
the three STARD 2015 axes of ``himed.verifiers.prompt``. The judge comes from the ``judge`` kwarg (docs/rewards.md,
docs/judges.md): ``{backend: labeler}`` (offline, the default; ``judge: labeler`` for short) or
``{backend: openai, base_url, model, ...}`` (every key: ``himed.verifiers.openai_judge.OpenAIJudge``).

- Candidate: the lenient extraction of the completion (docs/data.md). An empty candidate is scored 0 on every
  axis without asking the judge: an empty report is a real (bad) answer, as for the token and concept rewards.
- A pair the judge could not score (error, timeout, unusable answer, batch deadline) is None, with its parts None;
  the composite imputes it (docs/rewards.md) and logs the failure rate. Never a silent 0.
- A judge set-up error that would fail every call (``JudgeConfigError``: a missing API key, a refused key) is
  raised, unlike other errors: a run whose semantic level is always None would train on the low level alone
  without anyone noticing.

Running it: ``reward(completions, **columns)`` is synchronous (TRL's contract, and what ``himed score`` calls); the
judge's requests still run concurrently, on the judge's own long-lived event loop. From async code, ``await
reward.acall(completions, **columns)``. With ``concurrent: true`` the reward's ``__call__`` is itself a coroutine
function, which TRL 1.16 detects (``is_async_callable`` looks at ``__call__``) and gathers with the other async
rewards on its background event loop; the default stays synchronous because every caller accepts that.

Logging: when TRL passes ``log_metric(name, value)``, each batch logs ``<name>/judge/calls``, ``.../cache_hits``,
``.../failures``, ``.../failure_rate``, ``.../latency_p50|p95`` (seconds) and ``.../batch_seconds``. ``metrics()``
gives the totals, ``describe()`` adds the judge's identity, and ``prompt_hash`` is what a checkpoint should record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from himed.data.sections import DEFAULT_SECTIONS, completion_text, extract_lenient, validate_sections
from himed.rewards.base import Reward, reference_texts
from himed.rewards.registry import register_reward
from himed.verifiers.base import Judge, JudgeConfigError, JudgeScore, build_judge
from himed.verifiers.prompt import AXES

logger = logging.getLogger(__name__)

AGGREGATES = ("sum", "mean")
# Per-batch judge counters worth a line in the training logs (the rest are in metrics()).
_LOGGED_COUNTERS = ("calls", "cache_hits", "retries", "failures", "latency_p50", "latency_p95")


@register_reward
class SemanticReward(Reward):
    """A judge's accuracy + relevance + completeness of the report against the reference (HiMed-RL eq. 6).

    Every option: the module docstring.
    """

    name = "semantic"
    level = "high"
    weight = 1.0

    parts = AXES

    @classmethod
    def from_config(cls, *, concurrent: bool = False, **kwargs: Any) -> SemanticReward:
        """The reward of a config entry: ``concurrent: true`` builds :class:`AsyncSemanticReward`.

        TRL decides whether to await a reward from its type (an ``async def __call__``), so the choice is a class.
        """
        return (AsyncSemanticReward if concurrent else SemanticReward)(**kwargs)

    def __init__(
        self,
        judge: dict[str, Any] | str | Judge | None = None,
        aggregate: str = "sum",
        concurrent: bool = False,
        sections: Sequence[str] = DEFAULT_SECTIONS,
    ):
        super().__init__(sections=validate_sections(sections))
        if aggregate not in AGGREGATES:
            raise ValueError(f"semantic reward: aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        if bool(concurrent) != isinstance(self, AsyncSemanticReward):
            raise ValueError(
                "semantic reward: concurrent is what the class is (AsyncSemanticReward has an async __call__); build "
                "it with SemanticReward.from_config(concurrent=...) or pick the class"
            )
        self.aggregate = aggregate
        self.concurrent = bool(concurrent)
        self.judge = build_judge(judge if judge is not None else {"backend": "labeler"})
        self.counts = {"pairs": 0, "none": 0, "empty_candidates": 0}

    @property
    def prompt_hash(self) -> str | None:
        """The identity of the judge's prompt (or derivation): record it in checkpoints next to the scores."""
        return self.judge.prompt_hash

    # -- scoring ---------------------------------------------------------------------------------------------

    def _pairs(self, texts: list[str], references: list[str]) -> tuple[list[str], list[int]]:
        """Lenient candidates, and the indices of the pairs that need the judge (non-empty on both sides)."""
        candidates = [extract_lenient(text, self.sections) for text in texts]
        to_judge = [i for i, (c, r) in enumerate(zip(candidates, references, strict=True)) if c and r.strip()]
        return candidates, to_judge

    def _results(
        self,
        candidates: list[str],
        references: list[str],
        to_judge: list[int],
        scores: list[JudgeScore | None],
        columns: dict[str, Any],
        mark: Any,
        started: float,
    ) -> list[dict[str, float | None]]:
        judged = dict(zip(to_judge, scores, strict=True))
        results: list[dict[str, float | None]] = []
        for i, (candidate, reference) in enumerate(zip(candidates, references, strict=True)):
            if not reference.strip():
                score = None  # an empty reference is a data error: nothing to judge against
            elif not candidate:
                score = JudgeScore(0.0, 0.0, 0.0)
                self.counts["empty_candidates"] += 1
            else:
                score = judged[i]
            if score is None:
                results.append({"value": None, **dict.fromkeys(AXES)})
            else:
                results.append({"value": score.total(self.aggregate), **score.as_dict()})
        self.counts["pairs"] += len(results)
        n_none = sum(result["value"] is None for result in results)
        self.counts["none"] += n_none
        self._log_batch(columns.get("log_metric"), len(results), n_none, mark, started)
        return results

    def _log_batch(self, log_metric: Callable[[str, float], None] | None, n: int, n_none: int, mark, started) -> None:
        if n_none:
            logger.debug("semantic reward %s: %d of %d pairs not scored", self.__name__, n_none, n)
        if not callable(log_metric):
            return
        batch = self.judge.counters.since(mark) if mark is not None else {}
        values = {f"judge/{key}": batch.get(f"judge/{key}") for key in _LOGGED_COUNTERS}
        values["judge/failure_rate"] = n_none / n if n else 0.0
        values["judge/batch_seconds"] = time.perf_counter() - started
        for key, value in values.items():
            if value is not None:
                try:
                    log_metric(f"{self.__name__}/{key}", float(value))
                except Exception as error:  # logging must never cost a step
                    logger.debug("log_metric failed: %s", error)

    def _mark(self) -> Any:
        counters = getattr(self.judge, "counters", None)
        return counters.mark() if counters is not None else None

    def score(self, texts: list[str], references: list[str], **columns: Any) -> list[dict[str, float | None]]:
        started, mark = time.perf_counter(), self._mark()
        candidates, to_judge = self._pairs(texts, references)
        scores = self.judge.score_batch_sync([(candidates[i], references[i]) for i in to_judge]) if to_judge else []
        return self._results(candidates, references, to_judge, scores, columns, mark, started)

    async def ascore(self, texts: list[str], references: list[str], **columns: Any) -> list[dict[str, float | None]]:
        """``score`` for async code: the judge's requests run on the caller's event loop."""
        started, mark = time.perf_counter(), self._mark()
        candidates, to_judge = self._pairs(texts, references)
        scores = await self.judge.score_batch([(candidates[i], references[i]) for i in to_judge]) if to_judge else []
        return self._results(candidates, references, to_judge, scores, columns, mark, started)

    def _failed(self, error: Exception, n: int) -> list[dict[str, float | None]]:
        if isinstance(error, JudgeConfigError):
            raise error
        kind = type(error).__name__
        if kind not in self._logged_errors:
            self._logged_errors.add(kind)
            logger.error(
                "semantic reward %s failed on a batch of %d (%s: %s); scored None",
                self.__name__,
                n,
                kind,
                error,
                exc_info=error,
            )
        self.counts["pairs"] += n
        self.counts["none"] += n
        return [{"value": None, **dict.fromkeys(AXES)} for _ in range(n)]

    def score_completions(self, completions: Sequence, **columns: Any) -> list[dict[str, float | None]]:
        """Per-completion value and parts; None on failure, except for judge set-up errors (module docstring)."""
        texts = [completion_text(c) for c in completions]
        try:
            return self.score(texts, reference_texts(columns, len(texts)), **columns)
        except Exception as error:
            return self._failed(error, len(texts))

    async def ascore_completions(self, completions: Sequence, **columns: Any) -> list[dict[str, float | None]]:
        """``score_completions`` for async code."""
        texts = [completion_text(c) for c in completions]
        try:
            return await self.ascore(texts, reference_texts(columns, len(texts)), **columns)
        except Exception as error:
            return self._failed(error, len(texts))

    async def acall(self, completions: Sequence, **columns: Any) -> list[float | None]:
        """The TRL reward contract, awaited: ``await reward.acall(completions, **columns)``."""
        return [parts["value"] for parts in await self.ascore_completions(completions, **columns)]

    def close(self) -> None:
        """Release the judge's event loop, HTTP clients and cache file (at the end of training; reusable after)."""
        self.judge.close()

    # -- reporting -------------------------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """Totals since the reward was built: the judge's ``judge/...`` counters plus the reward's None rate."""
        metrics = dict(self.judge.metrics())
        metrics["judge/failure_rate"] = self.counts["none"] / self.counts["pairs"] if self.counts["pairs"] else 0.0
        metrics["judge/empty_candidates"] = float(self.counts["empty_candidates"])
        return metrics

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable record of how the reward ran (no secrets): aggregate, judge identity, counters."""
        return {"aggregate": self.aggregate, "concurrent": self.concurrent, **self.judge.describe(), **self.metrics()}


class AsyncSemanticReward(SemanticReward):
    """``SemanticReward`` whose ``__call__`` is a coroutine function (``concurrent: true``); see the module docstring."""

    def __init__(self, *args: Any, concurrent: bool = True, **kwargs: Any):
        super().__init__(*args, concurrent=concurrent, **kwargs)

    async def __call__(self, completions: Sequence, **columns: Any) -> list[float | None]:
        return await self.acall(completions, **columns)
