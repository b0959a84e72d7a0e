"""Loading the user's local model folders for model-based metrics (RaTEScore, BERTScore): strictly, never from the hub.

Every metric model is a folder the user points at (a flag or config field names it). A folder that is missing, has no
``config.json``, or whose weights do not match the architecture its config names (missing, unexpected or wrongly
shaped keys) is an error that names the folder, the flag and the keys, never a model left partly random: transformers'
own ``from_pretrained`` only warns about such keys and initialises the missing ones at random, which would give a
plausible-looking but meaningless score. Nothing is downloaded: ``local_files_only=True`` and a local folder is
required, so the same code runs with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class MetricWeightsError(ValueError):
    """A metric's model folder is missing or does not hold the weights its architecture needs."""


def model_folder(path: str | os.PathLike | None, *, what: str, flag: str) -> Path:
    """The local folder ``path`` (``~`` expanded), checked to exist with a ``config.json``; never a hub name."""
    if path is None or not str(path).strip():
        raise MetricWeightsError(f"{what} needs a local model folder: pass {flag} DIR (nothing is downloaded)")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise MetricWeightsError(
            f"{what}: {flag} {folder} is not a local folder (give the path of a downloaded model folder; "
            "hub names are not resolved)"
        )
    if not (folder / "config.json").is_file():
        raise MetricWeightsError(f"{what}: {flag} {folder} has no config.json; is it a transformers model folder?")
    return folder


def _shown(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:6]) + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "")


def load_model_strict(
    auto_class: Any,
    path: str | os.PathLike | None,
    *,
    what: str,
    flag: str,
    ignorable_prefixes: tuple[str, ...] = (),
    **kwargs: Any,
):
    """``auto_class.from_pretrained(folder, local_files_only=True)`` that fails on any key problem.

    ``ignorable_prefixes``: keys of parts the metric never uses (a BERT pooler when only hidden states are read);
    they may be absent from, or extra in, the checkpoint. Everything else must match exactly.
    """
    folder = model_folder(path, what=what, flag=flag)
    try:
        model, info = auto_class.from_pretrained(str(folder), local_files_only=True, output_loading_info=True, **kwargs)
    except (OSError, ValueError, KeyError) as error:
        raise MetricWeightsError(f"{what}: cannot load {flag} {folder}: {type(error).__name__}: {error}") from None

    def relevant(keys: Iterable[Any]) -> list[str]:
        names = [key if isinstance(key, str) else str(key[0]) for key in keys]
        return [key for key in names if not key.startswith(ignorable_prefixes)]

    problems = []
    for title, keys in (
        ("missing keys", relevant(info.get("missing_keys", ()))),
        ("unexpected keys", relevant(info.get("unexpected_keys", ()))),
        ("wrong-shape keys", relevant(info.get("mismatched_keys", ()))),
    ):
        if keys:
            problems.append(f"{title}: {_shown(keys)}")
    problems += [str(message) for message in info.get("error_msgs", ()) if message]
    if problems:
        raise MetricWeightsError(
            f"{what}: the weights in {flag} {folder} do not match the architecture its config.json names "
            f"({type(model).__name__}); " + "; ".join(problems)
        )
    return model.eval()


def load_tokenizer_local(path: str | os.PathLike | None, *, what: str, flag: str, **kwargs: Any):
    """The tokenizer saved in the model folder (``local_files_only``)."""
    from transformers import AutoTokenizer

    folder = model_folder(path, what=what, flag=flag)
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise MetricWeightsError(f"{what}: no usable tokenizer in {flag} {folder}: {error}") from None
