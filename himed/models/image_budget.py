"""The image budget: Qwen's ``min_pixels`` / ``max_pixels`` applied to a processor, counted in visual tokens.

A Qwen-VL image processor resizes every image with ``smart_resize`` to a height and width that are multiples of
``factor = patch_size * merge_size`` (28 for Qwen2.5-VL, 32 for Qwen3-VL) and whose product lies in
``[min_pixels, max_pixels]``; the image then costs ``(height / factor) * (width / factor)`` visual tokens in the
language model. Qwen2.5-VL-3B/7B-Instruct ship ``max_pixels`` 12,845,056, i.e. up to 16,384 tokens per image, which
is ~9,500 tokens for a 3,000 x 2,500 px radiograph; recipes set a budget instead (docs/images.md).

How the budget reaches transformers (read from the installed image processor code):

- transformers 5.17-5.23 keep it in ``image_processor.size`` as a ``SizeDict`` whose ``shortest_edge`` is
  min_pixels and ``longest_edge`` is max_pixels (pixel counts, despite the names). ``__init__`` still converts
  ``min_pixels=``/``max_pixels=`` into ``size``; passing them at call time is deprecated in 5.23 (FutureWarning)
  and, in 5.17, only honoured when both are given. So ``apply_image_budget`` sets ``size`` on the processor
  object (a new SizeDict: 5.17 mutates the class-level default dict in ``__init__``), and nothing is passed per
  call. ``save_pretrained`` then writes ``"size": {"shortest_edge": ..., "longest_edge": ...}``, which both
  versions (and vLLM, which builds the same HF processor from the folder) read back.
- Older image processors (transformers 4.x) also keep ``min_pixels``/``max_pixels`` attributes and save them;
  where those attributes exist they are set too, so the saved file agrees with itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

# What Qwen2.5-VL-3B/7B-Instruct ship in preprocessor_config.json (notes/ENVIRONMENT.md).
QWEN_SHIPPED_MIN_PIXELS = 3136
QWEN_SHIPPED_MAX_PIXELS = 12_845_056
# Studies whose image sizes are read for the start-of-stage log line when no per-study maximum is configured.
DEFAULT_TOKEN_SAMPLE = 1000


def validate_budget(min_pixels: int | None, max_pixels: int | None) -> None:
    """ValueError unless each given bound is a positive integer and min_pixels <= max_pixels."""
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer (pixels) or null, got {value!r}")
    if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")


def image_processor_of(processor: Any) -> Any:
    """The image processor inside a multimodal processor (or the object itself when it is one)."""
    return getattr(processor, "image_processor", None) or processor


def current_budget(processor: Any) -> tuple[int, int]:
    """``(min_pixels, max_pixels)`` the processor resizes to now (read from ``size``, else the 4.x attributes)."""
    image = image_processor_of(processor)
    size = getattr(image, "size", None)
    low = _size_value(size, "shortest_edge")
    high = _size_value(size, "longest_edge")
    low = low if low is not None else getattr(image, "min_pixels", None)
    high = high if high is not None else getattr(image, "max_pixels", None)
    if low is None or high is None:
        raise ValueError(
            f"{type(image).__name__} has no min/max pixel budget (size={size!r}); not a Qwen-VL image processor"
        )
    return int(low), int(high)


def _size_value(size: Any, key: str) -> int | None:
    if size is None:
        return None
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


def apply_image_budget(processor: Any, min_pixels: int | None, max_pixels: int | None) -> Any:
    """Make ``processor`` resize every image into ``[min_pixels, max_pixels]`` pixels; return it.

    ``None`` keeps what the processor already holds (the model folder's value) for that bound; a given value wins
    over the folder. See the module docstring for how this maps onto each transformers version.
    """
    validate_budget(min_pixels, max_pixels)
    if min_pixels is None and max_pixels is None:
        return processor
    image = image_processor_of(processor)
    old_low, old_high = current_budget(image)
    low = min_pixels if min_pixels is not None else old_low
    high = max_pixels if max_pixels is not None else old_high
    validate_budget(low, high)
    size = getattr(image, "size", None)
    if isinstance(size, dict):
        image.size = {**size, "shortest_edge": low, "longest_edge": high}
    else:
        from transformers.image_utils import SizeDict

        image.size = SizeDict(shortest_edge=low, longest_edge=high)
    for name, value in (("min_pixels", low), ("max_pixels", high)):
        if hasattr(image, name):  # transformers 4.x image processors keep (and save) these too
            setattr(image, name, value)
    if (low, high) != (old_low, old_high):
        logger.info(
            "image budget: min_pixels %d, max_pixels %d (the model folder had %d, %d)", low, high, old_low, old_high
        )
    return processor


def image_budget_kwargs(data_args: Any) -> dict[str, int]:
    """The budget of a recipe as vLLM's ``mm_processor_kwargs`` (``{"min_pixels": .., "max_pixels": ..}``).

    Those are vLLM's documented names for Qwen-VL; vLLM hands them to the HF processor it builds, whose
    ``__init__`` turns them into ``size`` on every transformers version above. A bound the recipe leaves unset is
    left out (the model folder's value, which the stages save with the budget, then applies). Empty when the
    recipe sets no budget.
    """
    budget = {
        name: getattr(data_args, name)
        for name in ("min_pixels", "max_pixels")
        if getattr(data_args, name, None) is not None
    }
    validate_budget(budget.get("min_pixels"), budget.get("max_pixels"))
    return budget


# --- visual tokens ------------------------------------------------------------------------------------------------


def resize_target(height: int, width: int, processor: Any) -> tuple[int, int]:
    """``(height, width)`` the processor resizes an image of that size to (transformers' own ``smart_resize``)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    image = image_processor_of(processor)
    low, high = current_budget(image)
    return smart_resize(height, width, factor=image.patch_size * image.merge_size, min_pixels=low, max_pixels=high)


def visual_tokens(height: int, width: int, processor: Any) -> int:
    """Visual tokens (after the spatial merge) the language model sees for one image of ``height`` x ``width``."""
    image = image_processor_of(processor)
    factor = image.patch_size * image.merge_size
    resized_height, resized_width = resize_target(height, width, image)
    return (resized_height // factor) * (resized_width // factor)


def image_dimensions(image: Any) -> tuple[int, int]:
    """``(height, width)`` of a path (read from the file header, no pixel decode) or a PIL image."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.height, image.width
    with Image.open(image) as opened:  # lazy: reads the header only
        return opened.height, opened.width


def study_visual_tokens(row: dict, processor: Any) -> int:
    """Visual tokens of every image of one study row, summed."""
    return sum(visual_tokens(*image_dimensions(image), processor) for image in row["images"])


def _sample_indices(n: int, sample: int | None) -> list[int]:
    """Evenly spaced indices (deterministic, covering the whole split) of at most ``sample`` of ``n`` rows."""
    if sample is None or sample >= n:
        return list(range(n))
    step = n / sample
    return sorted({int(i * step) for i in range(sample)})


def check_visual_tokens(
    rows: Sequence[dict],
    processor: Any,
    *,
    max_per_study: int | None = None,
    on_bad: str = "error",
    sample: int | None = DEFAULT_TOKEN_SAMPLE,
    name: str = "data",
) -> list[dict]:
    """Log ``visual tokens per study: mean <float>, max <int>`` and enforce ``max_per_study``; return the rows kept.

    Image sizes come from file headers (no decode). Without ``max_per_study`` an evenly spaced ``sample`` of the
    studies is read (stated in the line); with it every study is read, and a study above it is an error naming it
    (``on_bad="error"``) or a counted, logged skip (``on_bad="skip"``). A study whose image cannot be opened is left
    to the image checks and the decode guard (it is not counted here).
    """
    from himed.data.rows import BadRowError

    try:
        low, high = current_budget(processor)
    except ValueError as error:  # not a Qwen-VL image processor: there is no smart_resize budget to count with
        if max_per_study is not None:
            raise
        logger.info("%s: visual tokens per study not counted: %s", name, error)
        return list(rows)
    indices = _sample_indices(len(rows), None if max_per_study is not None else sample)
    counts: list[int] = []
    over: list[tuple[int, int]] = []
    for i in indices:
        try:
            tokens = study_visual_tokens(rows[i], processor)
        except (OSError, ValueError) as error:
            logger.debug("%s: study %s: image size unreadable (%s); not counted", name, rows[i]["id"], error)
            continue
        counts.append(tokens)
        if max_per_study is not None and tokens > max_per_study:
            over.append((i, tokens))
    scope = f"all {len(counts)} studies" if len(indices) == len(rows) else f"a sample of {len(counts)} of {len(rows)}"
    if counts:
        logger.info(
            "%s: visual tokens per study: mean %.1f, max %d (%s; min_pixels %d, max_pixels %d)",
            name,
            sum(counts) / len(counts),
            max(counts),
            scope,
            low,
            high,
        )
    if not over:
        return list(rows)
    first, tokens = over[0]
    error = BadRowError(
        f"{name}: study {rows[first]['id']}",
        "images",
        "over_visual_budget",
        f"{tokens} visual tokens, above max_visual_tokens_per_study {max_per_study} (lower max_pixels or raise it)",
    )
    if on_bad == "error":
        raise error
    dropped = {i for i, _ in over}
    examples = ", ".join(f"{rows[i]['id']} ({t})" for i, t in over[:5])
    logger.warning(
        "%s: skipped %d studies over max_visual_tokens_per_study %d: %s%s",
        name,
        len(over),
        max_per_study,
        examples,
        " ..." if len(over) > 5 else "",
    )
    return [row for i, row in enumerate(rows) if i not in dropped]


def prepare_stage_images(processor: Any, data_args: Any, train_rows: list[dict], eval_rows: list[dict]):
    """What every stage does with images before training: apply the recipe's budget to ``processor`` (the recipe
    wins over the model folder; the stage saves the processor, so its output folder carries the budget), log the
    visual tokens per study and enforce ``max_visual_tokens_per_study`` under ``on_bad_rows``.

    Returns the (train, eval) rows kept.
    """
    apply_image_budget(processor, data_args.min_pixels, data_args.max_pixels)
    options = {"max_per_study": data_args.max_visual_tokens_per_study, "on_bad": data_args.on_bad_rows}
    train_rows = check_visual_tokens(train_rows, processor, name=f"{data_args.train_split} split", **options)
    if not train_rows:
        raise ValueError("no training study is within max_visual_tokens_per_study")
    if eval_rows:
        eval_rows = check_visual_tokens(eval_rows, processor, name=f"{data_args.eval_split} split", **options)
    return train_rows, eval_rows
