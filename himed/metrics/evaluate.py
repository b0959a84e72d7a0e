"""``himed evaluate``: score generated reports, from a predictions file or by generating them from a model first.

The steps live in their own modules: reading a predictions file and choosing the texts to score
(:mod:`himed.metrics.predictions`), generating predictions from a model (:mod:`himed.metrics.generation`) and
computing the metrics (:mod:`himed.metrics.scoring`). This module ties them together and writes the results.

Writes ``DIR/metrics.json`` ``{"metrics": {name: number}, "ci95": {name: [low, high]}, "config": {...}, "n": int}``,
``DIR/metrics.md`` (the same numbers as a table, generated from the same dict) and ``DIR/samples.jsonl`` (per-study
scores and sufficient statistics, what the intervals and ``himed compare``'s paired test are computed from;
:mod:`himed.metrics.bootstrap`); docs/evaluation.md describes all three.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from himed.metrics.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, confidence_intervals
from himed.metrics.generation import (
    BACKENDS,
    GenerationSettings,
    HFGenerator,
    VLLMGenerator,
    generate_hierarchical,
    generate_predictions,
)
from himed.metrics.predictions import SECTION_CHOICES, PredictionLine, attach_references, read_predictions
from himed.metrics.scoring import CLEAN_CHOICES, score_lines, score_samples

# Beside metrics.json: one line per scored study with its scores and statistics.
SAMPLES_FILE = "samples.jsonl"

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
    "score_samples",
    "write_metrics",
    "write_samples",
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
    ]
    ci95 = result.get("ci95")
    if ci95 is not None:
        bootstrap = config.get("bootstrap", {})
        lines += [
            f"95% intervals: percentile bootstrap over the {result['n']} studies, {bootstrap.get('resamples')} "
            f"resamples, seed {bootstrap.get('seed')}; corpus metrics recomputed on each resample.",
            "",
            "| metric | value | 95% CI |",
            "|---|---:|---:|",
        ]
        for name, value in result["metrics"].items():
            interval = ci95.get(name)
            shown = f"[{format_value(interval[0])}, {format_value(interval[1])}]" if interval else "-"
            lines.append(f"| {name} | {format_value(value)} | {shown} |")
        for name, reason in bootstrap.get("no_interval", {}).items():
            lines.append(f"\n{name}: no interval ({reason}).")
    else:
        lines += ["| metric | value |", "|---|---:|"]
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
    if any(name.startswith("ce_") for name in result["metrics"]):
        lines += [
            "",
            f"ce_*: uncertain labels counted {config.get('uncertain')} (--uncertain; positive by default, CheXpert's "
            "U-Ones); ce_*_uneg: uncertain counted negative, the convention of LLaVA-Rad's default evaluation (its "
            '"+" mode counts uncertain positive) and of MAIRA-2. Compare each with the paper using the same one.',
        ]
    if config.get("labeler") == "rules":
        lines += [
            "",
            "Clinical efficacy uses himed's rule labeler; papers label with the CheXpert labeler or CheXbert, so "
            "ce_* numbers are comparable with theirs only when re-run with --labeler chexbert.",
        ]
    for name, reason in config.get("undefined", {}).items():
        lines.append(f"\n{name}: not defined for this set ({reason}).")
    if config.get("suite") == "rexrank":
        from himed.metrics.rexrank import rexrank_markdown

        lines += ["", rexrank_markdown(result["metrics"], config.get("undefined", {}), result.get("ci95"))]
    lines += ["", "Configuration:", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def write_metrics(
    out_dir: str | Path,
    metrics: Mapping[str, float],
    config: Mapping[str, Any],
    n: int,
    ci95: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """Write DIR/metrics.json and DIR/metrics.md; returns the JSON path. ``ci95``: left out when None."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"metrics": dict(metrics)}
    if ci95 is not None:
        result["ci95"] = {name: list(interval) for name, interval in ci95.items()}
    result.update({"config": {**config, "versions": _versions()}, "n": n})
    path = out_dir / "metrics.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out_dir / "metrics.md").write_text(metrics_markdown(result), encoding="utf-8")
    return path


def write_samples(out_dir: str | Path, samples: Sequence[Mapping[str, Any]]) -> Path:
    """Write DIR/samples.jsonl: one record per scored study (docs/evaluation.md gives the fields)."""
    path = Path(out_dir) / SAMPLES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as file:
        for sample in samples:
            file.write(json.dumps(sample, separators=(",", ":")) + "\n")
    return path


def evaluate_predictions_file(
    predictions: str | Path,
    out_dir: str | Path,
    *,
    rows: Sequence[Mapping] | None = None,
    allow_empty: bool = False,
    extra_config: Mapping[str, Any] | None = None,
    bootstrap: int = DEFAULT_RESAMPLES,
    bootstrap_seed: int = DEFAULT_SEED,
    **options: Any,
) -> dict[str, Any]:
    """Read, score and write metrics.json, metrics.md and samples.jsonl; ``rows``: dataset rows supplying
    references by id; ``bootstrap``: resamples for the 95% intervals (0: none). Returns the metrics.json dict."""
    if bootstrap < 0:
        raise ValueError(f"--bootstrap must be 0 (off) or a number of resamples, got {bootstrap}")
    lines = read_predictions(predictions, allow_empty=allow_empty, need_references=rows is None)
    if rows is not None:
        lines = attach_references(lines, rows, str(predictions))
    scored = score_samples(lines, **options)
    config = {"predictions": str(predictions), **dict(extra_config or {}), **scored.config}
    config["samples"] = SAMPLES_FILE
    ci95 = None
    if bootstrap:
        ci95, config["bootstrap"] = confidence_intervals(
            scored.samples, scored.families, resamples=bootstrap, seed=bootstrap_seed
        )
    else:
        config["bootstrap"] = {"resamples": 0}
    write_samples(out_dir, scored.samples)
    path = write_metrics(out_dir, scored.metrics, config, scored.n, ci95)
    return json.loads(path.read_text(encoding="utf-8"))
