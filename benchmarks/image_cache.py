"""Decode + resize of full-resolution chest X-ray JPEGs per study, against the pre-resized cache (target >= 5x).

    python benchmarks/image_cache.py [--studies 12] [--output benchmarks/results/image_cache.json]

Data: ``--studies`` synthetic 2-image studies (frontal + lateral), each image a real baseline JPEG of MIMIC-CXR-JPG's
typical size (3,056 x 2,544 and 2,544 x 3,056 px, grayscale, quality 95, with smooth anatomy-like structure and noise
so it compresses like a radiograph: ~1-2 MB). The cache is made from them by ``himed data resize`` at the 3B
recipe's budget (``recipes/qwen2.5-vl-3b/grpo.yaml``), in this run.

Timed in one process, one thread, alternating originals and cache per study so that load from other work hits both
alike (the machine is shared; ratios are what to read):

- ``decode_resize``: what the target is about: open, decode, convert to RGB and resize to the processor's target
  size (for the cache, the resize is a no-op copy), per study.
- ``processor``: the whole image processor call per study (decode + resize + rescale + normalise + patchify), the
  time a trainer spends per study on images.
- ``check_decode``: ``check_images: decode`` per image of the originals (JPEG draft decode), and the same with the
  thread pool over all originals (images per second), as the loader's check runs.

Equality: the processor's ``pixel_values`` from the cache and from the originals are compared for every study
(``max_abs_difference``; identical means 0.0).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FRONTAL, LATERAL = (2544, 3056), (3056, 2544)  # (width, height) as PIL gives sizes


def radiograph(width: int, height: int, seed: int) -> Image.Image:
    """A grayscale image with a chest-like layout (two lung fields, a heart, ribs) and film noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = width / 2, height / 2
    lungs = sum(
        np.exp(-(((x - cx + s * width / 5) / (width / 6)) ** 2 + ((y - cy) / (height / 3.2)) ** 2)) for s in (-1, 1)
    )
    heart = np.exp(-(((x - cx - width / 14) / (width / 8)) ** 2 + ((y - cy - height / 8) / (height / 7)) ** 2))
    ribs = 0.08 * np.sin(y / (height / 40)) * (lungs > 0.3)
    pixels = 200 - 120 * lungs + 70 * heart + 255 * ribs + rng.normal(0, 6, (height, width))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "L")


def write_dataset(root: Path, studies: int) -> None:
    entries = []
    for i in range(studies):
        paths = []
        for view, (width, height) in (("frontal", FRONTAL), ("lateral", LATERAL)):
            path = root / "images" / f"s{i}" / f"{view}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            radiograph(width, height, seed=2 * i + (view == "lateral")).save(path, quality=95)
            paths.append(str(path.relative_to(root / "images")))
        entries.append({"id": f"s{i}", "findings": "Clear lungs.", "impression": "", "image_path": paths})
    (root / "annotation.json").write_text(json.dumps({"train": entries}))


def decode_resize(paths, processor) -> list[Image.Image]:
    from himed.models.image_budget import resize_target

    out = []
    for path in paths:
        with Image.open(path) as image:
            image = image.convert("RGB")
        height, width = resize_target(image.height, image.width, processor)
        out.append(image.resize((width, height), resample=processor.resample))  # same size: PIL copies
    return out


def processor_call(paths, processor):
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return processor(images=images, return_tensors="np")


def clock(function, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from benchmarks.loaders import machine_record
    from himed.cli import main as himed
    from himed.data.image_checks import check_image_files
    from himed.data.loaders import load_rows
    from himed.data.rows import decode_image_file
    from himed.models.image_budget import apply_image_budget, visual_tokens

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=12)
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/image_cache.json"))
    args = parser.parse_args(argv)
    recipe = yaml.safe_load((ROOT / "recipes/qwen2.5-vl-3b/grpo.yaml").read_text())
    budget = {"min_pixels": recipe["min_pixels"], "max_pixels": recipe["max_pixels"]}
    processor = apply_image_budget(Qwen2VLImageProcessorPil(), budget["min_pixels"], budget["max_pixels"])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="image-cache-") as temporary:
        data, cache = Path(temporary) / "data", Path(temporary) / "cache"
        write_dataset(data, args.studies)
        sizes = [p.stat().st_size for p in (data / "images").rglob("*.jpg")]
        command = ["data", "resize", "--data", str(data), "--splits", "train", "--out-dir", str(cache)]
        command += ["--min-pixels", str(budget["min_pixels"]), "--max-pixels", str(budget["max_pixels"])]
        cache_seconds, _ = clock(himed, command)
        originals = [r["images"] for r in load_rows("r2gen", data, "train", check_images="none")]
        cached = [r["images"] for r in load_rows("jsonl", cache, "train", check_images="none")]
        cache_sizes = [p.stat().st_size for p in (cache / "images").rglob("*.png")]
        timings = {name: {"originals": [], "cache": []} for name in ("decode_resize", "processor")}
        max_difference = 0.0
        for original, small in zip(originals, cached, strict=True):
            for name, function in (("decode_resize", decode_resize), ("processor", processor_call)):
                seconds_original, from_original = clock(function, original, processor)
                seconds_cache, from_cache = clock(function, small, processor)
                timings[name]["originals"].append(seconds_original)
                timings[name]["cache"].append(seconds_cache)
                if name == "processor":
                    difference = np.abs(from_original["pixel_values"] - from_cache["pixel_values"]).max()
                    max_difference = max(max_difference, float(difference))
        flat = [path for study in originals for path in study]
        decode_seconds = [clock(decode_image_file, path)[0] for path in flat]
        pool_seconds, problems = clock(check_image_files, flat, "decode")
        assert not problems
    summary = {}
    for name, runs in timings.items():
        original_median = statistics.median(runs["originals"])
        cache_median = statistics.median(runs["cache"])
        summary[name] = {
            "originals_seconds_per_study_median": round(original_median, 4),
            "cache_seconds_per_study_median": round(cache_median, 4),
            "speedup": round(original_median / cache_median, 2),
        }
    result = {
        "benchmark": "decode + resize of 2-image full-resolution studies, originals vs himed data resize cache",
        "command": "python benchmarks/image_cache.py",
        "studies": args.studies,
        "image_sizes_px": [list(FRONTAL), list(LATERAL)],
        "jpeg_bytes_mean": int(statistics.mean(sizes)),
        "cache_png_bytes_mean": int(statistics.mean(cache_sizes)),
        "budget": budget,
        "visual_tokens_per_image": visual_tokens(FRONTAL[1], FRONTAL[0], processor),
        "cache_build_seconds": round(cache_seconds, 2),
        **summary,
        "target_speedup": 5,
        "meets_target": summary["decode_resize"]["speedup"] >= 5,
        "pixel_values_max_abs_difference": max_difference,
        "check_decode_seconds_per_image_median": round(statistics.median(decode_seconds), 4),
        "check_decode_pool_images_per_second": round(len(flat) / pool_seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "machine": machine_record(load_before),
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["meets_target"] and max_difference == 0.0 else 1


if __name__ == "__main__":
    sys.exit(main())
