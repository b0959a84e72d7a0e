"""The reward registry: names -> reward factories, with levels and default weights.

Three ways to name a reward in a config (DESIGN.md section 3):

- a registered name (``token``, ``concept``, ...), registered with ``@register_reward``;
- a dotted path ``package.module:attribute`` to a user's reward class or function;
- a name that an installed distribution exposes in the ``himed.rewards`` entry-point group.

What is resolved is a *factory*: a ``Reward`` subclass (called with the entry's kwargs), or any callable that
already follows TRL's reward contract (``f(completions, **kwargs) -> list[float | None]``), which is wrapped so
that its kwargs are bound and its metric name is stable.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

LEVELS = ("low", "high")
ENTRY_POINT_GROUP = "himed.rewards"


@dataclass(frozen=True)
class RewardInfo:
    """A registered reward: how to build it, its hierarchy level and its default weight (DESIGN.md table)."""

    name: str
    factory: Callable[..., Any]
    level: str = "low"
    weight: float = 1.0


_REGISTRY: dict[str, RewardInfo] = {}


def register_reward(name: str, *, level: str = "low", weight: float = 1.0):
    """Class or function decorator: register a reward factory under ``name``. Duplicate names are an error."""
    if level not in LEVELS:
        raise ValueError(f"reward {name!r}: level must be one of {LEVELS}, got {level!r}")

    def decorator(factory):
        if name in _REGISTRY:
            existing = _REGISTRY[name].factory
            raise ValueError(
                f"reward name {name!r} is already registered by {existing.__module__}.{existing.__qualname__}"
            )
        _REGISTRY[name] = RewardInfo(name=name, factory=factory, level=level, weight=float(weight))
        return factory

    return decorator


def _import_builtin_rewards() -> None:
    """Import the reward modules shipped with himed so that their decorators have run."""
    import pkgutil

    import himed.rewards as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in ("registry", "base", "composite", "schedules", "commands", "tokens"):
            importlib.import_module(f"himed.rewards.{module.name}")


def registered_names() -> list[str]:
    _import_builtin_rewards()
    return sorted(_REGISTRY)


def _from_dotted_path(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"reward path {path!r} must look like 'package.module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"reward {path!r}: cannot import module {module_name!r}: {error}") from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"reward {path!r}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    return target


def resolve_reward(name: str) -> RewardInfo:
    """Look a reward up by registered name, dotted path or entry point; unknown names list the valid ones."""
    _import_builtin_rewards()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        factory = _from_dotted_path(name)
        level, weight = getattr(factory, "level", "low"), getattr(factory, "weight", 1.0)
        return RewardInfo(name=name.rsplit(":", 1)[1].split(".")[-1], factory=factory, level=level, weight=weight)
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name == name:
            factory = entry_point.load()
            level, weight = getattr(factory, "level", "low"), getattr(factory, "weight", 1.0)
            return RewardInfo(name=name, factory=factory, level=level, weight=weight)
    plugins = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    valid = ", ".join(sorted(_REGISTRY) + plugins)
    raise ValueError(f"unknown reward {name!r}; registered rewards: {valid}; or give a 'package.module:function' path")


class BoundReward:
    """A plain TRL-style reward function with its config kwargs bound and a stable ``__name__``.

    Picklable (it holds the function by reference) so that it survives multi-process launches.
    """

    def __init__(self, function: Callable[..., list], name: str, kwargs: dict[str, Any] | None = None):
        self.function = function
        self.kwargs = dict(kwargs or {})
        self.__name__ = name

    def __call__(self, completions, **columns):
        return self.function(completions, **columns, **self.kwargs)

    def __repr__(self) -> str:
        return f"BoundReward({self.__name__!r}, {self.function.__module__}.{self.function.__qualname__})"


class AsyncBoundReward(BoundReward):
    """A ``BoundReward`` of an ``async def`` reward: calling it returns a coroutine, and TRL (which looks for an
    async ``__call__``) awaits it on its event loop instead of receiving an un-awaited coroutine."""

    async def __call__(self, completions, **columns):
        return await self.function(completions, **columns, **self.kwargs)


def build_reward(name: str | RewardInfo, kwargs: dict[str, Any] | None = None, alias: str | None = None):
    """Instantiate the reward ``name`` (or an already resolved ``RewardInfo``) with ``kwargs``; its ``__name__``
    becomes ``alias`` (or the name).

    Returns ``(reward_callable, info)``. Bad kwargs raise ValueError naming the reward.
    """
    info = name if isinstance(name, RewardInfo) else resolve_reward(name)
    kwargs = dict(kwargs or {})
    display = alias or info.name
    factory = info.factory
    if inspect.isclass(factory):
        try:
            reward = factory(**kwargs)
        except TypeError as error:
            raise ValueError(f"reward {display!r}: bad kwargs {sorted(kwargs)}: {error}") from None
        reward.__name__ = display
    elif callable(factory):
        bound = AsyncBoundReward if inspect.iscoroutinefunction(factory) else BoundReward
        reward = bound(factory, display, kwargs)
    else:
        raise ValueError(f"reward {name!r} resolves to {factory!r}, which is neither a class nor a function")
    return reward, info
