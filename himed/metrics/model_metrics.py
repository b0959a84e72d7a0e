"""The model-based metrics of ``himed evaluate``: RaTEScore, GREEN and the ReXrank suite (``--suite rexrank``).

Each family lives in its own module (``himed.metrics.ratescore``, ``himed.verifiers.green``,
``himed.metrics.rexrank``) and returns corpus values and per-sample scores; this module decides which ones run from
the command line, and hands them to the evaluation as metric families (``model_metric_families``, the ``families``
argument of ``himed.metrics.scoring.score_samples``), so their per-sample scores reach samples.jsonl and the
bootstrap intervals.

- RaTEScore runs when both ``--ratescore-ner`` and ``--ratescore-embedding`` are given; GREEN when ``--green-base-url``
  and ``--green-model`` are. Both score the texts as written (no R2Gen cleaning), like the labelers.
- ``--suite rexrank`` adds ReXrank's columns (BLEU-2, BERTScore, SembScore, RadGraph, RadCliQ-v1, 1/RadCliQ-v1) and
  the ReXrank table in metrics.md (with RaTEScore and GREEN). Its model-based parts use ``--bertscore-model``,
  ``--chexbert-checkpoint``/``--chexbert-tokenizer`` and ``--radgraph-python``; a part whose model is not given is
  left out with its reason in ``config.undefined``, never written as 0. ReXrank's columns are computed against
  ReXrank's reference string (``--rexrank-reference``; ``himed.metrics.rexrank.rexrank_reference``).

See docs/metrics-rexrank.md for every metric, its source, its weights and its departures from the published code.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SUITES = ("default", "rexrank")
REFERENCE_STYLES = ("rexrank", "himed")


@dataclass
class ModelMetricOptions:
    """Which model-based metrics an evaluation computes, and their models."""

    suite: str = field(default="default", metadata={"help": "default, or rexrank: ReXrank's columns and table"})
    ratescore: dict[str, Any] | None = field(
        default=None, metadata={"help": "RaTEScorer kwargs (ner_model, embedding_model, affinity, device)"}
    )
    green: dict[str, Any] | None = field(default=None, metadata={"help": "GreenJudge kwargs (base_url, model, ...)"})
    rexrank: Any = field(default=None, metadata={"help": "himed.metrics.rexrank.RexrankOptions for --suite rexrank"})
    rexrank_reference: str = field(
        default="rexrank", metadata={"help": "rexrank: 'Findings: ... Impression: ...' references; himed: as given"}
    )

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise ValueError(f"unknown suite {self.suite!r}; choose one of {', '.join(SUITES)}")
        if self.rexrank_reference not in REFERENCE_STYLES:
            raise ValueError(f"--rexrank-reference must be one of {', '.join(REFERENCE_STYLES)}")


def score_model_metrics(lines: Sequence[Any], predictions: Sequence[str], references: Sequence[str],
                        options: ModelMetricOptions) -> list[Any]:  # fmt: skip
    """One ``FamilyResult`` per configured family (``himed.metrics.families``): corpus values, per-sample scores
    (written to samples.jsonl and resampled by the bootstrap), config entries, and left-out metrics with reasons.

    Every corpus value here is the mean of its per-sample score (family ``mean``; None where a sample could not be
    scored), except ``inv_radcliq_v1`` = 1 / mean RadCliQ-v1 (family ``reciprocal_mean``, ``himed.metrics.rexrank``).
    """
    from himed.metrics.families import FamilyResult

    results: list[FamilyResult] = []
    undefined: dict[str, str] = {}
    predictions, references = list(predictions), list(references)
    if options.ratescore is not None:
        from himed.metrics.ratescore import ratescore

        corpus, per_sample, info = ratescore(predictions, references, **options.ratescore)
        results.append(FamilyResult("mean", corpus, {"ratescore": per_sample}, config={"ratescore": info}))
    elif options.suite == "rexrank":
        undefined["ratescore"] = "no --ratescore-ner and --ratescore-embedding model folders given"
    if options.green is not None:
        from himed.verifiers.green import ERROR_NAMES, green

        corpus, analyses, info = green(predictions, references, **options.green)
        scores: dict[str, list[float | None]] = {"green": [None if a is None else a.score for a in analyses]}
        for position, name in enumerate(ERROR_NAMES):
            scores[f"green_errors_{name}"] = [None if a is None else float(a.significant[position]) for a in analyses]
        missing = {} if "green" in corpus else {"green": "the GREEN judge could not score any pair"}
        results.append(FamilyResult("mean", corpus, scores, config={"green": info}, undefined=missing))
    elif options.suite == "rexrank":
        undefined["green"] = "no --green-base-url and --green-model given"
    if options.suite == "rexrank":
        from himed.metrics.rexrank import RexrankOptions, rexrank_reference, rexrank_suite

        rexrank_references = [
            rexrank_reference(line, reference, options.rexrank_reference)
            for line, reference in zip(lines, references, strict=True)
        ]
        corpus, per_sample, info, missing = rexrank_suite(
            predictions, rexrank_references, options.rexrank or RexrankOptions()
        )
        changed = sum(a != b for a, b in zip(rexrank_references, references, strict=True))
        info = {"rexrank": {**info, "reference": options.rexrank_reference, "references_rewritten": changed}}
        means = {name: value for name, value in corpus.items() if name != "inv_radcliq_v1"}
        results.append(FamilyResult("mean", means, per_sample, config={**info, "suite": "rexrank"}, undefined=missing))
        if "inv_radcliq_v1" in corpus:
            results.append(FamilyResult("reciprocal_mean", {"inv_radcliq_v1": corpus["inv_radcliq_v1"]}))
    if undefined:
        results.append(FamilyResult("mean", {}, undefined=undefined))
    return results


def model_metric_families(options: ModelMetricOptions | None) -> list[Any]:
    """The ``families`` argument of ``himed.metrics.scoring.score_samples`` for these options (empty for None)."""
    if options is None:
        return []

    def model_metrics(texts) -> list[Any]:
        # Model-based metrics read the texts as written (like the labelers), not the R2Gen-cleaned ones.
        return score_model_metrics(texts.lines, texts.predictions, texts.references, options)

    return [model_metrics]


def add_model_metric_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``himed evaluate`` flags of this module (module docstring)."""
    group = parser.add_argument_group("model-based metrics (RaTEScore, GREEN, ReXrank; docs/metrics-rexrank.md)")
    group.add_argument("--suite", default="default", choices=SUITES, help="rexrank: add ReXrank's columns and table")
    group.add_argument("--ratescore-ner", help="local RaTE-NER model folder (Angelakeke/RaTE-NER-Deberta)")
    group.add_argument("--ratescore-embedding", help="local entity embedding folder (FremyCompany/BioLORD-2023-C)")
    group.add_argument("--ratescore-affinity", default="long", help="RaTEScore affinity matrix: long, short or a JSON")
    group.add_argument("--green-base-url", help="OpenAI-compatible server of the GREEN model, e.g. http://HOST:PORT/v1")
    group.add_argument("--green-model", help="model name the GREEN server serves (StanfordAIMI/GREEN-RadLlama2-7b)")
    group.add_argument("--green-concurrency", type=int, default=16, help="GREEN requests in flight (default 16)")
    group.add_argument("--green-api-key-env", default="OPENAI_API_KEY", help="environment variable of the API key")
    group.add_argument("--bertscore-model", help="local BERTScore model folder (ReXrank: distilroberta-base)")
    group.add_argument("--bertscore-baseline", help="bert-score baseline TSV (default: distilroberta-base layer 5)")
    group.add_argument(
        "--rexrank-reference", default="rexrank", choices=REFERENCE_STYLES,
        help="reference text of ReXrank's columns: rexrank ('Findings: ... Impression: ...', as its script) or himed",
    )  # fmt: skip
    group.add_argument("--metrics-device", default="cpu", help="device of the metric models (cpu, cuda, ...)")


def model_metric_options(
    args: argparse.Namespace, chexbert: Mapping[str, Any] | None, radgraph: Mapping[str, Any] | None
) -> ModelMetricOptions | None:
    """Options from the parsed flags (None when no model-based metric is asked for)."""
    from himed.metrics.rexrank import RexrankOptions

    ratescore = green = None
    if args.ratescore_ner or args.ratescore_embedding:
        ratescore = {
            "ner_model": args.ratescore_ner,
            "embedding_model": args.ratescore_embedding,
            "affinity": args.ratescore_affinity,
            "device": args.metrics_device,
        }
    if args.green_base_url or args.green_model:
        if not (args.green_base_url and args.green_model):
            raise ValueError("GREEN needs both --green-base-url and --green-model")
        green = {
            "base_url": args.green_base_url,
            "model": args.green_model,
            "concurrency": args.green_concurrency,
            "api_key_env": args.green_api_key_env,
        }
    if args.suite == "default":
        given = [flag for flag, value in (("--bertscore-model", args.bertscore_model),
                                          ("--bertscore-baseline", args.bertscore_baseline)) if value]  # fmt: skip
        if given:
            raise ValueError(f"{', '.join(given)} belong to the ReXrank suite: add --suite rexrank")
        if ratescore is None and green is None:
            return None
    rexrank = RexrankOptions(
        bertscore_model=args.bertscore_model,
        bertscore_baseline=args.bertscore_baseline,
        chexbert=dict(chexbert) if chexbert else None,  # the labeler's own kwargs: one CheXbert for CE and SembScore
        radgraph=dict(radgraph) if radgraph else None,
        device=args.metrics_device,
    )
    return ModelMetricOptions(
        suite=args.suite, ratescore=ratescore, green=green, rexrank=rexrank, rexrank_reference=args.rexrank_reference
    )
