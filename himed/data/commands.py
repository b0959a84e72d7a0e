"""``himed data ...`` commands: ``himed data demo`` writes the procedural demo data set (himed.data.demo)."""

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


def _unit_interval(*, include_one: bool):
    """An argparse type for a number in [0, 1) or, with ``include_one``, [0, 1]."""
    shown = "[0, 1]" if include_one else "[0, 1)"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {shown}, got {text!r}") from None
        if not (0.0 <= value <= 1.0 if include_one else 0.0 <= value < 1.0):
            raise argparse.ArgumentTypeError(f"expected a number in {shown}, got {value}")
        return value

    return parse


_fraction = _unit_interval(include_one=False)  # a share of something that cannot be all of it (--omit-rate)
_rate = _unit_interval(include_one=True)


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
