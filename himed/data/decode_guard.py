"""Images decoded at training and evaluation time under the ``on_bad_rows`` policy, never a bare PIL traceback.

A JPEG whose body is truncated passes every load-time check short of ``check_images: decode`` and fails only when a
batch first decodes it, hours into a run. In TRL's trainers that decode happens in ``datasets`` itself: the
``images`` column is an Arrow ``Image`` feature, decoded when the dataloader reads a row (before any collator or
processor sees it). So ``guard_image_decoding`` stores the column undecoded and installs a ``datasets`` transform
that decodes each row's images itself:

- ``on_bad="error"``: the first image that fails raises ``ImageDecodeError`` naming the study and the file.
- ``on_bad="skip"``: the study is counted and logged by name (once), and its place in the batch is taken by the
  next study (in dataset order, wrapping) whose images decode. Every copy of the study maps to the same
  replacement, so GRPO's groups of ``num_generations`` copies of one prompt stay groups of one prompt, the batch
  keeps its size, and the reward columns (reference, labels) are the replacement's own.

With dataloader workers each worker process keeps its own count; every skip is logged where it happens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from PIL import Image

logger = logging.getLogger(__name__)

IMAGE_COLUMN = "images"


class ImageDecodeError(ValueError):
    """An image of a study that cannot be decoded; the message names the study and the file."""

    def __init__(self, study_id: str, source: str, error: Exception) -> None:
        self.study_id, self.source, self.cause = str(study_id), source, error
        super().__init__(
            f"study {study_id}: image {source} cannot be decoded ({type(error).__name__}: {error}); fix or remove the "
            "file, or skip such studies (on_bad_rows: skip in a recipe, --on-bad-rows skip for himed evaluate)"
        )


def decode_image(image: Any, study_id: str) -> Image.Image:
    """A loaded PIL image from a path, a PIL image, or a ``datasets`` ``{"path", "bytes"}`` dict.

    Raises ``ImageDecodeError`` (naming ``study_id`` and the file) whatever PIL raises.
    """
    import io

    if isinstance(image, dict):
        source = image.get("path") or "<bytes>"
    else:
        source = getattr(image, "filename", None) or image
    try:
        if isinstance(image, Image.Image):
            image.load()
            return image
        if isinstance(image, dict):
            opened = Image.open(io.BytesIO(image["bytes"])) if image.get("bytes") else Image.open(image["path"])
        else:
            opened = Image.open(image)
        opened.load()  # decode now: a lazily opened file would fail later, inside the processor
        return opened
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ... for bad files
        raise ImageDecodeError(study_id, str(source), error) from None


def decode_study_images(study_id: str, images: Sequence[Any]) -> list[Image.Image]:
    return [decode_image(image, study_id) for image in images]


def _image_key(image: Any) -> str:
    """What identifies a stored (undecoded) image: its path, else a hash of its bytes."""
    if isinstance(image, dict):
        if image.get("path"):
            return str(image["path"])
        if image.get("bytes"):
            import hashlib

            return hashlib.sha1(image["bytes"]).hexdigest()
    return str(image)


class DecodeGuard:
    """The ``datasets`` transform of ``guard_image_decoding`` (see the module docstring).

    A batch may lack the ``id`` column (Trainer's ``remove_unused_columns`` drops it before the transform runs), so a
    row is found in ``base`` by its first image: the study is named from ``base`` and replaced by a later row.
    """

    def __init__(self, base, on_bad: str = "error", *, name: str = "train") -> None:
        if on_bad not in ("error", "skip"):
            raise ValueError(f"on_bad must be error or skip, got {on_bad!r}")
        self.base, self.on_bad, self.name = base, on_bad, name
        self.skipped: dict[str, str] = {}  # study id -> the error message, in the order met
        self._replacement: dict[str, dict[str, Any]] = {}
        self._index_of: dict[str, int] | None = None  # first image -> row of base; built at the first failure

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out = {key: list(values) for key, values in batch.items()}
        for k, images in enumerate(batch[IMAGE_COLUMN]):
            study_id = batch["id"][k] if "id" in batch else None
            try:
                out[IMAGE_COLUMN][k] = decode_study_images(study_id or "?", images)
            except ImageDecodeError as error:
                index = self._row_index(images)
                study_id = str(self.base[index]["id"]) if index is not None else study_id or "?"
                error = ImageDecodeError(study_id, error.source, error.cause)
                if self.on_bad == "error":
                    raise error from None
                row = self._replace(study_id, index, error)
                for key in out:
                    out[key][k] = row[key]
        return out

    def _row_index(self, images: Sequence[Any]) -> int | None:
        if not images:
            return None
        if self._index_of is None:
            self._index_of = {}
            for i, row_images in enumerate(self.base[IMAGE_COLUMN]):
                if row_images:
                    self._index_of.setdefault(_image_key(row_images[0]), i)
        return self._index_of.get(_image_key(images[0]))

    def _replace(self, study_id: str, index: int | None, error: ImageDecodeError) -> dict[str, Any]:
        """The row that takes a bad study's place (the next study that decodes); the skip is logged once."""
        if study_id not in self._replacement:
            self.skipped[study_id] = str(error)
            logger.warning(
                "%s data: skipped study %s (%d skipped so far in this process): %s",
                self.name,
                study_id,
                len(self.skipped),
                error,
            )
            self._replacement[study_id] = self._next_good_row(index or 0)
        return self._replacement[study_id]

    def _next_good_row(self, start: int) -> dict[str, Any]:
        n = len(self.base)
        for offset in range(1, n + 1):
            candidate = self.base[(start + offset) % n]
            candidate_id = str(candidate["id"])
            if candidate_id in self.skipped:
                continue
            try:
                candidate[IMAGE_COLUMN] = decode_study_images(candidate_id, candidate[IMAGE_COLUMN])
            except ImageDecodeError as error:
                self._replace(candidate_id, (start + offset) % n, error)  # counted and logged too
                continue
            return candidate
        raise ValueError(f"{self.name} data: no study's images decode ({len(self.skipped)} skipped); nothing to train")

    def summary(self) -> str:
        shown = ", ".join(list(self.skipped)[:5]) + (" ..." if len(self.skipped) > 5 else "")
        return f"{self.name} data: {len(self.skipped)} studies skipped for undecodable images: {shown}"


def guard_image_decoding(dataset, on_bad: str = "error", *, name: str = "train"):
    """``dataset`` (a ``datasets.Dataset`` with an ``id`` and an ``images`` column of ``Image`` items) with its images
    decoded by a ``DecodeGuard`` under ``on_bad``; None stays None. The guard is at ``dataset.decode_guard``."""
    if dataset is None:
        return None
    from datasets import Image as ImageFeature
    from datasets import List

    base = dataset.cast_column(IMAGE_COLUMN, List(ImageFeature(decode=False)))
    guard = DecodeGuard(base, on_bad, name=name)
    guarded = base.with_transform(guard)
    guarded.decode_guard = guard
    return guarded


def log_decode_skips(*datasets) -> None:
    """Log the summary of each guarded dataset that skipped a study (call at the end of a stage)."""
    for dataset in datasets:
        guard = getattr(dataset, "decode_guard", None)
        if guard is not None and guard.skipped:
            logger.warning(guard.summary())
