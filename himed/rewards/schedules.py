"""Level-weight schedules of HiMed-RL: how much the low-level and the high-level rewards count at step ``t``.

A schedule gives ``alpha_low(t)`` in [0, 1]; ``alpha_high(t) = 1 - alpha_low(t)`` (HiMed-RL eq. 10). The composite
multiplies each reward's weight by its level's alpha (eq. 8-9). ``t`` is the trainer's global optimizer step when
the completions are generated.

Schedules (select with ``schedule: {name: ..., <params>}``):

- ``linear`` (the paper, eq. 10): ``alpha_low(t) = max(1 - t / total_steps, alpha_min)``.
- ``constant``: ``alpha_low(t) = alpha_low`` for every ``t`` (an ablation: no curriculum).
- ``cosine``: ``alpha_low(t) = alpha_min + (1 - alpha_min) * (1 + cos(pi * min(t, total_steps) / total_steps)) / 2``,
  from 1 at ``t = 0`` to ``alpha_min`` at ``t = total_steps`` and constant afterwards. Not in the paper: it keeps
  the low-level rewards dominant longer at the start and flattens out smoothly at the end.
- ``step``: piecewise constant. ``boundaries: [b1, ..., bk]`` (strictly increasing steps > 0) and
  ``values: [v0, ..., vk]`` (one more than the boundaries): ``alpha_low(t) = v0`` for ``t < b1``, ``v_i`` for
  ``b_i <= t < b_{i+1}`` and ``vk`` from ``bk`` on.

New schedules register with ``@register_schedule("name")`` on a dataclass subclass of ``Schedule``; its fields are
its parameters (typed, with ``help`` metadata), checked by ``validate``.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

_SCHEDULES: dict[str, type[Schedule]] = {}


def register_schedule(name: str):
    """Class decorator: register a ``Schedule`` dataclass under ``name``. Duplicate names are an error."""

    def decorator(cls: type[Schedule]) -> type[Schedule]:
        if name in _SCHEDULES:
            raise ValueError(f"schedule name {name!r} is already registered by {_SCHEDULES[name].__qualname__}")
        cls.name = name
        _SCHEDULES[name] = cls
        return cls

    return decorator


def schedule_names() -> list[str]:
    return sorted(_SCHEDULES)


def _check_alpha(value: float, what: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be in [0, 1] (a fraction of the reward weight), got {value}")


def _check_step(step: float) -> float:
    if isinstance(step, bool) or not isinstance(step, int | float) or not math.isfinite(step) or step < 0:
        raise ValueError(f"schedule step must be a finite number >= 0 (the global optimizer step), got {step!r}")
    return float(step)


def _coerce(value: Any, annotation: str, where: str) -> Any:
    """Convert a YAML/JSON value to a schedule field's type; raise naming ``where`` when it does not fit."""
    if annotation == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation.startswith("tuple[int"):
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list of integers, got {value!r}")
        return tuple(_coerce(v, "int", f"{where}[{i}]") for i, v in enumerate(value))
    if annotation.startswith("tuple[float"):
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list of numbers, got {value!r}")
        return tuple(_coerce(v, "float", f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"unsupported schedule field type {annotation!r}")  # a programming error in a schedule class


@dataclass(frozen=True)
class Schedule(ABC):
    """Base of the schedules: subclasses are frozen dataclasses whose fields are the schedule's parameters."""

    name: ClassVar[str] = "schedule"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError with a message that says how to fix a bad parameter (no parameters: nothing to check)."""
        return None

    @abstractmethod
    def alpha_low(self, step: float) -> float:
        """The weight of the low-level rewards at optimizer step ``step`` (HiMed-RL eq. 10)."""

    @abstractmethod
    def end_step(self) -> float:
        """The step from which ``alpha_low`` no longer changes ("the end of the schedule"; 0 for a constant)."""

    def alpha_high(self, step: float) -> float:
        return 1.0 - self.alpha_low(step)  # HiMed-RL eq. 10

    def alphas(self, step: float) -> dict[str, float]:
        """``{"low": alpha_low(t), "high": 1 - alpha_low(t)}``, keyed by reward level."""
        low = self.alpha_low(step)
        return {"low": low, "high": 1.0 - low}

    def params(self) -> dict[str, Any]:
        """The schedule's parameters as plain values (for logs and saved configs)."""
        out = {"name": self.name}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_params(cls, params: Mapping[str, Any], where: str = "schedule") -> Schedule:
        """Build from a mapping of parameters; unknown or ill-typed keys raise ValueError naming ``where``."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(
                f"{where}: unknown key(s) {unknown} for schedule {cls.name!r}; its parameters are {sorted(known)}"
            )
        values = {key: _coerce(value, str(known[key].type), f"{where}.{key}") for key, value in params.items()}
        try:
            return cls(**values)
        except TypeError as error:  # a required parameter is missing
            raise ValueError(f"{where}: schedule {cls.name!r}: {error}; its parameters are {sorted(known)}") from None
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None


@register_schedule("linear")
@dataclass(frozen=True)
class LinearDecaySchedule(Schedule):
    """HiMed-RL eq. 10: alpha_low decays linearly from 1 to ``alpha_min`` over ``total_steps``."""

    total_steps: int = field(
        default=10000, metadata={"help": "optimizer steps over which alpha_low decays from 1 (HiMed-RL eq. 10: T)"}
    )
    alpha_min: float = field(
        default=0.1, metadata={"help": "floor of alpha_low in [0, 1] (HiMed-RL eq. 10: alpha_min)"}
    )

    def validate(self) -> None:
        if self.total_steps <= 0:
            raise ValueError(f"total_steps must be > 0 (e.g. the run's max_steps), got {self.total_steps}")
        _check_alpha(self.alpha_min, "alpha_min")

    def alpha_low(self, step: float) -> float:
        t = _check_step(step)
        return max(1.0 - t / self.total_steps, self.alpha_min)  # HiMed-RL eq. 10

    def end_step(self) -> float:
        return float(self.total_steps)


@register_schedule("constant")
@dataclass(frozen=True)
class ConstantSchedule(Schedule):
    """alpha_low fixed for the whole run (ablation without a curriculum)."""

    # 0.5 weighs the two levels equally, the natural neutral point when no curriculum is wanted.
    alpha_low_value: float = field(default=0.5, metadata={"help": "alpha_low at every step, in [0, 1]"})

    def validate(self) -> None:
        _check_alpha(self.alpha_low_value, "alpha_low")

    def alpha_low(self, step: float) -> float:
        _check_step(step)
        return self.alpha_low_value

    def end_step(self) -> float:
        return 0.0

    def params(self) -> dict[str, Any]:
        return {"name": self.name, "alpha_low": self.alpha_low_value}

    @classmethod
    def from_params(cls, params: Mapping[str, Any], where: str = "schedule") -> Schedule:
        # The config key is ``alpha_low``; the field cannot share the method's name.
        params = dict(params)
        if "alpha_low_value" in params:
            raise ValueError(f"{where}: unknown key 'alpha_low_value' for schedule 'constant'; use 'alpha_low'")
        if "alpha_low" in params:
            params["alpha_low_value"] = params.pop("alpha_low")
        try:
            return super().from_params(params, where)
        except ValueError as error:
            raise ValueError(str(error).replace("alpha_low_value", "alpha_low")) from None


@register_schedule("cosine")
@dataclass(frozen=True)
class CosineDecaySchedule(Schedule):
    """alpha_low follows half a cosine from 1 at step 0 to ``alpha_min`` at ``total_steps`` (see module docstring)."""

    total_steps: int = field(default=10000, metadata={"help": "optimizer steps over which alpha_low decays from 1"})
    alpha_min: float = field(default=0.1, metadata={"help": "alpha_low from total_steps on, in [0, 1]"})

    def validate(self) -> None:
        if self.total_steps <= 0:
            raise ValueError(f"total_steps must be > 0 (e.g. the run's max_steps), got {self.total_steps}")
        _check_alpha(self.alpha_min, "alpha_min")

    def alpha_low(self, step: float) -> float:
        progress = min(_check_step(step), self.total_steps) / self.total_steps
        return self.alpha_min + (1.0 - self.alpha_min) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def end_step(self) -> float:
        return float(self.total_steps)


@register_schedule("step")
@dataclass(frozen=True)
class StepSchedule(Schedule):
    """Piecewise-constant alpha_low: ``values[i]`` from ``boundaries[i-1]`` (see module docstring)."""

    boundaries: tuple[int, ...] = field(
        metadata={"help": "strictly increasing optimizer steps (> 0) at which alpha_low changes"}
    )
    values: tuple[float, ...] = field(
        metadata={"help": "alpha_low before the first boundary and after each one: len(boundaries) + 1 values"}
    )

    def validate(self) -> None:
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(
                f"step schedule needs len(values) == len(boundaries) + 1 (a value before the first boundary and "
                f"one after each), got {len(self.values)} values for {len(self.boundaries)} boundaries"
            )
        previous = 0
        for i, boundary in enumerate(self.boundaries):
            if boundary <= previous:
                raise ValueError(
                    f"boundaries must be strictly increasing steps > 0, got boundaries[{i}] = {boundary} "
                    f"after {previous}"
                )
            previous = boundary
        for i, value in enumerate(self.values):
            _check_alpha(value, f"values[{i}]")

    def alpha_low(self, step: float) -> float:
        t = _check_step(step)
        return self.values[bisect.bisect_right(self.boundaries, t)]

    def end_step(self) -> float:
        return float(self.boundaries[-1]) if self.boundaries else 0.0


def build_schedule(config: Schedule | Mapping[str, Any] | Any | None = None, where: str = "schedule") -> Schedule:
    """A ``Schedule`` from a config: a ``Schedule`` (returned as is), a mapping ``{name: ..., <params>}``, an object
    with ``.name`` and ``.params`` (``ScheduleConfig``), or None (the paper's linear schedule with its defaults)."""
    if config is None:
        return LinearDecaySchedule()
    if isinstance(config, Schedule):
        return config
    if isinstance(config, Mapping):
        params = dict(config)
        name = params.pop("name", "linear")
    elif hasattr(config, "name") and hasattr(config, "params"):
        name, params = config.name, dict(config.params)
    else:
        raise ValueError(f"{where}: expected a mapping like {{name: linear, total_steps: 10000}}, got {config!r}")
    if name not in _SCHEDULES:
        raise ValueError(f"{where}.name: unknown schedule {name!r}; known schedules: {', '.join(schedule_names())}")
    return _SCHEDULES[name].from_params(params, where)
