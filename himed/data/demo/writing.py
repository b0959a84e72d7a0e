"""Writing the demo set to disk (the I/O edge): splits, PNGs, annotation.json and meta.json."""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from himed.clinical.observations import CHEXBERT_OBSERVATIONS
from himed.data.demo.drawing import draw_view
from himed.data.demo.findings import (
    GENERATOR,
    GENERATOR_VERSION,
    LATERAL_RATE,
    MIN_IMAGE_SIZE,
    OMIT_SPLITS,
    PREVALENCE,
    SPLIT_FRACTIONS,
    DemoStudy,
    ImageFinding,
)
from himed.data.demo.report import sample_study


def study_id(index: int) -> str:
    return f"demo{index:05d}"


def split_assignment(n: int, seed: int = 0) -> list[str]:
    """The split of each study index: a seeded shuffle cut 80/10/10, every split non-empty (needs n >= 3)."""
    if n < 3:
        raise ValueError(f"n must be at least 3 (one study per split), got {n}")
    n_val = max(1, round(n * SPLIT_FRACTIONS["val"]))
    n_test = max(1, round(n * SPLIT_FRACTIONS["test"]))
    order = list(range(n))
    random.Random(f"himed-demo-split/{seed}").shuffle(order)
    splits = ["train"] * n
    for position, index in enumerate(order):
        if position < n_val:
            splits[index] = "val"
        elif position < n_val + n_test:
            splits[index] = "test"
    return splits


def _check_rates(omit_rate: float, lateral_rate: float, prior_rate: float = 0.0) -> None:
    if not 0.0 <= omit_rate < 1.0:
        raise ValueError(f"omit_rate must be in [0, 1), got {omit_rate}")
    if not 0.0 <= lateral_rate <= 1.0:
        raise ValueError(f"lateral_rate must be in [0, 1], got {lateral_rate}")
    if not 0.0 <= prior_rate <= 1.0:
        raise ValueError(f"prior_rate must be in [0, 1], got {prior_rate}")


def _is_demo_meta(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out-dir {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        meta = out_dir / "meta.json"
        if not overwrite:
            raise ValueError(f"--out-dir {out_dir} is not empty; pass --overwrite to replace an earlier demo set")
        if not _is_demo_meta(meta):
            # Never delete a directory we did not write.
            raise ValueError(f"--out-dir {out_dir} is not empty and holds no demo meta.json; refusing to overwrite it")
        shutil.rmtree(out_dir / "images", ignore_errors=True)
        for name in ("annotation.json", "meta.json"):
            (out_dir / name).unlink(missing_ok=True)
    try:
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create {out_dir / 'images'}: {error.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise ValueError(f"--out-dir {out_dir} is not writable")


def _write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    # No metadata chunks and fixed compression: byte-identical files for identical pixels.
    Image.fromarray(pixels, mode="L").save(path, format="PNG", optimize=False, compress_level=6)


def _image_paths(study: DemoStudy) -> list[str]:
    return [f"{study_id(study.index)}/{view.lower()}.png" for view in study.views]


def _write_study_images(
    images_dir: Path, seed: int, image_size: int, jobs: Sequence[tuple[int, tuple[ImageFinding, ...], tuple[str, ...]]]
) -> int:
    """Draw and write the views of ``jobs`` (index, findings, views); the unit of work of a worker process."""
    written = 0
    for index, image_findings, views in jobs:
        (images_dir / study_id(index)).mkdir(exist_ok=True)
        for view_index, view in enumerate(views):
            pixels = draw_view(image_findings, view, image_size, seed=(seed, index, view_index))
            _write_png(images_dir / study_id(index) / f"{view.lower()}.png", pixels)
            written += 1
    return written


# Below this many studies a process pool costs more (interpreter start-up) than it saves.
MIN_STUDIES_PER_WORKER = 150


def _draw_all(images_dir: Path, studies: Sequence[DemoStudy], seed: int, image_size: int, workers: int) -> int:
    jobs = [(study.index, study.image_findings, study.views) for study in studies]
    workers = max(1, min(workers, len(jobs) // MIN_STUDIES_PER_WORKER))
    if workers == 1:
        return _write_study_images(images_dir, seed, image_size, jobs)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Each image depends only on (seed, index, view), so the split into chunks cannot change any file. "spawn":
    # forking a parent that already runs torch's thread pools can deadlock.
    chunks = [jobs[start :: workers * 4] for start in range(workers * 4)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(_write_study_images, images_dir, seed, image_size, chunk) for chunk in chunks]
        return sum(future.result() for future in futures)


def generate_demo(
    out_dir: str | os.PathLike,
    n: int = 1500,
    seed: int = 0,
    omit_rate: float = 0.0,
    image_size: int = 112,
    lateral_rate: float = LATERAL_RATE,
    overwrite: bool = False,
    workers: int = 1,
    omit_splits: Sequence[str] = OMIT_SPLITS,
    prior_rate: float = 0.0,
) -> dict:
    """Write the demo set to ``out_dir`` (layout in the module docstring) and return its summary.

    The summary (also ``meta.json``): the arguments, ``generator_version``, ``splits`` (studies per split),
    ``images``, ``prevalence`` (fraction of studies whose labels have each observation positive or uncertain) and
    ``mentioned`` (fraction with the observation in their labels at all). ``omit_rate`` applies to the rows of
    ``omit_splits`` only (default: train), so evaluation references stay complete. ``workers`` > 1 draws in that many
    processes (spawned: a script calling this needs the usual ``if __name__ == "__main__":`` guard); the files are
    identical either way. ``prior_rate``: the fraction of studies whose row has a ``prior_report`` (an earlier report
    of the same patient; 0 writes none and leaves every file as it was before priors existed). Raises ValueError for bad arguments or an output directory that cannot be written.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 3:
        raise ValueError(f"n must be an integer of at least 3 (one study per split), got {n!r}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    _check_rates(omit_rate, lateral_rate, prior_rate)
    omit_splits = tuple(omit_splits)
    unknown = sorted(set(omit_splits) - set(SPLIT_FRACTIONS))
    if unknown:
        raise ValueError(f"omit_splits: unknown split(s) {unknown}; use {', '.join(SPLIT_FRACTIONS)}")
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    # Claim the directory first, so that an interrupted run can be replaced with --overwrite.
    (out_dir / "meta.json").write_text(json.dumps({"generator": GENERATOR, "complete": False}) + "\n")

    splits = split_assignment(n, seed)
    studies = [
        sample_study(index, seed, omit_rate if splits[index] in omit_splits else 0.0, lateral_rate, prior_rate)
        for index in range(n)
    ]
    n_images = _draw_all(out_dir / "images", studies, seed, image_size, workers)

    annotation: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    positive_counts = dict.fromkeys(CHEXBERT_OBSERVATIONS, 0)
    mentioned_counts = dict.fromkeys(CHEXBERT_OBSERVATIONS, 0)
    for study in studies:
        for obs, value in study.labels.items():
            mentioned_counts[obs] += 1
            positive_counts[obs] += value in (1, -1)
        row = {
            "id": study_id(study.index),
            "report": study.report,
            "image_path": _image_paths(study),
            "split": splits[study.index],
            "findings": study.findings,
            "impression": study.impression,
            "labels": study.labels,
            "views": list(study.views),
        }
        if study.indication:
            row["indication"] = study.indication
        if study.prior_report:
            row["prior_report"] = study.prior_report
        annotation[splits[study.index]].append(row)
    omitted_findings = sum(len(study.omitted) for study in studies)

    summary = {
        "generator": GENERATOR,
        "complete": True,
        "generator_version": GENERATOR_VERSION,
        "n": n,
        "seed": seed,
        "omit_rate": omit_rate,
        "omit_splits": [name for name in SPLIT_FRACTIONS if name in omit_splits],
        "image_size": image_size,
        "lateral_rate": lateral_rate,
        "labels_note": (
            "labels are image truth: every drawn finding is 1 (clear) or -1 (faint, hedged in the text); with "
            "omit_rate > 0 some drawn findings of the omit_splits rows are left out of the report text while labels "
            "keep them. "
            "0 = mentioned negatively; unmentioned absent findings have no key."
        ),
        "splits": {name: len(rows) for name, rows in annotation.items()},
        "images": n_images,
        "omitted_findings": omitted_findings,
        "prevalence": {obs: round(count / n, 4) for obs, count in positive_counts.items() if count},
        "mentioned": {obs: round(count / n, 4) for obs, count in mentioned_counts.items() if count},
        "configured_prevalence": dict(PREVALENCE),
    }
    if prior_rate:  # only when used, so that sets made without priors keep their meta.json byte for byte
        summary["prior_rate"] = prior_rate
        summary["prior_reports"] = sum(study.prior_report is not None for study in studies)
    (out_dir / "meta.json").write_text(json.dumps(summary, indent=2) + "\n")
    # Written last: an interrupted run leaves no annotation.json that looks complete.
    (out_dir / "annotation.json").write_text(json.dumps(annotation) + "\n")
    return summary
