"""The labeler interface and registry: ``get_labeler("rules")`` or ``get_labeler("chexbert", checkpoint=...)``.

A labeler turns report texts into labels (docs/data.md): ``{observation: 1|0|-1}`` for mentioned
observations only, plus No Finding by the ``with_no_finding`` rule. Labelers never raise on odd text (empty,
very long, unicode, control characters); an empty report is labelled ``{"No Finding": 1}``.

New labelers register a factory with ``@register_labeler("name")``; nothing else needs editing. Instances are
cached per (name, keyword arguments), so a CheXbert model loads once per process however many rewards ask for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Labeler(Protocol):
    """What rewards, judges and metrics need from a labeler."""

    name: str

    def label(self, texts: Sequence[str]) -> list[dict[str, int]]:
        """For each text, ``{observation: 1|0|-1}`` for mentioned observations, plus No Finding (docs/data.md)."""
        ...


LabelerFactory = Callable[..., Labeler]
_FACTORIES: dict[str, LabelerFactory] = {}
_CACHE: dict[tuple[str, tuple[tuple[str, Any], ...]], Labeler] = {}
_LOCK = threading.Lock()


def register_labeler(name: str) -> Callable[[LabelerFactory], LabelerFactory]:
    """Decorator registering a labeler factory under ``name``; a second registration of a name is an error."""

    def decorate(factory: LabelerFactory) -> LabelerFactory:
        if name in _FACTORIES:
            raise ValueError(f"labeler {name!r} is already registered (by {_FACTORIES[name]!r})")
        _FACTORIES[name] = factory
        return factory

    return decorate


def check_labeler(name: str, who: str) -> str:
    """``name`` when it is a registered labeler, else ValueError prefixed by ``who`` listing the available ones."""
    if name not in available_labelers():
        raise ValueError(f"{who}: unknown labeler {name!r}; available: {', '.join(available_labelers())}")
    return name


def available_labelers() -> tuple[str, ...]:
    return tuple(sorted(_FACTORIES))


def _cache_key(name: str, kwargs: dict[str, Any]) -> tuple[str, tuple[tuple[str, Any], ...]]:
    items = []
    for key, value in sorted(kwargs.items()):
        # Paths and other unhashable values are keyed by their text so the cache still works.
        try:
            hash(value)
        except TypeError:
            value = repr(value)
        items.append((key, value if not hasattr(value, "__fspath__") else str(value)))
    return name, tuple(items)


def get_labeler(name: str = "rules", **kwargs: Any) -> Labeler:
    """The (cached) labeler registered as ``name``, built with ``kwargs`` on first use.

    ``rules``: no arguments. ``chexbert``: ``checkpoint`` (path to CheXbert's ``chexbert.pth``), ``tokenizer``
    (a local folder with a BERT WordPiece tokenizer), optional ``device`` (default cpu) and ``batch_size``.
    """
    if name not in _FACTORIES:
        raise ValueError(f"unknown labeler {name!r}; available: {', '.join(available_labelers())}")
    key = _cache_key(name, kwargs)
    with _LOCK:
        labeler = _CACHE.get(key)
        if labeler is None:
            labeler = _FACTORIES[name](**kwargs)
            _CACHE[key] = labeler
    return labeler


def clear_labeler_cache() -> None:
    """Forget cached instances (tests; freeing a CheXbert model)."""
    with _LOCK:
        _CACHE.clear()


class LazyLabeler:
    """What a reward or judge that reads labels holds: a labeler named in its config, checked when set and built
    on first use (cached per process by ``get_labeler``, so a CheXbert model loads once). The holder leaves
    ``_labeler`` out of its pickled state, so the model is never pickled with it."""

    _labeler: Labeler | None = None

    def _set_labeler(self, labeler: str, labeler_kwargs: dict[str, Any] | None, who: str) -> None:
        self.labeler_name = check_labeler(labeler, who)
        self.labeler_kwargs = dict(labeler_kwargs or {})
        self._labeler = None

    @property
    def labeler(self) -> Labeler:
        if self._labeler is None:
            self._labeler = get_labeler(self.labeler_name, **self.labeler_kwargs)
        return self._labeler


@register_labeler("rules")
def _rules_labeler(**kwargs: Any) -> Labeler:
    from himed.clinical.rules import ChexpertRuleLabeler

    if kwargs:
        raise ValueError(f"the rules labeler takes no arguments, got: {', '.join(sorted(kwargs))}")
    return ChexpertRuleLabeler()


@register_labeler("chexbert")
def _chexbert_labeler(
    checkpoint: str | None = None,
    tokenizer: str | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    **kwargs: Any,
) -> Labeler:
    # Imported here: torch and transformers are heavy, and the rules labeler must not pay for them.
    from himed.clinical.chexbert import CheXbertLabeler

    return CheXbertLabeler(checkpoint=checkpoint, tokenizer=tokenizer, device=device, batch_size=batch_size, **kwargs)
