"""The hierarchical composite reward of HiMed-RL: one object that the GRPO trainer, ``himed score`` and the
pipeline's reward summary share (``docs/rewards.md``, ``docs/architecture.md``).

HiMed-RL eq. 8-9: ``total(t) = alpha_low(t) * sum_i w_i r_i (low level) + alpha_high(t) * sum_j w_j r_j (high)``.
``CompositeReward.from_config(block, sections=...)`` resolves and builds every entry of a reward config block once,
builds its schedule once and fixes the imputation mode. Then:

- ``functions``: the reward callables, in order: TRL's ``reward_funcs``;
- ``weights(t)``: ``alpha_level(t) * w_i`` per component: TRL's ``reward_weights`` at step ``t``, so TRL's weighted
  sum *is* eq. 8;
- ``impute(matrix, group_size)`` and ``failure_rates(matrix)`` on a gathered (completions x components) matrix;
- ``totals(matrix, t)``: eq. 8-9 per completion (``himed score``, the pipeline's summary);
- ``describe()``: each component's optional ``describe()`` dict, never raising (checkpoint provenance, ``himed
  score``'s summary).

A failed component (``None``, NaN in TRL's gathered ``rewards_per_func``) is imputed per group before the total is
formed: ``group_mean`` gives it the group's mean of that component, so the failure does not move the completion's
advantage; ``zero`` gives it 0; ``none`` (``himed score`` only) leaves it, so a total that needs it is NaN. A group in
which every value of a component failed gets 0 for that component (a constant within the group, which moves no
advantage). TRL itself would ``nansum`` (a failure counts as 0 and looks like a wrong answer), which is why the
trainer imputes first.

Optional protocol for reward-specific information (``describe``): a reward object may define
``describe() -> dict[str, Any]`` returning a small JSON-serialisable summary of how it ran (e.g. the METEOR
backend in use, a judge's request/cache/failure counters).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from himed.rewards.config import IMPUTE_CHOICES, IMPUTE_MODES, RewardEntryConfig, RewardsConfig
from himed.rewards.registry import build_reward
from himed.rewards.schedules import Schedule

logger = logging.getLogger(__name__)


@dataclass
class RewardComponent:
    """One reward of the composite: its logged name, the TRL-style callable, its level and weight ``w_i``."""

    name: str
    fn: Callable[..., Any]
    level: str
    weight: float

    @property
    def is_async(self) -> bool:
        """True when calling ``fn`` returns a coroutine (TRL then runs it on its event loop)."""
        return _is_async_callable(self.fn)

    def score_completions(self, completions: Sequence, **columns: Any) -> list[dict[str, Any]]:
        """Per-completion ``{"value": ..., part: ...}``; plain functions give ``{"value": ...}`` only.

        Coroutines (async rewards) are run to completion with ``asyncio.run``: call this outside an event loop.
        """
        scorer = getattr(self.fn, "score_completions", None)
        if callable(scorer):
            result = _resolve(scorer(completions, **columns))
            rows = [dict(row) for row in result]
        else:
            rows = [{"value": value} for value in _resolve(self.fn(completions, **columns))]
        if len(rows) != len(completions):
            raise ValueError(f"reward {self.name!r} returned {len(rows)} values for {len(completions)} completions")
        return rows

    def describe(self) -> dict[str, Any]:
        """The reward's ``describe()`` dict when it has one (module docstring), else ``{}``; never raises."""
        describe = getattr(self.fn, "describe", None)
        if not callable(describe):
            return {}
        try:
            info = describe()
        except Exception as error:  # reporting must not hide the scores or crash a checkpoint save
            logger.warning("describe() of reward %s failed: %s", self.name, error)
            return {"describe_error": f"{type(error).__name__}: {error}"}
        return dict(info) if isinstance(info, Mapping) else {"info": info}


def _is_async_callable(fn: Callable) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _resolve(result: Any) -> Any:
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(awaitable):
    return await awaitable


def _as_matrix(rewards: Any) -> tuple[Any, bool]:
    """(array, is_torch). Lists become float64 numpy arrays with None as NaN."""
    # A tensor can only exist if torch is already imported; looking it up keeps himed score from importing torch.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(rewards, torch.Tensor):
        return rewards, True
    if isinstance(rewards, np.ndarray):
        return rewards, False
    return np.array([[np.nan if v is None else v for v in row] for row in rewards], dtype=np.float64), False


def impute(rewards: Any, group_size: int, mode: str = "group_mean") -> Any:
    """Fill failed values of a (completions x components) matrix, per contiguous group of ``group_size`` rows.

    Failed = NaN (TRL's None) or any other non-finite value. ``group_mean``: the mean of that component over the
    group's finite values; a group where every value failed gets 0. ``zero``: 0. Returns a new array of the same
    type, dtype, device and shape (``docs/rewards.md``, imputation).
    """
    if mode not in IMPUTE_MODES:
        raise ValueError(f"impute mode must be one of {', '.join(IMPUTE_MODES)}, got {mode!r}")
    matrix, is_torch = _as_matrix(rewards)
    if matrix.ndim != 2:
        raise ValueError(f"impute expects a (completions x components) matrix, got shape {tuple(matrix.shape)}")
    n, k = matrix.shape
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0 or n % group_size:
        raise ValueError(f"group_size must be a positive integer dividing the {n} rows, got {group_size!r}")
    if is_torch:
        import torch

        failed = ~torch.isfinite(matrix)
        if mode == "zero":
            return torch.where(failed, torch.zeros_like(matrix), matrix)
        grouped = torch.where(failed, torch.zeros_like(matrix), matrix).reshape(n // group_size, group_size, k)
        counts = (~failed).reshape(n // group_size, group_size, k).sum(dim=1, keepdim=True)
        means = grouped.sum(dim=1, keepdim=True) / counts.clamp(min=1).to(matrix.dtype)  # 0 where all failed
        filled = means.expand(-1, group_size, -1).reshape(n, k)
        return torch.where(failed, filled, matrix)
    failed = ~np.isfinite(matrix)
    if mode == "zero":
        return np.where(failed, 0, matrix).astype(matrix.dtype, copy=False)
    grouped = np.where(failed, 0, matrix).reshape(n // group_size, group_size, k)
    counts = (~failed).reshape(n // group_size, group_size, k).sum(axis=1, keepdims=True)
    means = grouped.sum(axis=1, keepdims=True) / np.maximum(counts, 1)  # 0 where all failed
    filled = np.broadcast_to(means, grouped.shape).reshape(n, k)
    return np.where(failed, filled, matrix).astype(matrix.dtype, copy=False)


def failure_rates(rewards: Any) -> list[float]:
    """Per component (column), the fraction of values that failed (None, NaN or non-finite): logged as
    ``rewards/<name>/failure_rate``. An empty matrix has rate 0."""
    matrix, is_torch = _as_matrix(rewards)
    if matrix.ndim != 2:
        raise ValueError(f"failure_rates expects a (completions x components) matrix, got shape {tuple(matrix.shape)}")
    if matrix.shape[0] == 0:
        return [0.0] * matrix.shape[1]
    if is_torch:
        import torch

        return (~torch.isfinite(matrix)).float().mean(dim=0).tolist()
    return (~np.isfinite(matrix)).mean(axis=0).tolist()


def total(rewards: Any, weights: Sequence[float]) -> Any:
    """HiMed-RL eq. 8-9 with ``weights = CompositeReward.weights(t)``: a row gives a float, a matrix one per row.

    Components with weight 0 are not needed and are skipped (a None there does not matter); a failed needed value
    makes the total NaN (impute first, as the trainer does; ``himed score --impute none`` writes it as null).
    """
    is_matrix = _is_matrix_like(rewards)
    if not is_matrix and getattr(rewards, "ndim", None) == 1:
        rewards = rewards[None, :]  # one row, kept as a tensor/array
    elif not is_matrix:
        rewards = [rewards]
    matrix, is_torch = _as_matrix(rewards)
    weights = [float(w) for w in weights]
    if matrix.shape[1] != len(weights):
        raise ValueError(f"{matrix.shape[1]} reward components but {len(weights)} weights")
    needed = [i for i, w in enumerate(weights) if w != 0.0]
    if is_torch:
        import torch

        w = torch.tensor([weights[i] for i in needed], dtype=matrix.dtype, device=matrix.device)
        result = (matrix[:, needed] * w).sum(dim=1)
    else:
        result = (matrix[:, needed] * np.array([weights[i] for i in needed], dtype=np.float64)).sum(axis=1)
    return result if is_matrix else float(result[0])


def _is_matrix_like(rewards: Any) -> bool:
    ndim = getattr(rewards, "ndim", None)
    if ndim is not None:
        return ndim == 2
    return bool(rewards) and isinstance(rewards[0], Sequence | np.ndarray) and not isinstance(rewards[0], str)


def _accepts_keyword(factory: Callable, keyword: str) -> bool:
    """Whether ``factory`` (a class or function) takes ``keyword`` explicitly or through ``**kwargs`` (classes)."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    if keyword in parameters:
        return True
    # A class with **kwargs usually forwards them to Reward.__init__(sections=...); a plain function's **kwargs
    # receives dataset columns and is left alone.
    return inspect.isclass(factory) and any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _build_component(index: int, entry: RewardEntryConfig, sections: Sequence[str] | None) -> RewardComponent:
    """Instantiate one entry with the reward the config already resolved; ``sections`` reaches rewards that take it
    (unless the entry's kwargs set it). Bad kwargs raise ValueError naming the entry."""
    kwargs = dict(entry.kwargs)
    if sections is not None and "sections" not in kwargs and _accepts_keyword(entry.info.factory, "sections"):
        kwargs["sections"] = tuple(sections)
    try:
        fn, _ = build_reward(entry.info, kwargs, alias=entry.entry_name)
    except ValueError as error:
        raise ValueError(f"rewards[{index}] ({entry.entry_name}): {error}") from None
    return RewardComponent(name=entry.entry_name, fn=fn, level=entry.level, weight=float(entry.weight))


class CompositeReward:
    """HiMed-RL eq. 8-9 over built reward components, with their schedule and imputation (module docstring)."""

    def __init__(
        self,
        components: Sequence[RewardComponent],
        schedule: Schedule,
        impute: str = "group_mean",
        config: RewardsConfig | None = None,
    ):
        if impute not in IMPUTE_CHOICES:
            raise ValueError(f"impute mode must be one of {', '.join(IMPUTE_CHOICES)}, got {impute!r}")
        if not components:
            raise ValueError("a composite reward needs at least one component, e.g. rewards: [{name: token}]")
        self.components = list(components)
        self.schedule = schedule
        self.impute_mode = impute
        self.config = config

    @classmethod
    def from_config(
        cls,
        config: RewardsConfig | Mapping[str, Any],
        sections: Sequence[str] | None = None,
        impute: str | None = None,
        where: str = "rewards config",
    ) -> CompositeReward:
        """Build every entry of a reward config block once, in order (the order of TRL's ``reward_funcs``).

        ``config``: a parsed ``RewardsConfig`` or the raw block (errors then start with ``where``). ``sections``: the
        recipe's completion sections, given to every reward that takes them. ``impute`` overrides the block's mode
        (``himed score --impute``). Building validates what parsing cannot: every reward's kwargs, a judge's keys
        (without contacting it), a labeler's set-up.
        """
        if not isinstance(config, RewardsConfig):
            config = RewardsConfig.from_dict(config, where=where)
        components = [_build_component(i, entry, sections) for i, entry in enumerate(config.rewards)]
        return cls(components, config.schedule.build(), impute or config.impute, config)

    @property
    def names(self) -> list[str]:
        return [component.name for component in self.components]

    @property
    def functions(self) -> list[Callable[..., Any]]:
        """The reward callables, in order: what TRL receives as ``reward_funcs``."""
        return [component.fn for component in self.components]

    def weights(self, step: float) -> list[float]:
        """``alpha_level(t) * w_i`` per component (HiMed-RL eq. 8-10): TRL's ``reward_weights`` at step ``t``."""
        alphas = self.schedule.alphas(step)
        return [alphas[component.level] * component.weight for component in self.components]

    @property
    def end_step(self) -> float:
        """The step from which the schedule no longer changes: where "the end of the schedule" is evaluated."""
        return float(self.schedule.end_step())

    def failure_rates(self, matrix: Any) -> dict[str, float]:
        """Per component name, the fraction of failed values (logged as ``rewards/<name>/failure_rate``)."""
        return {name: float(rate) for name, rate in zip(self.names, failure_rates(matrix), strict=True)}

    def impute(self, matrix: Any, group_size: int) -> Any:
        """Fill the failed values of a gathered (completions x components) matrix by the composite's mode."""
        if self.impute_mode == "none":
            return _as_matrix(matrix)[0]
        return impute(matrix, group_size=group_size, mode=self.impute_mode)

    def totals(self, matrix: Any, step: float) -> Any:
        """HiMed-RL eq. 8-9 per completion at step ``t`` (NaN where a needed value failed: impute first)."""
        return total(matrix, self.weights(step))

    def score(self, completions: Sequence, **columns: Any) -> tuple[list[list[dict[str, Any]]], np.ndarray]:
        """Score a batch outside the trainer: per component the per-completion dicts (``{"value": ..., part: ...}``),
        and the (completions x components) matrix of values, NaN where a value failed.

        A component that raises is logged and scored None throughout: one broken reward must not lose the others.
        """
        parts = []
        for component in self.components:
            try:
                rows = component.score_completions(completions, **columns)
            except Exception as error:
                logger.error("reward %s failed on the whole batch: %s: %s", component.name, type(error).__name__, error)
                rows = [{"value": None} for _ in completions]
            parts.append(rows)
        matrix = np.array(
            [[_as_float(rows[i].get("value")) for rows in parts] for i in range(len(completions))], dtype=np.float64
        ).reshape(len(completions), len(self.components))
        return parts, matrix

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per component name, its non-empty ``describe()`` dict; never raises (a raising one is recorded)."""
        described = {component.name: component.describe() for component in self.components}
        return {name: info for name, info in described.items() if info}

    def provenance(self) -> dict[str, Any]:
        """What defines this reward, for ``himed_rewards.json`` next to each checkpoint."""
        return {
            "rewards": self.config.to_dict() if self.config is not None else None,
            "components": [{"name": c.name, "level": c.level, "weight": c.weight} for c in self.components],
            "descriptions": self.describe(),
        }


def _as_float(value: Any) -> float:
    """A reward value as a float, NaN for None or anything that is not a finite number."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan
