"""Commands ``himed evaluate``, ``himed compare`` and ``himed plot`` (DESIGN.md section 4).

Nothing heavy is imported at module level: ``himed --help`` must stay fast.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_SECTIONS_TEXT = "think,finding,impression"


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    _add_evaluate(subparsers)
    _add_compare(subparsers)
    _add_plot(subparsers)


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score generated reports (NLG, clinical efficacy, severity, format, consistency)",
        description="Score a predictions JSONL, or generate predictions from a model first, and write "
        "DIR/metrics.json and DIR/metrics.md.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--predictions", help="JSONL with 'prediction' and 'reference' (or findings/impression), optional 'id'"
    )
    source.add_argument("--model", help="model directory or hub id to generate predictions with (needs --data)")
    parser.add_argument(
        "--out-dir", required=True, help="directory for metrics.json, metrics.md (and predictions.jsonl)"
    )
    parser.add_argument(
        "--data", help="dataset path: the rows to generate for (--model), or references by id (--predictions)"
    )
    parser.add_argument(
        "--data-format", default="r2gen", help="format of --data for load_rows: r2gen, mimic_cxr_jpg, jsonl, hf_disk"
    )
    parser.add_argument("--split", default="test", help="dataset split (default test)")
    parser.add_argument(
        "--clean",
        default="mimic_cxr",
        choices=["mimic_cxr", "iu_xray", "none"],
        help="R2Gen text cleaning applied before the NLG metrics (default mimic_cxr)",
    )
    parser.add_argument(
        "--section",
        default="report",
        choices=["report", "findings", "impression"],
        help="which text to score (default report)",
    )
    parser.add_argument(
        "--sections",
        default=DEFAULT_SECTIONS_TEXT,
        help=f"completion section tags, comma-separated (default {DEFAULT_SECTIONS_TEXT})",
    )
    parser.add_argument(
        "--labeler",
        default="rules",
        choices=["rules", "chexbert"],
        help="labeler for clinical efficacy and consistency",
    )
    parser.add_argument("--chexbert-checkpoint", help="CheXbert weights (chexbert.pth) for --labeler chexbert")
    parser.add_argument("--chexbert-tokenizer", help="local BERT tokenizer folder for --labeler chexbert")
    parser.add_argument(
        "--uncertain",
        default="positive",
        choices=["positive", "negative"],
        help="how clinical efficacy counts uncertain labels (default positive)",
    )
    parser.add_argument(
        "--meteor",
        default="auto",
        choices=["auto", "jar", "nltk"],
        help="METEOR 1.5 jar (needs Java) or nltk (reported as meteor_nltk); auto: the jar when Java is found",
    )
    parser.add_argument(
        "--radgraph-python",
        help="Python of a separate environment with radgraph installed; enables radgraph_f1_* (see himed.clinical.radgraph)",
    )
    parser.add_argument("--radgraph-model", default="radgraph-xl", help="RadGraph checkpoint (default radgraph-xl)")
    parser.add_argument("--radgraph-cache-dir", help="where the RadGraph package keeps (or finds) its model folder")
    parser.add_argument(
        "--allow-empty-predictions",
        action="store_true",
        help="score empty predictions as empty reports instead of rejecting the file",
    )
    generation = parser.add_argument_group("generation (--model)")
    generation.add_argument(
        "--backend", default="hf", choices=["hf", "vllm"], help="hf: transformers generate (CPU/GPU); vllm: GPU"
    )
    generation.add_argument("--batch-size", type=int, default=8, help="studies per generate call (default 8)")
    generation.add_argument("--max-new-tokens", type=int, default=256, help="generation length limit (default 256)")
    generation.add_argument(
        "--hierarchical",
        action="store_true",
        help="two-pass decoding of the Hi-MrGn stage: the findings, then the impression given the findings "
        "(--max-new-tokens bounds each pass; needs the impression section)",
    )
    generation.add_argument("--device", default="auto", help="hf backend device: auto, cpu, cuda, cuda:1, ...")
    generation.add_argument("--dtype", default=None, help="model dtype: auto, float32, float16, bfloat16")
    generation.add_argument(
        "--limit", type=int, default=None, help="only the first N studies of the split (smoke runs)"
    )
    generation.add_argument(
        "--min-pixels", type=int, default=None, help="image budget (docs/images.md); default: the model folder's"
    )
    generation.add_argument(
        "--max-pixels", type=int, default=None, help="image budget (docs/images.md); default: the model folder's"
    )
    generation.add_argument(
        "--on-bad-rows",
        default="error",
        choices=["error", "skip"],
        help="a study whose image does not decode: stop naming it (error), or leave it out of the scores (skip)",
    )
    parser.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from himed.metrics.evaluate import evaluate_predictions_file
    from himed.metrics.generation import GenerationSettings, generate_predictions

    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    labeler_kwargs = {}
    if args.labeler == "chexbert":
        labeler_kwargs = {"checkpoint": args.chexbert_checkpoint, "tokenizer": args.chexbert_tokenizer}
    elif args.chexbert_checkpoint or args.chexbert_tokenizer:
        raise ValueError("--chexbert-checkpoint/--chexbert-tokenizer need --labeler chexbert")
    options = {
        "clean": args.clean,
        "section": args.section,
        "sections": sections,
        "labeler": args.labeler,
        "labeler_kwargs": labeler_kwargs,
        "uncertain": args.uncertain,
        "meteor": args.meteor,
        "radgraph": None,
    }
    if args.radgraph_python:
        options["radgraph"] = {
            "python": args.radgraph_python,
            "model_type": args.radgraph_model,
            "model_cache_dir": args.radgraph_cache_dir,
        }
    rows = None
    if args.data is not None:
        from himed.data.loaders import load_rows

        rows = load_rows(args.data_format, args.data, args.split)
        if args.limit is not None:
            rows = rows[: args.limit]
    if args.hierarchical and args.model is None:
        raise ValueError("--hierarchical is a way of generating: it needs --model")
    if args.model is not None:
        if rows is None:
            raise ValueError("--model needs --data (and --data-format, --split) to know which studies to generate for")
        settings = GenerationSettings(
            model=args.model,
            data=str(args.data),
            data_format=args.data_format,
            split=args.split,
            sections=sections,
            max_new_tokens=args.max_new_tokens,
            backend=args.backend,
            hierarchical=args.hierarchical,
            min_pixels=args.min_pixels,
            max_pixels=args.max_pixels,
        )
        skipped: list[str] = []
        predictions = generate_predictions(
            rows,
            args.out_dir,
            settings,
            batch_size=args.batch_size,
            device=args.device,
            dtype=args.dtype,
            on_bad=args.on_bad_rows,
            skipped=skipped,
        )
        if skipped:  # studies without a decodable image have no prediction and are left out of the scores
            rows = [row for row in rows if str(row["id"]) not in set(skipped)]
        # The references came from the same rows and sit on each line; a model may generate an empty report.
        result = evaluate_predictions_file(
            predictions,
            args.out_dir,
            rows=rows,
            allow_empty=True,
            extra_config={"generation": settings.as_dict()},
            **options,
        )
    else:
        extra = {"data": str(args.data), "split": args.split} if rows is not None else {}
        result = evaluate_predictions_file(
            args.predictions,
            args.out_dir,
            rows=rows,
            allow_empty=args.allow_empty_predictions,
            extra_config=extra,
            **options,
        )
    out = Path(args.out_dir)
    print((out / "metrics.md").read_text(encoding="utf-8"))
    logger.info("wrote %s and %s (n = %d)", out / "metrics.json", out / "metrics.md", result["n"])
    return 0


def _add_compare(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="print runs' metrics side by side (e.g. base -> SFT -> RL)",
        description="A table with one column per metrics.json (in the order given), one row per metric, and the "
        "change of each later run against the first.",
    )
    parser.add_argument("runs", nargs="+", help="metrics.json files (or directories holding one)")
    parser.add_argument("--names", help="comma-separated column names (default: each file's directory name)")
    parser.add_argument("--output", help="also write the table to this Markdown file")
    parser.add_argument("--no-deltas", action="store_true", help="leave out the change-vs-first columns")
    parser.set_defaults(handler=_compare)


def _compare(args: argparse.Namespace) -> int:
    from himed.metrics.compare import compare_table, load_runs

    names = [name.strip() for name in args.names.split(",")] if args.names else None
    runs = load_runs(args.runs, names)
    table = compare_table(runs, deltas=not args.no_deltas)
    print(table)
    if args.output:
        Path(args.output).write_text(table + "\n", encoding="utf-8")
    return 0


def _add_plot(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="plot reward components, total reward, the alpha schedule and judge failures over training steps",
        description="Reads DIR/trainer_state.json (TRL writes it with every checkpoint and at the end of training).",
    )
    parser.add_argument(
        "--log-dir", required=True, help="training output or checkpoint directory with trainer_state.json"
    )
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.set_defaults(handler=_plot)


def _plot(args: argparse.Namespace) -> int:
    from himed.metrics.plot import plot_training

    panels = plot_training(args.log_dir, args.output)
    logger.info("wrote %s (%s)", args.output, ", ".join(panels))
    return 0
