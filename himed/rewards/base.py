"""The base class of himed's parameterised rewards and the column helpers they share.

A reward follows TRL's contract: ``reward(completions, **columns) -> list[float | None]``. Subclasses implement
``score(texts, references, **columns)``, returning for each completion a dict with the reward under ``"value"``
and any named parts (``"p1"``, ``"bp"``, ``"rouge_l"``, ...); ``himed score`` writes parts as ``name/part``.
``None`` means "could not score" and is imputed by the composite (docs/rewards.md), never read as 0.

A reward never crashes a training step: an exception inside ``score`` is logged once per reward and class of error
and turns the whole batch into ``None``; implementations should isolate per-item failures themselves so that one
bad completion does not cost the batch.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from himed.clinical.labelers import LazyLabeler
from himed.data.sections import DEFAULT_SECTIONS, completion_text, reference_text

logger = logging.getLogger(__name__)


def reference_texts(columns: dict[str, Any], n: int) -> list[str]:
    """The reference report of each completion: the ``reference`` column, else findings + impression."""
    if columns.get("reference") is not None:
        references = columns["reference"]
    elif columns.get("findings") is not None:
        impressions = columns.get("impression") or [""] * n
        references = [reference_text(f or "", i or "") for f, i in zip(columns["findings"], impressions, strict=True)]
    else:
        raise ValueError("a reward needs a 'reference' column, or 'findings' (and optionally 'impression')")
    if len(references) != n:
        raise ValueError(f"{len(references)} references for {n} completions")
    return [r or "" for r in references]


class Reward(ABC):
    """Base class: subclasses set ``name``, ``level``, ``weight`` and ``parts`` and implement ``score``.

    ``name``, ``level`` and ``weight`` are what ``@register_reward`` registers; ``parts`` names the keys ``score``
    returns besides ``"value"`` with the default kwargs (``himed rewards`` and docs/rewards.md list them).
    """

    name: str = "reward"
    level: str = "low"
    weight: float = 1.0
    parts: tuple[str, ...] = ()
    # Attributes built on first use (a METEOR scorer, a labeler model): left out when the reward is pickled for
    # another process, which builds its own.
    lazy_attributes: tuple[str, ...] = ()
    # Errors ``score_completions`` lets through instead of scoring None: set-up errors that would fail every call
    # (a judge's missing API key), which should stop the run rather than train on None.
    raised_errors: tuple[type[Exception], ...] = ()

    def __init__(self, sections: Sequence[str] = DEFAULT_SECTIONS):
        self.sections = tuple(sections)
        self.__name__ = self.name
        self._logged_errors: set[str] = set()

    @abstractmethod
    def score(self, texts: list[str], references: list[str], **columns: Any) -> list[dict[str, float | None]]:
        """One dict per completion: ``{"value": reward, part: value, ...}``."""

    def score_completions(self, completions: Sequence, **columns: Any) -> list[dict[str, float | None]]:
        """Per-completion dicts of value and parts; never raises (see the module docstring)."""
        texts = [completion_text(c) for c in completions]
        try:
            references = reference_texts(columns, len(texts))
            return self.score(texts, references, **columns)
        except self.raised_errors:
            raise
        except Exception as error:  # a reward must never crash a training step
            kind = type(error).__name__
            if kind not in self._logged_errors:
                self._logged_errors.add(kind)
                logger.exception("reward %s failed on a batch of %d (%s); scored None", self.__name__, len(texts), kind)
            return [{"value": None} for _ in texts]

    def __call__(self, completions: Sequence, **columns: Any) -> list[float | None]:
        return [parts.get("value") for parts in self.score_completions(completions, **columns)]

    @classmethod
    def from_config(cls, **kwargs: Any) -> Reward:
        """The reward a config entry's ``kwargs`` describe (what ``build_reward`` calls)."""
        return cls(**kwargs)

    def __getstate__(self):
        state = dict(self.__dict__)
        for name in self.lazy_attributes:
            state[name] = None
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.__name__!r})"


class LabelerReward(LazyLabeler, Reward):
    """A reward that reads CheXpert-style labels off texts with a clinical labeler (``rules``, ``chexbert``, ...).

    The labeler is named in the config, checked when the reward is made and built on first use (cached per process
    by ``get_labeler``; a CheXbert model is not pickled with the reward).
    """

    lazy_attributes = ("_labeler",)
