"""Scoring validated prediction lines for ``himed evaluate``: every metric, as one flat dict.

Metrics (``himed.metrics``): NLG metrics on the R2Gen-cleaned texts (``--clean``; nlg.py); clinical efficacy on the
labels of the uncleaned section texts (labelers are built for report text as written; CheXbert is uncased, so
cleaning would only remove punctuation the rule labeler uses for scope); RadGraph F1 (simple, partial, complete;
mean over the pairs RadGraph could annotate) on the uncleaned texts when a RadGraph environment is configured
(``himed.clinical.radgraph``); severity (``himed.clinical.severity``);
``format_rate`` (strict parse succeeds), ``consistency_rate`` (strictly parsed predictions whose finding and
impression sections have no label clash, ``himed.rewards.consistency``); ``length_mean`` and
``length_mean_reference`` (tokens of the cleaned texts as the NLG scorers see them, punctuation tokens included).

A metric that is undefined for the evaluated set (a correlation over a constant, consistency without any parsable
prediction) is left out of the metrics and its reason recorded in ``config.undefined``; it is never written as 0.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from himed.data.sections import DEFAULT_SECTIONS, parse_strict, validate_sections
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


def score_lines(
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
) -> tuple[dict[str, float], dict[str, Any], int]:
    """All metrics for validated lines: (metrics, config, n scored pairs). See the module docstring.

    ``radgraph``: keyword arguments of ``himed.clinical.radgraph.get_radgraph_bridge`` (``python``, ``model_type``,
    ``model_cache_dir``, ...); RadGraph F1 is computed only when it is given.
    """
    from himed.clinical.labelers import get_labeler
    from himed.clinical.severity import severity_metrics
    from himed.data.normalize import clean_report
    from himed.metrics.clinical_efficacy import clinical_efficacy
    from himed.metrics.nlg import coco_text, nlg_metrics
    from himed.rewards.consistency import OBSERVATION_SETS, count_clashes

    if clean not in CLEAN_CHOICES:
        raise ValueError(f"unknown cleaning {clean!r}; choose one of {', '.join(CLEAN_CHOICES)}")
    sections = validate_sections(sections)
    kept, predictions, references, excluded = section_pairs(lines, section, sections)
    n = len(kept)
    cleaned_predictions = [clean_report(text, style=clean) for text in predictions]
    cleaned_references = [clean_report(text, style=clean) for text in references]
    nlg_thread, nlg_box = _run_in_thread(nlg_metrics, cleaned_predictions, cleaned_references, meteor=meteor)
    radgraph_thread = radgraph_box = None
    if radgraph is not None:
        from himed.clinical.radgraph import get_radgraph_bridge

        # RadGraph reads report text as written (like the labelers), in its own process, alongside the rest.
        bridge = get_radgraph_bridge(**dict(radgraph))
        radgraph_thread, radgraph_box = _run_in_thread(bridge.f1, predictions, references)

    metrics: dict[str, float] = {}
    undefined: dict[str, str] = {}
    labeler_object = get_labeler(labeler, **dict(labeler_kwargs or {}))
    parsed = [parse_strict(line.prediction, sections) for line in kept]
    with_impression = [p for p in parsed if p is not None and "impression" in p]
    labels = labeler_object.label(
        [
            *predictions,
            *references,
            *(p["finding"] for p in with_impression),
            *(p["impression"] for p in with_impression),
        ]
    )
    predicted_labels, reference_labels = labels[:n], labels[n : 2 * n]
    metrics.update(clinical_efficacy(predicted_labels, reference_labels, uncertain=uncertain))

    severity = severity_metrics(predictions, references)
    metrics.update(severity)
    for name in ("severity_pearson", "severity_spearman"):
        if name not in severity:
            undefined[name] = "the predictions' or the references' severity is constant"

    metrics["format_rate"] = sum(p is not None for p in parsed) / n
    if with_impression:
        finding_labels = labels[2 * n : 2 * n + len(with_impression)]
        impression_labels = labels[2 * n + len(with_impression) :]
        consistent = sum(
            count_clashes(f, i, OBSERVATION_SETS["all"])[0] == 0
            for f, i in zip(finding_labels, impression_labels, strict=True)
        )
        metrics["consistency_rate"] = consistent / len(with_impression)
    else:
        undefined["consistency_rate"] = (
            "no prediction has both sections in the strict format"
            if "impression" in sections
            else "the completion sections have no impression"
        )
    metrics["length_mean"] = float(np.mean([len(coco_text(t).split()) for t in cleaned_predictions]))
    metrics["length_mean_reference"] = float(np.mean([len(coco_text(t).split()) for t in cleaned_references]))

    nlg_thread.join()
    if "error" in nlg_box:
        raise nlg_box["error"]
    nlg_values, nlg_info = nlg_box["result"]
    metrics = {**nlg_values, **metrics}
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
            for level in ("simple", "partial", "complete"):
                metrics[f"radgraph_f1_{level}"] = float(getattr(mean, level))
        radgraph_info = {
            "radgraph": {"model_type": dict(radgraph).get("model_type", "radgraph-xl"), "unscored_pairs": unscored}
        }

    config: dict[str, Any] = {
        "clean": clean,
        "section": section,
        "sections": list(sections),
        "labeler": labeler,
        "uncertain": uncertain,
        **nlg_info,
        **radgraph_info,
        "format_valid": sum(p is not None for p in parsed),
        "consistency_scored": len(with_impression),
    }
    if section != "report":
        config["section_missing"] = sum(p is None for p in parsed)
    if excluded:
        config["excluded"] = {"count": len(excluded), "lines": excluded[:100]}
        logger.warning("%d lines have no reference %s and are left out", len(excluded), section)
    if undefined:
        config["undefined"] = undefined
    return metrics, config, n
