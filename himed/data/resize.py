"""A pre-resized image cache made once for one image budget (``himed data resize``).

Decoding a 3,000 x 2,500 px radiograph and resizing it to the budget costs far more than everything after it in
the processor, and a run does it again for every epoch, every GRPO generation batch and every evaluation. The
cache does it once: every image of the chosen splits is resized to exactly the size the processor's
``smart_resize`` picks for it at the budget (``himed.models.image_budget.resize_target``), with the processor's own
resampling filter, converted as the processor converts (RGB), and stored losslessly (PNG; as grayscale when the
three channels are equal, which the processor turns back into the same RGB). The processor then finds every image
already at its target size: its ``smart_resize`` of that size is the size itself, PIL's resize to the same size is a
copy, so ``pixel_values`` are identical to those computed from the originals at that budget (tested).

Output: ``OUT/images/...`` (the originals' folder layout under their common root, ``.png``), one ``OUT/<split>.jsonl``
of study rows pointing at them (load with ``data_format: jsonl``, ``data_path: OUT``) and ``OUT/resize.json``
recording the budget, the factor, the filter and the source. Use the cache with the same ``min_pixels`` /
``max_pixels`` it was made for: a smaller budget resizes again (correct, but slower); a larger one cannot restore
detail the cache dropped.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

logger = logging.getLogger(__name__)

MANIFEST = "resize.json"


def resized_image(source: Any, processor: Any) -> Image.Image:
    """The image as the processor would resize it at its current budget (a PIL image, exactly those pixels)."""
    from himed.data.decode_guard import decode_image
    from himed.models.image_budget import image_processor_of, resize_target

    image_processor = image_processor_of(processor)
    image = decode_image(source, study_id="?")
    if getattr(image_processor, "do_convert_rgb", True):
        image = image.convert("RGB")
    height, width = resize_target(image.height, image.width, image_processor)
    if (width, height) != image.size:
        image = image.resize((width, height), resample=image_processor.resample)
    if image.mode == "RGB":
        red, green, blue = image.split()
        if red.tobytes() == green.tobytes() == blue.tobytes():  # a grayscale radiograph: store one channel
            image = red
    return image


def _cache_path(out_dir: Path, source: str, common: str) -> Path:
    relative = os.path.relpath(source, common)
    return out_dir / "images" / (os.path.splitext(relative)[0] + ".png")


def build_resize_cache(
    rows_by_split: dict[str, Sequence[dict]],
    out_dir: str | Path,
    processor: Any,
    *,
    on_bad: str = "error",
    workers: int | None = None,
    source: str = "",
) -> dict[str, Any]:
    """Resize every image of ``rows_by_split`` into ``out_dir`` at ``processor``'s budget; returns the manifest.

    A study whose image does not decode is an ``ImageDecodeError`` naming it (``on_bad="error"``) or left out of
    the cache's rows, counted and logged (``on_bad="skip"``). Images already in the cache are not redone.
    """
    from tqdm.auto import tqdm

    from himed.data.decode_guard import ImageDecodeError
    from himed.data.image_checks import default_workers
    from himed.models.image_budget import current_budget, image_processor_of

    out_dir = Path(out_dir)
    paths = sorted({image for rows in rows_by_split.values() for row in rows for image in row["images"]})
    if any(not isinstance(path, str) for path in paths):
        raise ValueError("himed data resize needs image paths (a dataset of in-memory images cannot be cached)")
    if not paths:
        raise ValueError("no images to resize")
    common = os.path.commonpath([os.path.dirname(path) for path in paths])
    owner = {image: str(row["id"]) for rows in rows_by_split.values() for row in rows for image in row["images"]}

    def resize_one(path: str) -> tuple[str, str | None]:
        target = _cache_path(out_dir, path, common)
        if target.is_file():
            return path, None
        try:
            image = resized_image(path, processor)
        except ImageDecodeError as error:
            return path, str(ImageDecodeError(owner[path], path, error.cause))
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_suffix(f".{os.getpid()}.tmp.png")
        image.save(temporary, compress_level=1)  # fast to write; decode speed barely depends on the level
        os.replace(temporary, target)
        return path, None

    failed: dict[str, str] = {}
    with (
        ThreadPoolExecutor(max_workers=workers or default_workers()) as pool,
        tqdm(total=len(paths), desc="resizing images", unit="img", mininterval=10.0) as bar,
    ):
        for path, problem in pool.map(resize_one, paths):
            if problem is not None:
                if on_bad == "error":
                    raise ValueError(problem)
                failed[path] = problem
                logger.warning("skipped study %s: %s", owner[path], problem)
            bar.update(1)

    counts = {}
    for split, rows in rows_by_split.items():
        kept = [row for row in rows if not any(image in failed for image in row["images"])]
        with (out_dir / f"{split}.jsonl").open("w", encoding="utf-8") as file:
            for row in kept:
                images = [os.path.relpath(_cache_path(out_dir, image, common), out_dir) for image in row["images"]]
                file.write(json.dumps({**row, "images": images}) + "\n")
        counts[split] = len(kept)
    low, high = current_budget(processor)
    image_processor = image_processor_of(processor)
    manifest = {
        "min_pixels": low,
        "max_pixels": high,
        "factor": image_processor.patch_size * image_processor.merge_size,
        "resample": int(image_processor.resample),
        "source": source,
        "images": len(paths) - len(failed),
        "studies": counts,
        "skipped_studies": sorted({owner[path] for path in failed}),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    logger.info("resized %d images for %s into %s", manifest["images"], counts, out_dir)
    return manifest
