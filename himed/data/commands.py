"""``himed data ...`` commands: ``himed data demo`` writes the procedural demo data set (himed.data.demo);
``himed data resize`` makes a pre-resized image cache for one image budget (himed.data.resize)."""

from __future__ import annotations

import argparse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {value}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="data sets: the procedural demo set")
    data_commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    demo = data_commands.add_parser(
        "demo",
        help="write the procedural chest-X-ray demo set (R2Gen annotation.json + PNGs)",
        description=(
            "Write DIR/annotation.json (train/val/test rows with findings, impression, labels, views), "
            "DIR/images/<id>/<view>.png and DIR/meta.json. Deterministic for a seed. Labels are image truth; "
            "with --omit-rate > 0 some drawn findings are left out of the training reports' text."
        ),
    )
    demo.add_argument("--out-dir", required=True, help="output directory (created; must be empty unless --overwrite)")
    demo.add_argument("--n", type=_positive_int, default=1500, help="number of studies, split 80/10/10 (default 1500)")
    demo.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed gives identical files (default 0)"
    )
    demo.add_argument(
        "--omit-rate",
        type=_fraction,
        default=0.0,
        help="fraction of drawn findings left out of the report text while labels keep them: noisy references "
        "(default 0.0: text and labels agree)",
    )
    demo.add_argument(
        "--omit-splits",
        default="train",
        help="comma-separated splits whose reports --omit-rate thins (default: train; val/test stay complete)",
    )
    demo.add_argument(
        "--image-size",
        type=_positive_int,
        default=112,
        help="square image side in pixels, at least 56 (default 112: 16 visual tokens for a patch-14, 2x2-merge "
        "Qwen2.5-VL vision tower)",
    )
    demo.add_argument(
        "--lateral-rate", type=float, default=0.2, help="fraction of studies with a LATERAL view too (default 0.2)"
    )
    demo.add_argument(
        "--prior-rate",
        type=_rate,
        default=0.0,
        help="fraction of studies given a prior_report, an earlier report of the same patient (default 0.0: none)",
    )
    demo.add_argument(
        "--overwrite", action="store_true", help="replace an earlier demo set in --out-dir (one with a meta.json)"
    )
    demo.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="processes drawing images (default: up to 2, the usable CPU cores; files are identical either way)",
    )
    demo.set_defaults(handler=run_demo)
    _add_resize(data_commands)


def _add_resize(data_commands: argparse._SubParsersAction) -> None:
    resize = data_commands.add_parser(
        "resize",
        help="pre-resize a dataset's images once for an image budget (min_pixels/max_pixels)",
        description="Resize every image of the chosen splits to exactly the size the Qwen-VL processor picks at the "
        "budget, store them losslessly under OUT/images and write OUT/<split>.jsonl rows pointing at them "
        "(train on them with data_format: jsonl, data_path: OUT and the same budget; docs/images.md).",
    )
    resize.add_argument("--data", required=True, help="dataset path (as data_path in a recipe)")
    resize.add_argument("--data-format", default="r2gen", help="r2gen, mimic_cxr_jpg, jsonl or hf_disk (default r2gen)")
    resize.add_argument("--splits", default="train,val,test", help="comma-separated splits (default train,val,test)")
    resize.add_argument("--out-dir", required=True, help="cache directory (images/, <split>.jsonl, resize.json)")
    resize.add_argument("--max-pixels", type=_positive_int, required=True, help="the budget's max_pixels")
    resize.add_argument("--min-pixels", type=_positive_int, default=None, help="the budget's min_pixels")
    resize.add_argument(
        "--model", help="model folder whose image processor (patch, merge, filter) to use (default: Qwen2.5-VL's)"
    )
    resize.add_argument("--on-bad-rows", default="error", choices=["error", "skip"], help="an undecodable image")
    resize.add_argument("--workers", type=_positive_int, default=None, help="resizing threads (default 2 x cores)")
    resize.set_defaults(handler=run_resize)


def run_resize(args: argparse.Namespace) -> int:
    import time

    from himed.data.loaders import load_rows
    from himed.data.resize import build_resize_cache
    from himed.models.image_budget import QWEN_SHIPPED_MIN_PIXELS, apply_image_budget

    start = time.perf_counter()
    if args.model:
        from himed.models.loading import load_processor

        processor = load_processor(args.model)
    else:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        # Qwen2.5-VL's image processor as shipped: patch 14, merge 2, bicubic, RGB.
        processor = Qwen2VLImageProcessorPil(min_pixels=QWEN_SHIPPED_MIN_PIXELS, max_pixels=args.max_pixels)
    apply_image_budget(processor, args.min_pixels, args.max_pixels)
    splits = [name.strip() for name in args.splits.split(",") if name.strip()]
    options = {"on_bad": args.on_bad_rows, "check_images": "none"}
    rows = {split: load_rows(args.data_format, args.data, split, **options) for split in splits}
    manifest = build_resize_cache(
        rows, args.out_dir, processor, on_bad=args.on_bad_rows, workers=args.workers, source=str(args.data)
    )
    print(
        f"resized {manifest['images']} images ({manifest['studies']}) at min_pixels {manifest['min_pixels']}, "
        f"max_pixels {manifest['max_pixels']} into {args.out_dir} in {time.perf_counter() - start:.1f} s"
    )
    return 0


def run_demo(args: argparse.Namespace) -> int:
    import os
    import time

    from himed.data.demo import generate_demo

    start = time.perf_counter()
    workers = args.workers or min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    summary = generate_demo(
        args.out_dir,
        n=args.n,
        seed=args.seed,
        omit_rate=args.omit_rate,
        image_size=args.image_size,
        lateral_rate=args.lateral_rate,
        overwrite=args.overwrite,
        workers=workers,
        prior_rate=args.prior_rate,
        omit_splits=[name.strip() for name in args.omit_splits.split(",") if name.strip()],
    )
    splits = ", ".join(f"{name} {count}" for name, count in summary["splits"].items())
    print(
        f"wrote {summary['n']} studies ({splits}; {summary['images']} images) to {args.out_dir} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0
