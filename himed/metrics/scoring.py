"""Scoring validated prediction lines for ``himed evaluate``: every metric, as one flat dict.

Metrics (``himed.metrics``): NLG metrics on the R2Gen-cleaned texts (``--clean``; nlg.py); clinical efficacy on the
labels of the uncleaned section texts (labelers are built for report text as written; CheXbert is uncased, so
cleaning would only remove punctuation the rule labeler uses for scope); RadGraph F1 (simple, partial, complete;
mean over the pairs RadGraph could annotate) on the uncleaned texts when a RadGraph environment is configured
(``himed.clinical.radgraph``); severity (``himed.clinical.severity``);
``format_rate`` (strict parse succeeds), ``consistency_rate`` (strictly parsed predictions whose finding and
impression sections have no label clash, ``himed.rewards.consistency``); ``length_mean`` and
``length_mean_reference`` (tokens of the cleaned texts as the NLG scorers see them, punctuation tokens included).

Each group of metrics is a metric family (``himed.metrics.families``): its corpus values, per-sample scores and
per-sample sufficient statistics, merged into one :class:`Scored` (the samples.jsonl records and which family
recomputes each metric on a bootstrap resample). Further families (RaTEScore, GREEN, ...) plug in through
``score_samples(families=...)``: callables taking the :class:`ScoringInput` texts and returning ``FamilyResult``
objects.

A metric that is undefined for the evaluated set (a correlation over a constant, consistency without any parsable
prediction) is left out of the metrics and its reason recorded in ``config.undefined``; it is never written as 0.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from himed.data.sections import DEFAULT_SECTIONS, parse_strict, validate_sections
from himed.metrics.families import FamilyResult
from himed.metrics.predictions import PredictionLine, section_pairs

logger = logging.getLogger(__name__)

CLEAN_CHOICES = ("mimic_cxr", "iu_xray", "none")


def _run_in_thread(function, *args, **kwargs) -> tuple[threading.Thread, dict]:
    """Start ``function`` in a thread; the dict gets ``result`` or ``error``. The NLG metrics run this way so the
    METEOR jar (a separate process) works while this process labels reports."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = function(*args, **kwargs)
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


@dataclass
class ScoringInput:
    """The texts of the kept lines, as every metric family receives them (one entry per scored study)."""

    lines: list[PredictionLine]
    predictions: list[str]  # the section texts as written (labelers, RadGraph, severity)
    references: list[str]
    cleaned_predictions: list[str]  # R2Gen-cleaned (--clean) texts (NLG metrics)
    cleaned_references: list[str]


# An additional metric family: called with the texts, returns its FamilyResult(s). ``score_samples(families=...)``
# runs each one after the built-in metrics; this is where metrics such as RaTEScore or GREEN plug in.
FamilyScorer = Callable[[ScoringInput], "FamilyResult | Sequence[FamilyResult]"]


@dataclass
class Scored:
    """Everything an evaluation computed: the corpus metrics, the per-sample records and how to resample them."""

    metrics: dict[str, float]
    config: dict[str, Any]
    n: int
    samples: list[dict[str, Any]]  # the samples.jsonl records, in the order of the kept lines
    families: dict[str, list[str]]  # family -> the metric names its corpus function recomputes


def _collect(results: Sequence[FamilyResult], kept: Sequence[PredictionLine]) -> tuple[dict, list, dict, dict, dict]:
    """Merge family results: (metrics, samples, families, config entries, undefined)."""
    n = len(kept)
    metrics: dict[str, float] = {}
    families: dict[str, list[str]] = {}
    config: dict[str, Any] = {}
    undefined: dict[str, str] = {}
    samples = [{"id": line.id, "line": line.line, "scores": {}, "stats": {}} for line in kept]
    for result in results:
        for name, value in result.metrics.items():
            if name in metrics:
                raise ValueError(f"metric {name!r} is computed by two metric families")
            metrics[name] = value
        families.setdefault(result.family, []).extend(result.metrics)
        for name, values in result.scores.items():
            if len(values) != n:
                raise ValueError(f"{result.family}: {len(values)} per-sample {name!r} scores for {n} studies")
            for sample, value in zip(samples, values, strict=True):
                sample["scores"][name] = None if value is None else float(value)
        if result.stats is not None:
            if len(result.stats) != n:
                raise ValueError(f"{result.family}: {len(result.stats)} per-sample statistics for {n} studies")
            if result.family in samples[0]["stats"]:
                raise ValueError(f"two metric families write statistics under {result.family!r}")
            for sample, stats in zip(samples, result.stats, strict=True):
                sample["stats"][result.family] = stats
        config.update(result.config)
        undefined.update(result.undefined)
    return metrics, samples, families, config, undefined


def score_lines(lines: Sequence[PredictionLine], **options: Any) -> tuple[dict[str, float], dict[str, Any], int]:
    """All metrics for validated lines: (metrics, config, n scored pairs); ``options`` as :func:`score_samples`."""
    scored = score_samples(lines, **options)
    return scored.metrics, scored.config, scored.n


def score_samples(
    lines: Sequence[PredictionLine],
    *,
    clean: str = "mimic_cxr",
    section: str = "report",
    sections: Sequence[str] = DEFAULT_SECTIONS,
    labeler: str = "rules",
    labeler_kwargs: Mapping[str, Any] | None = None,
    uncertain: str = "positive",
    meteor: str = "auto",
    radgraph: Mapping[str, Any] | None = None,
    families: Sequence[FamilyScorer] = (),
) -> Scored:
    """All metrics for validated lines, with their per-sample records. See the module docstring.

    ``radgraph``: keyword arguments of ``himed.clinical.radgraph.get_radgraph_bridge`` (``python``, ``model_type``,
    ``model_cache_dir``, ...); RadGraph F1 is computed only when it is given. ``families``: additional metric
    families (:data:`FamilyScorer`), scored after the built-in ones.
    """
    from himed.clinical.labelers import get_labeler
    from himed.clinical.severity import severity_metrics, severity_scores
    from himed.data.normalize import clean_report
    from himed.metrics.clinical_efficacy import clinical_efficacy_family
    from himed.metrics.nlg import coco_text, nlg_families
    from himed.rewards.consistency import OBSERVATION_SETS, count_clashes

    if clean not in CLEAN_CHOICES:
        raise ValueError(f"unknown cleaning {clean!r}; choose one of {', '.join(CLEAN_CHOICES)}")
    sections = validate_sections(sections)
    kept, predictions, references, excluded = section_pairs(lines, section, sections)
    n = len(kept)
    cleaned_predictions = [clean_report(text, style=clean) for text in predictions]
    cleaned_references = [clean_report(text, style=clean) for text in references]
    nlg_thread, nlg_box = _run_in_thread(nlg_families, cleaned_predictions, cleaned_references, meteor=meteor)
    radgraph_thread = radgraph_box = None
    if radgraph is not None:
        from himed.clinical.radgraph import get_radgraph_bridge

        # RadGraph reads report text as written (like the labelers), in its own process, alongside the rest.
        bridge = get_radgraph_bridge(**dict(radgraph))
        radgraph_thread, radgraph_box = _run_in_thread(bridge.f1, predictions, references)

    results: list[FamilyResult] = []
    undefined: dict[str, str] = {}
    labeler_object = get_labeler(labeler, **dict(labeler_kwargs or {}))
    parsed = [parse_strict(line.prediction, sections) for line in kept]
    has_impression = [p is not None and "impression" in p for p in parsed]
    with_impression = [p for p, has in zip(parsed, has_impression, strict=True) if has]
    labels = labeler_object.label(
        [
            *predictions,
            *references,
            *(p["finding"] for p in with_impression),
            *(p["impression"] for p in with_impression),
        ]
    )
    predicted_labels, reference_labels = labels[:n], labels[n : 2 * n]
    results.append(clinical_efficacy_family(predicted_labels, reference_labels, uncertain=uncertain))

    severity = severity_metrics(predictions, references)
    # Per-sample severity with the IDF and min-max scaling fitted on the whole set (as the point estimates are);
    # the bootstrap keeps them fixed (docs/evaluation.md).
    per_sample_severity = severity_scores([*predictions, *references])
    severity_means = {name: severity[name] for name in ("severity_mean", "severity_mean_reference")}
    results.append(
        FamilyResult(
            "mean",
            severity_means,
            scores={
                "severity_mean": per_sample_severity[:n].tolist(),
                "severity_mean_reference": per_sample_severity[n:].tolist(),
            },
        )
    )
    correlations = {name: severity[name] for name in ("severity_pearson", "severity_spearman") if name in severity}
    for name in ("severity_pearson", "severity_spearman"):
        if name not in severity:
            undefined[name] = "the predictions' or the references' severity is constant"
    results.append(FamilyResult("correlation", correlations))

    format_valid = [float(p is not None) for p in parsed]
    results.append(FamilyResult("mean", {"format_rate": sum(format_valid) / n}, scores={"format_rate": format_valid}))
    if with_impression:
        finding_labels = labels[2 * n : 2 * n + len(with_impression)]
        impression_labels = labels[2 * n + len(with_impression) :]
        clash_free = iter(
            float(count_clashes(f, i, OBSERVATION_SETS["all"])[0] == 0)
            for f, i in zip(finding_labels, impression_labels, strict=True)
        )
        consistent = [next(clash_free) if has else None for has in has_impression]
        rate = sum(c for c in consistent if c is not None) / len(with_impression)
        results.append(FamilyResult("mean", {"consistency_rate": rate}, scores={"consistency_rate": consistent}))
    else:
        undefined["consistency_rate"] = (
            "no prediction has both sections in the strict format"
            if "impression" in sections
            else "the completion sections have no impression"
        )
    lengths = {
        "length_mean": [float(len(coco_text(t).split())) for t in cleaned_predictions],
        "length_mean_reference": [float(len(coco_text(t).split())) for t in cleaned_references],
    }
    results.append(
        FamilyResult("mean", {name: float(np.mean(values)) for name, values in lengths.items()}, scores=lengths)
    )

    nlg_thread.join()
    if "error" in nlg_box:
        raise nlg_box["error"]
    nlg_results, nlg_info = nlg_box["result"]
    results = [*nlg_results, *results]
    radgraph_info: dict[str, Any] = {}
    if radgraph_thread is not None:
        radgraph_thread.join()
        if "error" in radgraph_box:
            raise radgraph_box["error"]
        mean, per_pair = radgraph_box["result"]
        unscored = sum(score is None for score in per_pair)
        if unscored == len(per_pair):
            undefined["radgraph_f1"] = "RadGraph could not annotate any pair"
        else:
            levels = ("simple", "partial", "complete")
            results.append(
                FamilyResult(
                    "mean",
                    {f"radgraph_f1_{level}": float(getattr(mean, level)) for level in levels},
                    scores={
                        f"radgraph_f1_{level}": [None if s is None else getattr(s, level) for s in per_pair]
                        for level in levels
                    },
                )
            )
        radgraph_info = {
            "radgraph": {"model_type": dict(radgraph).get("model_type", "radgraph-xl"), "unscored_pairs": unscored}
        }
    if families:
        texts = ScoringInput(list(kept), list(predictions), list(references), cleaned_predictions, cleaned_references)
        for scorer in families:
            extra = scorer(texts)
            results.extend([extra] if isinstance(extra, FamilyResult) else extra)

    metrics, samples, family_metrics, family_config, family_undefined = _collect(results, kept)
    undefined.update(family_undefined)
    config: dict[str, Any] = {
        "clean": clean,
        "section": section,
        "sections": list(sections),
        "labeler": labeler,
        "uncertain": uncertain,
        **nlg_info,
        **radgraph_info,
        **family_config,
        "format_valid": sum(p is not None for p in parsed),
        "consistency_scored": len(with_impression),
        "metric_families": family_metrics,
    }
    if section != "report":
        config["section_missing"] = sum(p is None for p in parsed)
    if excluded:
        config["excluded"] = {"count": len(excluded), "lines": excluded[:100]}
        logger.warning("%d lines have no reference %s and are left out", len(excluded), section)
    if undefined:
        config["undefined"] = undefined
    return Scored(metrics, config, n, samples, family_metrics)
