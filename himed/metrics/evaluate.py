"""``himed evaluate``: score generated reports, from a predictions file or by generating them from a model first.

The steps live in their own modules: reading a predictions file and choosing the texts to score
(:mod:`himed.metrics.predictions`), generating predictions from a model (:mod:`himed.metrics.generation`) and
computing the metrics (:mod:`himed.metrics.scoring`). This module ties them together and writes the results.

Writes ``DIR/metrics.json`` ``{"metrics": {name: number}, "config": {...}, "n": int}`` and ``DIR/metrics.md`` (the
same numbers as a table, generated from the same dict); docs/evaluation.md describes both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from himed.metrics.generation import (
    BACKENDS,
    GenerationSettings,
    HFGenerator,
    VLLMGenerator,
    generate_hierarchical,
    generate_predictions,
)
from himed.metrics.predictions import SECTION_CHOICES, PredictionLine, attach_references, read_predictions
from himed.metrics.scoring import CLEAN_CHOICES, score_lines

# The names callers import from here: the evaluate API, wherever each part lives.
__all__ = [
    "BACKENDS",
    "CLEAN_CHOICES",
    "SECTION_CHOICES",
    "GenerationSettings",
    "HFGenerator",
    "PredictionLine",
    "VLLMGenerator",
    "attach_references",
    "evaluate_predictions_file",
    "format_value",
    "generate_hierarchical",
    "generate_predictions",
    "metrics_markdown",
    "read_predictions",
    "score_lines",
    "write_metrics",
]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("himed", "pycocoevalcap"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out


def format_value(value: float) -> str:
    """How metrics.md shows a number: 4 decimals (metrics.json keeps full precision)."""
    return f"{value:.4f}"


def metrics_markdown(result: Mapping[str, Any]) -> str:
    """metrics.md from the metrics.json dict, so the two cannot disagree."""
    config = result["config"]
    lines = [
        "# Evaluation",
        "",
        f"n = {result['n']} report pairs; section `{config.get('section')}`; cleaning `{config.get('clean')}`; "
        f"METEOR: {config.get('meteor')}; labeler `{config.get('labeler')}` (uncertain counted "
        f"{config.get('uncertain')}).",
        "",
        "| metric | value |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {format_value(value)} |" for name, value in result["metrics"].items()]
    cleaning = (
        "the text as given (whitespace collapsed; --clean none: not R2Gen's cleaning)"
        if config.get("clean") == "none"
        else f"text cleaned by R2Gen's `{config.get('clean')}` rule"
    )
    lines += [
        "",
        f"How these compare with published tables: BLEU, METEOR, ROUGE-L and CIDEr are corpus-level pycocoevalcap 1.2 "
        f"numbers on {cleaning} (no PTB tokenizer, no reference truncation, no <unk> mapping); CIDEr's IDF comes "
        "from these references, so it depends on the test set.",
    ]
    if "meteor_nltk" in result["metrics"]:
        lines += ["", "meteor_nltk is nltk's METEOR, not the METEOR 1.5 jar: not comparable with papers' METEOR."]
    if config.get("labeler") == "rules":
        lines += [
            "",
            "Clinical efficacy uses himed's rule labeler; papers label with the CheXpert labeler or CheXbert, so "
            "ce_* numbers are comparable with theirs only when re-run with --labeler chexbert.",
        ]
    for name, reason in config.get("undefined", {}).items():
        lines.append(f"\n{name}: not defined for this set ({reason}).")
    lines += ["", "Configuration:", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def write_metrics(out_dir: str | Path, metrics: Mapping[str, float], config: Mapping[str, Any], n: int) -> Path:
    """Write DIR/metrics.json and DIR/metrics.md; returns the JSON path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"metrics": dict(metrics), "config": {**config, "versions": _versions()}, "n": n}
    path = out_dir / "metrics.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out_dir / "metrics.md").write_text(metrics_markdown(result), encoding="utf-8")
    return path


def evaluate_predictions_file(
    predictions: str | Path,
    out_dir: str | Path,
    *,
    rows: Sequence[Mapping] | None = None,
    allow_empty: bool = False,
    extra_config: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Read, score and write; ``rows``: dataset rows supplying references by id. Returns the metrics.json dict."""
    lines = read_predictions(predictions, allow_empty=allow_empty, need_references=rows is None)
    if rows is not None:
        lines = attach_references(lines, rows, str(predictions))
    metrics, config, n = score_lines(lines, **options)
    config = {"predictions": str(predictions), **dict(extra_config or {}), **config}
    path = write_metrics(out_dir, metrics, config, n)
    return json.loads(path.read_text(encoding="utf-8"))
