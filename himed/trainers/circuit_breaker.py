"""A circuit breaker on the reward components' failure rates: a judge that went away must not go unnoticed.

A failed component (None) is imputed so that it moves no advantage (docs/rewards.md). That is right for a pair the
judge could not score now and then, and wrong for a judge server that died: the semantic level would then be
constant, the run would train on the low level alone, and only the ``rewards/<name>/failure_rate`` curve would say
so. The breaker watches those rates:

- a step *fails* for a component when its failure rate (the fraction of that step's gathered completions the
  component returned None or a non-finite value for) is above ``threshold``;
- after ``patience`` consecutive failing steps the breaker of that component *opens*; a step at or below the
  threshold resets the count and closes it again;
- components named in ``ignore``, and rewards that declare ``none_is_failure = False`` (their None means "nothing to
  score", e.g. the consistency reward on a completion without sections), are not watched;
- on opening, ``action: stop`` saves a checkpoint and raises ``RewardCircuitOpen`` (the message names the component,
  its recent rates and its own counters, e.g. the judge's failures by kind, and the checkpoint), and ``action:
  warn`` logs one warning per component for the run and keeps training on the imputed values.

``rewards/<name>/breaker_open`` (0 or 1) is logged for every watched component at every training step, whatever the
action.

``CircuitBreaker`` is pure bookkeeping (no trainer, no I/O) so that it can be tested alone; ``trip_message`` and
``component_counters`` build the error text; the trainer (``himed.trainers.grpo``) saves and raises. Every rank
sees the same gathered rates, so every rank opens at the same step and takes part in the same checkpoint save.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from himed.rewards.config import CircuitBreakerConfig

logger = logging.getLogger(__name__)

# Counter names worth quoting in the error: how many calls were made and how they failed.
_QUOTED_COUNTERS = ("calls", "pairs", "scored", "retries", "failure", "error")


class RewardCircuitOpen(RuntimeError):
    """A reward component failed on too many completions for too many consecutive steps (``action: stop``)."""

    def __init__(self, message: str, component: str, checkpoint: str | None = None):
        super().__init__(message)
        self.component = component
        self.checkpoint = checkpoint


@dataclass
class ComponentState:
    """One component's breaker: the current run of failing steps and the rates of the last ``patience`` steps."""

    streak: int = 0
    is_open: bool = False
    times_opened: int = 0
    recent: deque = field(default_factory=deque)


@dataclass(frozen=True)
class Trip:
    """A breaker that opened at ``step``: which component, and the failing rates that opened it."""

    name: str
    step: int
    rates: tuple[float, ...]
    first_time: bool


class CircuitBreaker:
    """Per-component failure streaks over training steps; ``observe`` returns the breakers that opened."""

    def __init__(
        self,
        config: CircuitBreakerConfig | Mapping[str, Any] | None,
        names: Sequence[str],
        unwatched: Sequence[str] = (),
    ):
        """``names``: every component, in the order of the rates ``observe`` gets; the watched ones are those not in
        ``config.ignore`` nor in ``unwatched`` (rewards whose None is not a failure, see ``watched_names``)."""
        if not isinstance(config, CircuitBreakerConfig):
            config = CircuitBreakerConfig.from_dict(config)
        self.config = config
        self.names = list(names)
        skipped = set(config.ignore) | set(unwatched)
        self.watched = [name for name in self.names if name not in skipped]
        self.states = {name: ComponentState(recent=deque(maxlen=config.patience)) for name in self.watched}

    def observe(self, step: int, rates: Sequence[float]) -> list[Trip]:
        """Record one step's failure rate per component (in ``names`` order); return the breakers opened now."""
        if len(rates) != len(self.names):
            raise ValueError(f"{len(rates)} failure rates for {len(self.names)} reward components")
        if not self.config.enabled:
            return []
        trips = []
        for name, rate in zip(self.names, rates, strict=True):
            state = self.states.get(name)
            if state is None:
                continue
            rate = float(rate)
            failing = math.isnan(rate) or rate > self.config.threshold
            state.recent.append(rate)
            if not failing:
                if state.is_open:
                    logger.info("reward %s: failure rate %.2f at step %d, breaker closed again", name, rate, step)
                state.streak, state.is_open = 0, False
                continue
            state.streak += 1
            if state.streak >= self.config.patience and not state.is_open:
                state.is_open = True
                state.times_opened += 1
                trips.append(Trip(name, step, tuple(state.recent), first_time=state.times_opened == 1))
        return trips

    def open_flags(self) -> dict[str, float]:
        """``{name: 1.0 if open else 0.0}`` for the watched components: logged as ``rewards/<name>/breaker_open``."""
        return {name: float(state.is_open) for name, state in self.states.items()}


def unwatched_names(components: Sequence[Any]) -> list[str]:
    """Names of the components (``RewardComponent``-like: ``name``, ``fn``) whose reward declares
    ``none_is_failure = False``: its None means "nothing to score here", which no breaker should count."""
    return [component.name for component in components if not getattr(component.fn, "none_is_failure", True)]


def component_counters(fn: Any) -> dict[str, float]:
    """The failure-related counters a reward object reports through ``metrics()`` (a judge's calls, failures by
    kind, retries), as plain numbers; ``{}`` for a reward without counters. Never raises."""
    metrics = getattr(fn, "metrics", None)
    if not callable(metrics):
        return {}
    try:
        values = dict(metrics())
    except Exception as error:  # reporting must not hide the error it reports
        return {"metrics_error": f"{type(error).__name__}: {error}"}
    return {
        key: value
        for key, value in sorted(values.items())
        if isinstance(value, int | float) and any(word in key for word in _QUOTED_COUNTERS)
    }


def trip_message(trip: Trip, config: CircuitBreakerConfig, counters: Mapping[str, Any], checkpoint: str | None) -> str:
    """The error (``stop``) or warning (``warn``) text: component, rates, counters, and what to do."""
    first = trip.step - len(trip.rates) + 1
    rates = ", ".join(f"{rate:.2f}" for rate in trip.rates)
    counted = ", ".join(f"{key}={_number(value)}" for key, value in counters.items()) or "none reported"
    lines = [
        f"reward component {trip.name!r} failed on more than {config.threshold:.0%} of the completions for "
        f"{len(trip.rates)} consecutive steps (steps {first}-{trip.step}, failure rates {rates}; circuit_breaker "
        f"threshold {config.threshold}, patience {config.patience}).",
        f"Its counters (totals since the run started): {counted}.",
    ]
    if config.action == "stop":
        saved = f"A checkpoint was saved at {checkpoint}" if checkpoint else "No checkpoint could be saved"
        lines.append(
            f"{saved}. Bring the component back (is the judge server up? the bridge's environment intact?) and "
            "resume with resume_from_checkpoint: last, or set circuit_breaker: {action: warn} to train on through "
            "such failures (the failed values are imputed and move no advantage)."
        )
    else:
        lines.append("Training continues on the imputed values (circuit_breaker action: warn); warned once per run.")
    return "\n".join(lines)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
