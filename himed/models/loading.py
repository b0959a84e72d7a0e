"""Loading a policy (a Hugging Face vision-language model) and its processor from a hub id or a local directory.

``load_policy`` returns an ``AutoModelForImageTextToText`` model; ``load_processor`` returns a processor with
``.tokenizer``, ``.image_processor``, ``apply_chat_template`` and ``__call__(text=..., images=...)``, which is what
TRL's GRPOTrainer and SFTTrainer use for Qwen-VL models.

Where torchvision is missing (the CPU environment), transformers cannot build the Qwen-VL processors because their
video processor needs it (notes/ENVIRONMENT.md); ``load_processor`` then builds the image-only processor of
``himed.models.processors`` from the same files and logs a warning saying so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily at run time: transformers takes seconds to import
    from transformers import PreTrainedModel
    from transformers.processing_utils import ProcessorMixin

logger = logging.getLogger(__name__)

# dtype names accepted by load_policy besides a torch.dtype; "auto" keeps the checkpoint's dtype.
DTYPE_NAMES = ("auto", "float32", "float16", "bfloat16")


def _check_source(name_or_path: str | Path, require_config: bool = True) -> str:
    """The string to hand to ``from_pretrained``; a path that clearly names a local directory must exist.

    ``require_config``: a local directory must hold ``config.json`` (a model; a processor alone may be saved without).
    """
    text = str(name_or_path)
    if not text:
        raise ValueError("a model name or directory is required")
    path = Path(text).expanduser()
    looks_local = isinstance(name_or_path, Path) or text.startswith(("/", "./", "../", "~")) or text.count("/") > 1
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{text} is a file; expected a model directory or a hub id")
        has_model = (path / "config.json").is_file() or (path / "adapter_config.json").is_file()
        if require_config and not has_model:
            raise FileNotFoundError(
                f"{text} has neither config.json nor adapter_config.json; it is not a saved model directory"
            )
        return str(path)
    if looks_local:
        raise FileNotFoundError(f"model directory not found: {text}")
    return text


def _resolve_dtype(dtype: Any):
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype in DTYPE_NAMES:
        return dtype if dtype == "auto" else getattr(torch, dtype)
    raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPE_NAMES)} or a torch.dtype")


def _load_config(source: str, **kwargs):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, **kwargs)
    except ValueError as error:
        # transformers raises ValueError for an unrecognised model_type; say which file holds it.
        raise ValueError(f"cannot read the model configuration of {source}: {error}") from error
    except OSError as error:
        raise FileNotFoundError(
            f"cannot find a model at {source!r}: not a local directory, and not in the hub cache or reachable "
            f"({error.__class__.__name__}: {str(error).splitlines()[0]})"
        ) from error


def _adapter_base(source: str) -> str | None:
    """The base model of a saved PEFT adapter directory (LoRA training saves only the adapter), else None.

    ``from_pretrained`` loads such a directory itself (base model + adapter, with peft installed); the base is
    needed here only to check the architecture.
    """
    path = Path(source)
    adapter_config = path / "adapter_config.json"
    if (path / "config.json").is_file() or not adapter_config.is_file():
        return None
    base = json.loads(adapter_config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter_config} does not name its base model (base_model_name_or_path)")
    return _check_source(base)


def load_policy(
    name_or_path: str | Path,
    *,
    dtype: Any = None,
    attn_implementation: str | None = None,
    **kwargs: Any,
) -> PreTrainedModel:
    """Load a vision-language policy as ``AutoModelForImageTextToText``.

    ``dtype``: None (transformers' default), ``"auto"`` (the checkpoint's dtype), ``"float32"``, ``"float16"``,
    ``"bfloat16"`` or a ``torch.dtype``. ``attn_implementation``: e.g. ``"sdpa"``, ``"eager"``,
    ``"flash_attention_2"``. Other keyword arguments go to ``from_pretrained`` (``revision``, ``device_map``, ...).
    A directory holding only a PEFT adapter loads as its base model with the adapter attached.
    """
    from transformers import AutoModelForImageTextToText

    source = _check_source(name_or_path)
    config_kwargs = {k: kwargs[k] for k in ("revision", "trust_remote_code", "cache_dir", "token") if k in kwargs}
    config = _load_config(_adapter_base(source) or source, **config_kwargs)
    # Remote-code models (trust_remote_code=True) register themselves through auto_map instead of the mapping.
    remote = "AutoModelForImageTextToText" in (getattr(config, "auto_map", None) or {})
    if not remote and type(config) not in AutoModelForImageTextToText._model_mapping:
        raise ValueError(
            f"{source} is a {config.model_type!r} model, which is not an image-text-to-text architecture "
            "(expected a vision-language model such as qwen2_5_vl or qwen3_vl)"
        )
    options: dict[str, Any] = dict(kwargs)
    resolved = _resolve_dtype(dtype)
    if resolved is not None:
        options["dtype"] = resolved
    if attn_implementation is not None:
        options["attn_implementation"] = attn_implementation
    return AutoModelForImageTextToText.from_pretrained(source, **options)


def _is_full_processor(processor: Any) -> bool:
    """A multimodal processor, not the bare tokenizer that AutoProcessor may return for a Qwen-VL folder."""
    from transformers.processing_utils import ProcessorMixin

    return (
        isinstance(processor, ProcessorMixin)
        and getattr(processor, "tokenizer", None) is not None
        and getattr(processor, "image_processor", None) is not None
    )


def _processor_model_type(source: str, kwargs: dict[str, Any]) -> str:
    """The model type whose processor ``source`` holds: from config.json, or, for a directory holding only a saved
    processor, from the upstream class name in processor_config.json (which the image-only processors also write)."""
    from himed.models.processors import IMAGE_ONLY_PROCESSORS

    processor_config = Path(source) / "processor_config.json"
    if not (Path(source) / "config.json").is_file() and processor_config.is_file():
        class_name = json.loads(processor_config.read_text(encoding="utf-8")).get("processor_class")
        for model_type, processor_class in IMAGE_ONLY_PROCESSORS.items():
            if class_name == processor_class.upstream_name:
                return model_type
        return str(class_name)
    config_kwargs = {k: kwargs[k] for k in ("revision", "trust_remote_code", "cache_dir", "token") if k in kwargs}
    return _load_config(source, **config_kwargs).model_type


def load_processor(name_or_path: str | Path, **kwargs: Any) -> ProcessorMixin:
    """Load the processor of a vision-language model (see the module docstring for the torchvision fallback).

    Keyword arguments go to ``from_pretrained`` (e.g. ``padding_side="left"``, ``revision``).
    """
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    from himed.models.processors import IMAGE_ONLY_PROCESSORS

    source = _check_source(name_or_path, require_config=False)
    base = _adapter_base(source)
    if base is not None and not (Path(source) / "tokenizer_config.json").is_file():
        # A PEFT adapter saved without a processor: it was trained with its base model's processor.
        source = base
    failure: Exception | None = None
    try:
        processor = AutoProcessor.from_pretrained(source, **kwargs)
    except (OSError, ImportError, ValueError, TypeError) as error:
        failure = error
        processor = None
    if processor is not None and _is_full_processor(processor):
        return processor

    model_type = _processor_model_type(source, kwargs)
    fallback = IMAGE_ONLY_PROCESSORS.get(model_type)
    got = "failed" if failure is not None else f"returned a {type(processor).__name__}"
    if fallback is None or is_torchvision_available():
        # With torchvision present the upstream processor should have worked: the fallback would only hide the bug.
        reason = "torchvision is installed" if fallback is not None else f"no image-only fallback for {model_type!r}"
        raise ValueError(
            f"AutoProcessor {got} for {source} and {reason}; expected a processor with a tokenizer and an image "
            "processor"
        ) from failure
    logger.warning(
        "AutoProcessor %s for %s (torchvision is not installed); using the image-only %s instead (no video input)",
        got,
        source,
        fallback.__name__,
    )
    return fallback.from_pretrained(source, **kwargs)
