"""The reward config block (``docs/rewards.md``), shared by ``himed score --config`` files and GRPO recipes.

```yaml
schedule: {name: linear, total_steps: 10000, alpha_min: 0.1}
rewards:
  - {name: token}
  - {name: clinical, kwargs: {labeler: rules}}
  - {name: my_pkg.my_module:my_reward, as: my_reward, level: low, weight: 0.5}
impute: group_mean
circuit_breaker: {threshold: 0.5, patience: 3, action: stop}
```

``RewardsConfig.from_dict`` checks everything that can be checked without building a reward: unknown keys, types,
that each name resolves (registered name, ``package.module:attribute`` path or ``himed.rewards`` entry point), that
entry names (after ``as``) are distinct, the schedule's parameters and the circuit breaker's. ``level`` and
``weight`` default to the reward's registered values (the table in ``docs/rewards.md``). Errors name the file
(``where``) and the field path. Each name is resolved once here and the schedule built once;
``himed.rewards.composite.CompositeReward`` builds the rewards from the parsed block.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

from himed.rewards.registry import LEVELS, RewardInfo, resolve_reward
from himed.rewards.schedules import Schedule, build_schedule

IMPUTE_MODES = ("group_mean", "zero")  # what a recipe or config file may set
# ``none`` leaves failures as NaN: ``himed score --impute none`` only (a total that needs a failed value is null).
IMPUTE_CHOICES = (*IMPUTE_MODES, "none")
BREAKER_ACTIONS = ("stop", "warn")
DEFAULT_SCHEDULE = {"name": "linear"}


def _require_mapping(value: Any, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
    return value


def _reject_unknown(d: Mapping, allowed: tuple[str, ...], where: str) -> None:
    unknown = [key for key in d if key not in allowed]
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(allowed)}")


def _check_kwargs(factory: Any, kwargs: Mapping[str, Any], where: str, name: str) -> None:
    """Reject kwargs a reward class's constructor does not name, at config time rather than at the first step.

    Only classes without ``**kwargs`` are checked: a plain reward function's ``**kwargs`` also receives dataset
    columns, so its accepted names cannot be known; those are checked when the reward is built.
    """
    if not inspect.isclass(factory):
        return
    try:
        parameters = inspect.signature(factory.__init__).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [key for key, p in parameters.items() if key != "self" and p.kind is not p.VAR_POSITIONAL]
    for key in kwargs:
        if key not in accepted:
            raise ValueError(f"{where}: unknown key {key!r} for reward {name!r}; accepted: {', '.join(accepted)}")


@dataclass
class ScheduleConfig:
    """``schedule: {name: ..., <params>}``: which level-weight schedule and its parameters (HiMed-RL eq. 10)."""

    name: str = field(
        default="linear",
        metadata={
            "help": "schedule name: linear (HiMed-RL eq. 10), constant, cosine or step (himed.rewards.schedules)"
        },
    )
    params: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "the schedule's parameters, written next to name in YAML: linear/cosine total_steps (int > 0, "
            "default 10000) and alpha_min (in [0, 1], default 0.1); constant alpha_low; step boundaries and values"
        },
    )

    where: InitVar[str] = "schedule"  # the field path errors start with

    def __post_init__(self, where: str) -> None:
        # Built (and so validated) once, now rather than at the first training step; schedules are immutable.
        self._schedule = build_schedule({"name": self.name, **self.params}, where=where)

    def build(self) -> Schedule:
        return self._schedule

    @classmethod
    def from_dict(cls, d: Mapping | None, where: str = "schedule") -> ScheduleConfig:
        d = dict(_require_mapping(d if d is not None else DEFAULT_SCHEDULE, where))
        name = d.pop("name", "linear")
        if not isinstance(name, str):
            raise ValueError(f"{where}.name: expected a schedule name, got {name!r}")
        return cls(name=name, params=d, where=where)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}


@dataclass
class CircuitBreakerConfig:
    """``circuit_breaker: {threshold, patience, action, enabled}``: when a component's failures stop a GRPO run.

    A component whose failure rate (``rewards/<name>/failure_rate``) is above ``threshold`` on ``patience``
    consecutive reward batches (one per optimizer step) opens the breaker (``himed.trainers.circuit_breaker``,
    docs/judges.md). Components named in ``ignore`` are not watched, nor are rewards whose None means "nothing to
    score" rather than a failure (``none_is_failure = False`` on the reward, e.g. consistency on an unparsable
    completion). ``himed score`` reads the same block and has no use for it.
    """

    enabled: bool = field(default=True, metadata={"help": "watch the failure rates at all (default true)"})
    threshold: float = field(
        default=0.5,
        metadata={
            "help": "failure rate (fraction of a batch's completions the component could not score, in [0, 1)) "
            "above which a step counts as failing; 0.5 = more than half failed"
        },
    )
    patience: int = field(default=3, metadata={"help": "consecutive failing steps (int >= 1) before the breaker opens"})
    action: str = field(
        default="stop",
        metadata={
            "help": "stop: save a checkpoint and raise an error naming the component and its counters; warn: log "
            "one warning per component and keep training on the imputed values"
        },
    )
    ignore: list[str] = field(
        default_factory=list,
        metadata={"help": "reward entry names (after 'as') the breaker does not watch, e.g. [radgraph]"},
    )

    YAML_KEYS = ("enabled", "threshold", "patience", "action", "ignore")

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"circuit_breaker.enabled: expected true or false, got {self.enabled!r}")
        threshold = self.threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 <= threshold < 1.0:
            raise ValueError(
                f"circuit_breaker.threshold: expected a failure rate in [0, 1) (0.5 = more than half of a batch "
                f"failed), got {threshold!r}"
            )
        self.threshold = float(threshold)
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 1:
            raise ValueError(f"circuit_breaker.patience: expected a whole number of steps >= 1, got {self.patience!r}")
        if self.action not in BREAKER_ACTIONS:
            raise ValueError(
                f"circuit_breaker.action: must be one of {', '.join(BREAKER_ACTIONS)}, got {self.action!r}"
            )
        if not isinstance(self.ignore, list | tuple) or not all(isinstance(n, str) for n in self.ignore):
            raise ValueError(f"circuit_breaker.ignore: expected a list of reward entry names, got {self.ignore!r}")
        self.ignore = list(self.ignore)

    @classmethod
    def from_dict(cls, d: Mapping | None, where: str = "rewards config") -> CircuitBreakerConfig:
        """Parse the block; ``where`` (the file or recipe) prefixes every error, which names the field."""
        d = _require_mapping(d if d is not None else {}, f"{where}: circuit_breaker")
        _reject_unknown(d, cls.YAML_KEYS, f"{where}: circuit_breaker")
        try:
            return cls(**d)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "threshold": self.threshold,
            "patience": self.patience,
            "action": self.action,
            "ignore": list(self.ignore),
        }


@dataclass
class RewardEntryConfig:
    """One entry of ``rewards:``: which reward, its kwargs, the name it is logged under, its level and weight."""

    name: str = field(
        metadata={
            "help": "registered reward name (token, concept, format, clinical, consistency, semantic, ...), a "
            "'package.module:attribute' path, or a name from the 'himed.rewards' entry-point group"
        }
    )
    kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "keyword arguments of the reward's constructor or function"}
    )
    alias: str | None = field(
        default=None,
        metadata={
            "help": "YAML key 'as': the name the entry is logged under (rewards/<as>) and written as in himed score; "
            "needed to use one reward twice"
        },
    )
    level: str | None = field(
        default=None,
        metadata={
            "help": "hierarchy level, 'low' or 'high' (HiMed-RL eq. 8-9); default: the reward's registered level"
        },
    )
    weight: float | None = field(
        default=None,
        metadata={"help": "w_i of HiMed-RL eq. 8-9 (before the schedule's alpha); default: the registered weight"},
    )
    info: RewardInfo | None = field(
        default=None,
        repr=False,
        compare=False,
        metadata={"help": "the resolved reward (factory, registered level and weight); resolved from name when None"},
    )

    YAML_KEYS = ("name", "kwargs", "as", "level", "weight")

    def __post_init__(self) -> None:
        # Fill level and weight from the registry so that a config object always carries the numbers in use.
        if self.info is None:
            self.info = resolve_reward(self.name)
        if self.level is None:
            self.level = self.info.level
        if self.weight is None:
            self.weight = float(self.info.weight)
        if self.level not in LEVELS:
            raise ValueError(
                f"reward {self.entry_name!r}: level must be one of {', '.join(LEVELS)}, got {self.level!r}"
            )

    @property
    def entry_name(self) -> str:
        """The name the entry is known by: ``as`` when given, else the resolved reward name."""
        if self.alias:
            return self.alias
        if ":" in self.name:  # a dotted path is known by its attribute name, as the registry names it
            return self.name.rsplit(":", 1)[1].split(".")[-1]
        return self.name

    @classmethod
    def from_dict(cls, d: Mapping, where: str) -> RewardEntryConfig:
        d = _require_mapping(d, where)
        _reject_unknown(d, cls.YAML_KEYS, where)
        if "name" not in d:
            raise ValueError(f"{where}: missing 'name' (a registered reward, or 'package.module:attribute')")
        name = d["name"]
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}.name: expected a non-empty string, got {name!r}")
        kwargs = d.get("kwargs") or {}
        kwargs = dict(_require_mapping(kwargs, f"{where}.kwargs"))
        alias = d.get("as")
        if alias is not None and (not isinstance(alias, str) or not alias.strip() or "/" in alias):
            raise ValueError(
                f"{where}.as: expected a non-empty name without '/' (parts are written name/part), got {alias!r}"
            )
        level = d.get("level")
        if level is not None and level not in LEVELS:
            raise ValueError(f"{where}.level: must be one of {', '.join(LEVELS)}, got {level!r}")
        weight = d.get("weight")
        if weight is not None:
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
                raise ValueError(f"{where}.weight: expected a finite number, got {weight!r}")
            weight = float(weight)
        try:
            info = resolve_reward(name)
        except ValueError as error:
            raise ValueError(f"{where}.name: {error}") from None
        _check_kwargs(info.factory, kwargs, f"{where}.kwargs", name)
        return cls(name=name, kwargs=kwargs, alias=alias, level=level, weight=weight, info=info)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.kwargs:
            out["kwargs"] = dict(self.kwargs)
        if self.alias:
            out["as"] = self.alias
        out["level"], out["weight"] = self.level, self.weight
        return out


@dataclass
class RewardsConfig:
    """The whole reward block: schedule, reward entries and how failed components are imputed."""

    rewards: list[RewardEntryConfig] = field(
        metadata={"help": "the reward entries (docs/rewards.md); their order is the order of TRL's reward_funcs"}
    )
    schedule: ScheduleConfig = field(
        default_factory=ScheduleConfig,
        metadata={"help": "level-weight schedule (HiMed-RL eq. 10); default: linear, total_steps 10000, alpha_min 0.1"},
    )
    impute: str = field(
        default="group_mean",
        metadata={
            "help": "how a failed (None) component is filled after gathering: group_mean (the group's mean of that "
            "component, so the failure does not move advantages) or zero; an all-failed group gets 0"
        },
    )
    circuit_breaker: CircuitBreakerConfig = field(
        default_factory=CircuitBreakerConfig,
        metadata={
            "help": "when persistent failures of one component stop a GRPO run: {threshold: 0.5, patience: 3, "
            "action: stop|warn, enabled: true} (default on, stop; docs/judges.md)"
        },
    )

    YAML_KEYS = ("schedule", "rewards", "impute", "circuit_breaker")

    def __post_init__(self) -> None:
        if self.impute not in IMPUTE_MODES:
            raise ValueError(f"impute must be one of {', '.join(IMPUTE_MODES)}, got {self.impute!r}")
        if not self.rewards:
            raise ValueError("rewards: give at least one reward entry, e.g. [{name: token}]")
        seen: dict[str, int] = {}
        for i, entry in enumerate(self.rewards):
            name = entry.entry_name
            if name in seen:
                raise ValueError(
                    f"rewards[{i}]: duplicate reward name {name!r} (also rewards[{seen[name]}]); give one of them "
                    f"a distinct 'as: <name>'"
                )
            seen[name] = i
        unknown = [name for name in self.circuit_breaker.ignore if name not in seen]
        if unknown:
            raise ValueError(
                f"circuit_breaker.ignore: {unknown[0]!r} is not a reward entry name; entries: {', '.join(seen)}"
            )

    @property
    def names(self) -> list[str]:
        return [entry.entry_name for entry in self.rewards]

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "rewards config") -> RewardsConfig:
        """Parse the block; ``where`` (a file name, or ``recipe.yaml``) prefixes every error's field path."""
        d = _require_mapping(d, where)
        _reject_unknown(d, cls.YAML_KEYS, where)
        entries = d.get("rewards")
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{where}: 'rewards' must be a non-empty list of entries like {{name: token}}")
        rewards = [RewardEntryConfig.from_dict(entry, f"{where}: rewards[{i}]") for i, entry in enumerate(entries)]
        schedule = ScheduleConfig.from_dict(d.get("schedule"), f"{where}: schedule")
        breaker = CircuitBreakerConfig.from_dict(d.get("circuit_breaker"), where)
        try:
            return cls(
                rewards=rewards, schedule=schedule, impute=d.get("impute", "group_mean"), circuit_breaker=breaker
            )
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> RewardsConfig:
        """Read a YAML file holding the block (``himed score --config``); errors name the file."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"reward config {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML: {error}") from None
        return cls.from_dict(data if data is not None else {}, where=str(path))

    @classmethod
    def from_names(cls, names: list[str], schedule: Mapping | None = None) -> RewardsConfig:
        """Entries with default kwargs, levels and weights (``himed score --rewards token,concept``)."""
        where = "--rewards"
        names = [name.strip() for name in names]
        if not names or not all(names):
            raise ValueError(f"{where}: give comma-separated reward names, e.g. token,concept,format")
        return cls.from_dict({"rewards": [{"name": n} for n in names], "schedule": schedule}, where=where)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule.to_dict(),
            "rewards": [entry.to_dict() for entry in self.rewards],
            "impute": self.impute,
            "circuit_breaker": self.circuit_breaker.to_dict(),
        }
