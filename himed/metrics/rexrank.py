"""The ReXrank suite (Zhang et al. 2024, ReXrank leaderboard): BLEU-2, BERTScore, SembScore, RadGraph and RadCliQ-v1
as the leaderboard computes them, with the code of rajpurkarlab/CXR-Report-Metric (``CXRMetric/run_eval.py``).

Per report pair, then the mean over pairs (the leaderboard's columns):

- ``rexrank_bleu2``: ``fast_bleu.BLEU([reference], {"bigram": (1/2, 1/2)})`` on ``prep_reports`` tokens (lowercase,
  ``.`` -> `` .``, split on single spaces, empty tokens dropped): sentence BLEU-2 with fast_bleu's default smoothing 1
  (NLTK ``method1``: a zero bigram precision becomes 0.1 / #bigrams), 0 when no unigram matches, brevity penalty
  ``exp(1 - r / c)`` for a shorter candidate (0 for an empty one). ``bleu2`` below.
- ``bertscore``: ``bert_score.BERTScorer(model_type="distilroberta-base", lang="en", rescale_with_baseline=True,
  idf=False)`` F1 (``add_bertscore_col``; ``idf_sents`` is passed but unused with ``idf=False``): hidden states of
  layer 5 (bert-score's ``model2layers``), greedy cosine matching over all tokens, [CLS]/[SEP] weighted 0, F1
  rescaled as ``(F - b) / (1 - b)`` with distilroberta-base's layer-5 baseline (bert-score 0.3.13,
  ``rescale_baseline/en/distilroberta-base.tsv``). Texts have runs of spaces collapsed first. ``BertScorer`` below.
- ``sembscore``: cosine similarity of the CheXbert [CLS] embeddings of the two reports (``add_semb_col`` over
  ``CheXbert/src/encode.py``), with ``himed.clinical.chexbert``.
- ``rexrank_radgraph``: ``radgraph_combined`` = (entity F1 + relation F1) / 2 (``add_radgraph_col`` over
  ``radgraph_evaluate_model.py``): entities are the set of (tokens, label), relations the set of ((tokens, label),
  (tokens, label), relation type); F1 is 0 when either set is empty. Annotations come from the RadGraph bridge.
- ``radcliq_v1``: RadCliQ-v1 of each pair, ``sum_k c_k (x_k - mean_k) / scale_k + c_0`` over x = (RadGraph,
  BERTScore, SembScore, BLEU-2) with the standard scaler and linear coefficients pickled in
  ``CXRMetric/radcliq-v1.pkl`` (read out below, ``RADCLIQ_V1``; lower is better); the corpus value is the mean, and
  ``inv_radcliq_v1`` = 1 / mean, the leaderboard's ranking column.

A metric whose model is not configured (no BERTScore folder, no CheXbert, no RadGraph environment) is left out with its
reason, never written as 0; RadCliQ-v1 needs all four. Departures from the published code are listed in
``DEPARTURES`` (written into metrics.md) and docs/metrics-rexrank.md.

Why one file of ~410 lines: the suite is one published script's columns, and RadCliQ-v1 combines all four of them;
kept together, each column can be checked against ``run_eval.py`` side by side (``BertScorer`` is the largest part).
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# CXRMetric/radcliq-v1.pkl (rajpurkarlab/CXR-Report-Metric): a CompositeMetric holding a fitted
# sklearn StandardScaler (mean_, scale_) and coefs (4 weights, then the intercept), over the columns
# COLS = ["radgraph_combined", "bertscore", "semb_score", "bleu_score"] of run_eval.py; values read from the pickle.
RADCLIQ_V1 = {
    "columns": ("radgraph", "bertscore", "sembscore", "bleu2"),
    "mean": (0.5379231241355762, 0.6175725628125001, 0.7647942121140658, 0.44738335396242174),
    "scale": (0.3028258411486429, 0.22430938459304575, 0.2539439110169773, 0.2989271671041838),
    "coefs": (-0.37708368261038905, -0.37030009974480316, -0.25261621789593225, 4.315048405024756e-12),
    "intercept": 2.466552561323256e-10,
}
# bert-score 0.3.13: model2layers["distilroberta-base"] = 5, and row 5 (P, R, F) of
# bert_score/rescale_baseline/en/distilroberta-base.tsv.
BERTSCORE_LAYER = 5
BERTSCORE_BASELINE = (0.84732, 0.84759504, 0.8473319)

DEPARTURES = (
    "BERTScore is himed's implementation of bert-score 0.3.13's arithmetic (the package loads hub names non-strictly); "
    "the model is the local folder given with --bertscore-model (ReXrank: distilroberta-base).",
    "SembScore, BERTScore and RadGraph embed or annotate each text in himed's batches; values agree with the published "
    "code up to float rounding.",
    "RadGraph annotations come from the radgraph package through the bridge (--radgraph-model; ReXrank used the "
    "original RadGraph checkpoint, the package's 'radgraph' model type) instead of the DyGIE++ inference scripts.",
    "The reference text: with --rexrank-reference rexrank (the default) lines carrying findings/impression are scored "
    "against 'Findings: <findings> Impression: <impression>' as ReXrank's evaluation script writes it ('None' for a "
    "missing section); lines with only a 'reference' use it as given. RaTEScore and GREEN are computed against himed's "
    "reference text (ReXrank's scripts for those two are not published).",
    "BERTScore under transformers 5: bert-score 0.3.13 itself no longer adds the RoBERTa prefix space it asks for; "
    "himed does, as bert-score did under transformers 4 when ReXrank's numbers were computed.",
    "A pair RadGraph could not annotate is left out of rexrank_radgraph and RadCliQ-v1 (counted in config) instead of "
    "stopping the evaluation.",
)

_SPACES = re.compile(r" +")


def rexrank_tokens(text: str) -> list[str]:
    """``prep_reports``: lowercase, a space before every '.', split on single spaces, empty strings dropped."""
    return [token for token in str(text).lower().replace(".", " .").split(" ") if token != ""]


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu2(candidate: Sequence[str], reference: Sequence[str]) -> float:
    """fast_bleu's sentence BLEU-2 against one reference (module docstring), on token lists."""
    precisions = []
    for n in (1, 2):
        counts, reference_counts = _ngrams(candidate, n), _ngrams(reference, n)
        matches = sum(min(count, reference_counts[gram]) for gram, count in counts.items())
        precisions.append((matches, max(1, sum(counts.values()))))
    if precisions[0][0] == 0:
        return 0.0
    # Smoothing 1 (NLTK method1): a zero precision becomes epsilon / denominator, epsilon = 0.1.
    log_sum = sum(0.5 * math.log((m if m else 0.1) / d) for m, d in precisions)
    c, r = len(candidate), len(reference)
    penalty = 1.0 if c > r else (0.0 if c == 0 else math.exp(1 - r / c))
    return penalty * math.exp(log_sum)


def radgraph_sets(annotation: Mapping[str, Any] | None) -> tuple[set, set]:
    """(entities, relations) of one RadGraph annotation as ``parse_entity_relation`` builds them."""
    entities_by_id = (annotation or {}).get("entities", {}) or {}
    entities = {(entity["tokens"], entity["label"]) for entity in entities_by_id.values()}
    relations = set()
    for entity in entities_by_id.values():
        for relation_type, target in entity.get("relations", []):
            other = entities_by_id[str(target)]
            relations.add(((entity["tokens"], entity["label"]), (other["tokens"], other["label"]), relation_type))
    return entities, relations


def set_f1(reference: set, candidate: set) -> float:
    """``compute_f1`` of radgraph_evaluate_model.py: 0 when precision + recall is 0 (an empty side included)."""
    true_positives = len(reference & candidate)
    precision = true_positives / len(candidate) if candidate else 0.0
    recall = true_positives / len(reference) if reference else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def radgraph_combined(candidate_annotation, reference_annotation) -> float:
    """ReXrank's RadGraph: the mean of the entity F1 and the relation F1."""
    candidate_entities, candidate_relations = radgraph_sets(candidate_annotation)
    reference_entities, reference_relations = radgraph_sets(reference_annotation)
    return (set_f1(reference_entities, candidate_entities) + set_f1(reference_relations, candidate_relations)) / 2


def radcliq_v1(radgraph: float, bertscore: float, sembscore: float, bleu2_score: float) -> float:
    """RadCliQ-v1 of one pair: ``CompositeMetric.predict`` with the pickled scaler and coefficients."""
    values = (radgraph, bertscore, sembscore, bleu2_score)
    total = RADCLIQ_V1["intercept"]
    for value, mean, scale, coef in zip(values, RADCLIQ_V1["mean"], RADCLIQ_V1["scale"], RADCLIQ_V1["coefs"]):  # noqa: B905
        total += coef * (value - mean) / scale
    return total


def read_baseline(path: str | os.PathLike, layer: int) -> tuple[float, float, float]:
    """(P, R, F) of ``layer`` from a bert-score baseline TSV (``LAYER,P,R,F`` rows)."""
    rows = Path(path).expanduser().read_text(encoding="utf-8").split()
    for row in rows[1:]:
        fields = row.split(",")
        if fields[0] == str(layer):
            return float(fields[1]), float(fields[2]), float(fields[3])
    raise ValueError(f"{path}: no baseline row for layer {layer}")


class BertScorer:
    """BERTScore as bert-score 0.3.13 computes it with RadCliQ-v1's settings (module docstring), on a local model.

    ``model``: a folder with the model (distilroberta-base for ReXrank) and its tokenizer, loaded strictly (the
    masked-LM head and the pooler of a checkpoint are not used and may be absent or present). ``layer``: which
    hidden state (bert-score truncates the encoder to that many layers; hidden_states[layer] is the same tensor).
    ``baseline``: (P, R, F) for rescaling, or None for raw scores.
    """

    def __init__(
        self,
        model: str | os.PathLike | None,
        *,
        layer: int = BERTSCORE_LAYER,
        baseline: tuple[float, float, float] | None = BERTSCORE_BASELINE,
        device: str = "cpu",
        batch_size: int = 32,
    ) -> None:
        import torch
        from transformers import AutoModel, GPT2Tokenizer, RobertaTokenizer

        from himed.metrics.weights import load_model_strict, load_tokenizer_local, model_folder

        what = "BERTScore model"
        folder = model_folder(model, what=what, flag="--bertscore-model")
        self.model_path = str(folder)
        self.tokenizer = load_tokenizer_local(folder, what=what, flag="--bertscore-model")
        # bert-score encodes RoBERTa/GPT-2 inputs with add_prefix_space=True (sent_encode).
        if isinstance(self.tokenizer, (GPT2Tokenizer, RobertaTokenizer)):
            self.tokenizer = load_tokenizer_local(folder, what=what, flag="--bertscore-model", add_prefix_space=True)
        self.model = load_model_strict(
            AutoModel, folder, what=what, flag="--bertscore-model", ignorable_prefixes=("pooler.", "lm_head.")
        )
        layers = self.model.config.num_hidden_layers
        if not 0 <= layer <= layers:
            raise ValueError(f"BERTScore layer must be in 0..{layers} for {folder}, got {layer}")
        self.layer = int(layer)
        self.baseline = None if baseline is None else tuple(float(b) for b in baseline)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.batch_size = int(batch_size)

    def _ids(self, text: str) -> list[int]:
        text = text.strip()
        if not text:
            return [self.tokenizer.cls_token_id, self.tokenizer.sep_token_id]  # build_inputs_with_special_tokens([])
        return self.tokenizer.encode(
            text, add_special_tokens=True, truncation=True, max_length=self.tokenizer.model_max_length
        )

    def _embed(self, texts: Sequence[str]) -> dict[str, tuple[Any, list[int]]]:
        """Per unique text: its layer-``layer`` token embeddings (L, d) and token ids."""
        import torch

        unique = list(dict.fromkeys(texts))
        encoded = {text: self._ids(text) for text in unique}
        out = {}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for begin in range(0, len(unique), self.batch_size):
            batch = unique[begin : begin + self.batch_size]
            lengths = [len(encoded[t]) for t in batch]
            width = max(lengths)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, text in enumerate(batch):
                ids[row, : lengths[row]] = torch.tensor(encoded[text])
                mask[row, : lengths[row]] = 1
            with torch.inference_mode():
                hidden = self.model(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device), output_hidden_states=True
                ).hidden_states[self.layer]
            for row, text in enumerate(batch):
                out[text] = (hidden[row, : lengths[row]].double().cpu(), encoded[text])
        return out

    def _weights(self, ids: list[int]):
        import torch

        # idf=False: every token weighs 1 except [CLS] and [SEP] (<s>, </s>), which weigh 0.
        special = {self.tokenizer.cls_token_id, self.tokenizer.sep_token_id}
        return torch.tensor([0.0 if token in special else 1.0 for token in ids], dtype=torch.float64)

    def score(self, candidates: Sequence[str], references: Sequence[str]) -> list[tuple[float, float, float]]:
        """(P, R, F) per pair, rescaled when a baseline is set."""
        candidates = [_SPACES.sub(" ", text) for text in candidates]
        references = [_SPACES.sub(" ", text) for text in references]
        embedded = self._embed([*references, *candidates])
        out = []
        for candidate, reference in zip(candidates, references, strict=True):
            (hyp, hyp_ids), (ref, ref_ids) = embedded[candidate], embedded[reference]
            hyp = hyp / hyp.norm(dim=-1, keepdim=True)
            ref = ref / ref.norm(dim=-1, keepdim=True)
            similarity = hyp @ ref.T  # (candidate tokens, reference tokens), special tokens included
            hyp_weights, ref_weights = self._weights(hyp_ids), self._weights(ref_ids)
            if hyp_weights.sum() == 0 or ref_weights.sum() == 0:
                precision = recall = f1 = 0.0  # an empty side: bert-score sets P and R to 0, and F (NaN) to 0
            else:
                precision = float((similarity.max(dim=1).values * hyp_weights).sum() / hyp_weights.sum())
                recall = float((similarity.max(dim=0).values * ref_weights).sum() / ref_weights.sum())
                f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            values = (precision, recall, f1)
            if self.baseline is not None:
                values = tuple((v - b) / (1 - b) for v, b in zip(values, self.baseline, strict=True))
            out.append(values)
        return out

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_path, "layer": self.layer, "baseline": self.baseline, "idf": False}


@dataclass
class RexrankOptions:
    """What the suite needs; a part whose option is None is left out with its reason."""

    bertscore_model: str | None = None
    bertscore_layer: int = BERTSCORE_LAYER
    bertscore_baseline: str | None = None  # a bert-score TSV; None: distilroberta-base's layer-5 row
    chexbert: Mapping[str, Any] | None = None  # CheXbertLabeler kwargs: checkpoint, tokenizer, ...
    radgraph: Mapping[str, Any] | None = None  # get_radgraph_bridge kwargs
    device: str = "cpu"


def rexrank_reference(line: Any, reference: str, style: str) -> str:
    """ReXrank's ground-truth string for a line (``DEPARTURES``), or the reference as given."""
    if style == "rexrank" and (getattr(line, "findings", None) is not None or getattr(line, "impression", None)):
        return f"Findings: {line.findings or None} Impression: {line.impression or None}"
    return reference


def rexrank_suite(
    predictions: Sequence[str], references: Sequence[str], options: RexrankOptions
) -> tuple[dict[str, float], dict[str, list[float | None]], dict[str, Any], dict[str, str]]:
    """(corpus metrics, per-pair scores, config, undefined metric -> reason) of the ReXrank columns."""
    n = len(predictions)
    scores: dict[str, list[float | None]] = {}
    config: dict[str, Any] = {}
    undefined: dict[str, str] = {}
    scores["rexrank_bleu2"] = [
        bleu2(rexrank_tokens(p), rexrank_tokens(r)) for p, r in zip(predictions, references, strict=True)
    ]

    if options.bertscore_model:
        baseline = (
            read_baseline(options.bertscore_baseline, options.bertscore_layer)
            if options.bertscore_baseline
            else BERTSCORE_BASELINE
        )
        scorer = BertScorer(
            options.bertscore_model, layer=options.bertscore_layer, baseline=baseline, device=options.device
        )
        scores["bertscore"] = [f for _, _, f in scorer.score(predictions, references)]
        config["bertscore"] = scorer.describe()
    else:
        undefined["bertscore"] = "no --bertscore-model folder given (ReXrank: distilroberta-base)"

    if options.chexbert:
        import torch

        from himed.clinical.labelers import get_labeler

        labeler = get_labeler("chexbert", **dict(options.chexbert))
        embeddings = labeler.embed([*predictions, *references])
        similarity = torch.nn.functional.cosine_similarity(embeddings[:n].double(), embeddings[n:].double(), dim=1)
        scores["sembscore"] = [float(v) for v in similarity]
    else:
        undefined["sembscore"] = "no CheXbert given (--chexbert-checkpoint and --chexbert-tokenizer)"

    if options.radgraph:
        from himed.clinical.radgraph import get_radgraph_bridge

        bridge = get_radgraph_bridge(**dict(options.radgraph))
        texts = [text for text in dict.fromkeys([*predictions, *references]) if text.strip()]
        annotated = dict(zip(texts, bridge.annotate(texts), strict=True))
        annotated[""] = {"entities": {}}
        values: list[float | None] = []
        for prediction, reference in zip(predictions, references, strict=True):
            # An empty text has no entity (F1 0), without asking RadGraph; a failed annotation is None.
            a = annotated[prediction if prediction.strip() else ""]
            b = annotated[reference if reference.strip() else ""]
            values.append(None if a is None or b is None else radgraph_combined(a, b))
        scores["rexrank_radgraph"] = values
        config["rexrank_radgraph"] = {
            "model_type": dict(options.radgraph).get("model_type", "radgraph-xl"),
            "unscored_pairs": sum(v is None for v in values),
        }
    else:
        undefined["rexrank_radgraph"] = "no RadGraph environment given (--radgraph-python)"

    needed = ("rexrank_radgraph", "bertscore", "sembscore", "rexrank_bleu2")
    if all(name in scores for name in needed):
        rows = zip(*(scores[name] for name in needed), strict=True)
        scores["radcliq_v1"] = [None if None in row else radcliq_v1(*row) for row in rows]
    else:
        missing = [name for name in needed if name not in scores]
        undefined["radcliq_v1"] = undefined["inv_radcliq_v1"] = f"needs {', '.join(missing)}"

    metrics: dict[str, float] = {}
    for name, values in scores.items():
        scored = [v for v in values if v is not None]
        if scored:
            metrics[name] = sum(scored) / len(scored)
        else:
            undefined[name] = "no pair could be scored"
    if "radcliq_v1" in metrics:
        if metrics["radcliq_v1"] != 0:
            metrics["inv_radcliq_v1"] = 1.0 / metrics["radcliq_v1"]
        else:
            undefined["inv_radcliq_v1"] = "RadCliQ-v1 is 0"
    return metrics, scores, config, undefined


# The leaderboard's columns, in its order, with the metric each one is.
REXRANK_COLUMNS = (
    ("1/RadCliQ-v1", "inv_radcliq_v1"),
    ("RadCliQ-v1", "radcliq_v1"),
    ("BLEU-2", "rexrank_bleu2"),
    ("BERTScore", "bertscore"),
    ("SembScore", "sembscore"),
    ("RadGraph", "rexrank_radgraph"),
    ("RaTEScore", "ratescore"),
    ("GREEN", "green"),
)


def rexrank_markdown(
    metrics: Mapping[str, float], undefined: Mapping[str, str], ci95: Mapping[str, Sequence[float]] | None = None
) -> str:
    """The ReXrank table of an evaluation (metrics.md) with a row of 95% intervals when there are any, every
    left-out column with its reason, and the departures."""
    lines = ["## ReXrank", "", "| | " + " | ".join(c for c, _ in REXRANK_COLUMNS) + " |"]
    lines.append("|---|" + "---:|" * len(REXRANK_COLUMNS))
    lines.append(
        "| value | " + " | ".join(f"{metrics[m]:.4f}" if m in metrics else "-" for _, m in REXRANK_COLUMNS) + " |"
    )
    if ci95:
        shown = [f"[{ci95[m][0]:.4f}, {ci95[m][1]:.4f}]" if m in ci95 else "-" for _, m in REXRANK_COLUMNS]
        lines.append("| 95% CI | " + " | ".join(shown) + " |")
    for column, name in REXRANK_COLUMNS:
        if name not in metrics:
            lines.append(f"\n{column} ({name}): left out, {undefined.get(name, 'not configured')}.")
    lines += ["", "Where this computation departs from ReXrank's:", ""]
    lines += [f"- {departure}" for departure in DEPARTURES]
    return "\n".join(lines) + "\n"


def _register_reciprocal_mean() -> None:
    from himed.metrics.families import CORPUS_FUNCTIONS, corpus_family, mean_corpus

    if "reciprocal_mean" in CORPUS_FUNCTIONS:
        return

    @corpus_family("reciprocal_mean")
    def reciprocal_mean(samples, metrics, counts):
        """``inv_<x>`` = 1 / (the mean of the per-sample ``<x>``) on each resample: 1/RadCliQ-v1 of the leaderboard."""
        import numpy as np

        out = {}
        for name in metrics:
            base = name.removeprefix("inv_")
            means = mean_corpus(samples, [base], counts)[base]
            with np.errstate(divide="ignore", invalid="ignore"):
                out[name] = np.where(means != 0, 1.0 / means, np.nan)
        return out


_register_reciprocal_mean()
