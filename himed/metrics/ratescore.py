"""RaTEScore (Zhao et al. 2024, "RaTEScore: A Metric for Radiology Report Generation"), ported from its package.

Variant implemented: the published ``RaTEScore`` package (PyPI ``ratescore`` 0.6.0, github MAGIC-AI4Med/RaTEScore,
files ``RaTEScore/scorer.py``, ``score.py``, ``utils.py``), step by step:

1. Sentence split, then NER on every sentence with the RaTE-NER model (DeBERTa-v3 token classification over the IOB
   labels ``RATE_LABELS``: ABNORMALITY, NON-ABNORMALITY, DISEASE, NON-DISEASE, ANATOMY); the entity spans are decoded
   from the argmax labels exactly as the package's ``post_process`` does (``decode_entities``, quirks included), and
   a report's entities are those of all its sentences.
2. Each entity string is embedded as the [CLS] last hidden state of the embedding model (BioLORD-2023-C, an MPNet;
   at most 30 tokens), not BioLORD's sentence-transformers mean pooling: that is what the package does.
3. ``directional_score`` (the package's ``compute``): for each entity of one side, the most cosine-similar entity of
   the other side; its similarity is weighted by the affinity matrix entry of the two types and multiplied by the
   negation weight when one is a negated type and the other a positive one (NON-DISEASE vs DISEASE, ...); the score
   is ``sum(sim * w * neg) / sum(w)``.
4. Per report: ``2 P R / (P + R)`` with ``P = directional(reference -> candidate)`` and ``R = directional(candidate
   -> reference)`` (the package calls them precision and recall in that order; F is symmetric anyway); 0.5 when
   either report has no entity; 0 when P + R = 0. The corpus value is the mean over reports.

Affinity matrices: the package's ``DEFAULT_MATRIX_LONG`` (the default, also ``affinity_matrix/long_weight.json`` in
the repository) and ``DEFAULT_MATRIX_SHORT``, copied below; or a JSON file with the same keys.

Where it departs from the package (docs/metrics-rexrank.md lists these too):

- Sentence splitting: the package uses medspacy's PyRuSH rules; medspacy (spaCy, a compiled PyRuSH) is not a himed
  dependency, so ``split_sentences`` splits after ``.``/``!``/``?`` followed by whitespace and at line breaks, and
  drops pieces with fewer than 3 characters as the package does. Sentence boundaries only change the context the NER
  model sees within a report.
- An empty report gets an empty entity list (score 0.5 as the package defines); the package drops its sentences and
  thereby misaligns every later report of the batch.
- Weights load strictly from local folders (``himed.metrics.weights``); the package calls ``from_pretrained`` on hub
  names, which downloads and silently initialises missing keys at random. Entity embeddings are computed in batches
  over the unique entity strings of the whole call (the same values up to float rounding from padding).

The published package itself cannot be used here: it imports medspacy at import time, loads models non-strictly, and
defaults to CUDA.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from himed.data.jsonl import read_json

RATE_LABELS = (
    "B-ABNORMALITY",
    "I-ABNORMALITY",
    "B-NON-ABNORMALITY",
    "I-NON-ABNORMALITY",
    "B-DISEASE",
    "I-DISEASE",
    "B-NON-DISEASE",
    "I-NON-DISEASE",
    "B-ANATOMY",
    "I-ANATOMY",
    "O",
)
ENTITY_TYPES = ("ABNORMALITY", "NON-ABNORMALITY", "DISEASE", "NON-DISEASE", "ANATOMY")
# RaTEScore/utils.py compute(): type pairs (reference side, candidate side) whose match is a negation clash.
NEGATION_PAIRS = frozenset(
    {
        ("NON-DISEASE", "DISEASE"),
        ("NON-ABNORMALITY", "ABNORMALITY"),
        ("DISEASE", "NON-DISEASE"),
        ("ABNORMALITY", "NON-ABNORMALITY"),
        ("NON-DISEASE", "ABNORMALITY"),
        ("NON-ABNORMALITY", "DISEASE"),
        ("DISEASE", "NON-ABNORMALITY"),
        ("ABNORMALITY", "NON-DISEASE"),
    }
)
# RaTEScore/scorer.py DEFAULT_MATRIX_LONG (= affinity_matrix/long_weight.json), the package's default.
AFFINITY_LONG = {
    "abnormality_abnormality": 0.4276119164393705, "abnormality_anatomy": 0.6240929990607657,
    "abnormality_disease": 0.0034478181112993847, "abnormality_non-abnormality": 0.5431049700217344,
    "abnormality_non-disease": 0.27005425386213877, "anatomy_abnormality": 0.7487824274337533,
    "anatomy_anatomy": 0.2856134859160784, "anatomy_disease": 0.4592143222158069,
    "anatomy_non-abnormality": 0.02097055139911715, "anatomy_non-disease": 0.00013736314126696204,
    "disease_abnormality": 0.8396510075734789, "disease_anatomy": 0.9950209388542061,
    "disease_disease": 0.8460555030578727, "disease_non-abnormality": 0.9820689020512646,
    "disease_non-disease": 0.3789136708096537, "non-abnormality_abnormality": 0.16546764653692908,
    "non-abnormality_anatomy": 0.018670610691852826, "non-abnormality_disease": 0.719397354576018,
    "non-abnormality_non-abnormality": 0.0009357166071730684, "non-abnormality_non-disease": 0.0927333564267591,
    "non-disease_abnormality": 0.7759420231214385, "non-disease_anatomy": 0.1839139293714062,
    "non-disease_disease": 0.10073046076318157, "non-disease_non-abnormality": 0.03860183811876373,
    "non-disease_non-disease": 0.34065681486566446, "neg_weight": 0.8716553966489615,
}  # fmt: skip
# RaTEScore/scorer.py DEFAULT_MATRIX_SHORT.
AFFINITY_SHORT = {
    "abnormality_abnormality": 0.4070293318365468, "abnormality_anatomy": 0.6952639610605605,
    "abnormality_disease": 0.28342529466226446, "abnormality_non-abnormality": 0.9479148658006686,
    "abnormality_non-disease": 0.23875064111146294, "anatomy_abnormality": 0.5829759950441763,
    "anatomy_anatomy": 0.7709590751917746, "anatomy_disease": 0.0006059634829551632,
    "anatomy_non-abnormality": 0.794672584951181, "anatomy_non-disease": 0.27982942400798977,
    "disease_abnormality": 0.8840397619834857, "disease_anatomy": 0.9637659445696822,
    "disease_disease": 0.19018958438059513, "disease_non-abnormality": 0.6962283914800402,
    "disease_non-disease": 0.943727057946997, "non-abnormality_abnormality": 0.1712744286898638,
    "non-abnormality_anatomy": 0.4485149671497294, "non-abnormality_disease": 0.00045065329822896076,
    "non-abnormality_non-abnormality": 0.0007887930317199857, "non-abnormality_non-disease": 0.8555432840895761,
    "non-disease_abnormality": 0.9555801066212176, "non-disease_anatomy": 0.13122106162635216,
    "non-disease_disease": 0.6072996585919443, "non-disease_non-abnormality": 0.05650711141169969,
    "non-disease_non-disease": 0.3214769399791204, "neg_weight": 0.3611577852354489,
}  # fmt: skip
# The score of a pair in which either report has no entity (RaTEScore/scorer.py compute_score).
EMPTY_SCORE = 0.5
NER_MAX_TOKENS = 512
ENTITY_MAX_TOKENS = 30
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")

Entity = tuple[str, str]  # (entity text, entity type)


@dataclass(frozen=True)
class Affinity:
    """The type-pair weights and the negation weight of one affinity matrix."""

    weights: Mapping[tuple[str, str], float]
    negation: float

    @classmethod
    def from_mapping(cls, matrix: Mapping[str, float], source: str = "affinity matrix") -> Affinity:
        """From the package's ``{"disease_non-disease": w, ..., "neg_weight": w}`` form (keys lowercased types)."""
        weights: dict[tuple[str, str], float] = {}
        for key, value in matrix.items():
            if key == "neg_weight":
                continue
            first, _, second = key.partition("_")
            weights[(first.upper(), second.upper())] = float(value)
        expected = {(a, b) for a in ENTITY_TYPES for b in ENTITY_TYPES}
        missing = sorted(f"{a.lower()}_{b.lower()}" for a, b in expected - set(weights))
        unknown = sorted(f"{a.lower()}_{b.lower()}" for a, b in set(weights) - expected)
        if missing or unknown or "neg_weight" not in matrix:
            raise ValueError(
                f"{source}: needs the 25 keys type_type over {', '.join(t.lower() for t in ENTITY_TYPES)} and "
                f"neg_weight; missing {missing + ([] if 'neg_weight' in matrix else ['neg_weight'])}, unknown {unknown}"
            )
        return cls(weights, float(matrix["neg_weight"]))

    @classmethod
    def named(cls, name: str | os.PathLike) -> Affinity:
        """``long`` (the package's default), ``short``, or the path of a JSON file in the same form."""
        if str(name).lower() == "long":
            return cls.from_mapping(AFFINITY_LONG, "long")
        if str(name).lower() == "short":
            return cls.from_mapping(AFFINITY_SHORT, "short")
        path = Path(name).expanduser()
        if not path.is_file():
            raise ValueError(f"affinity matrix must be 'long', 'short' or a JSON file; {path} does not exist")
        return cls.from_mapping(read_json(path), str(path))


def split_sentences(text: str) -> list[str]:
    """Sentences of a report (module docstring: our stand-in for PyRuSH), without pieces under 3 characters."""
    pieces = [piece.strip() for piece in _SENTENCE_END.split(text or "")]
    return [piece for piece in pieces if piece.split() and len(piece) >= 3]


def decode_entities(tokens: Sequence[str], labels: Sequence[str]) -> list[tuple[int, int, str]]:
    """Entity spans ``(start, end, type)`` (token indices, inclusive) from IOB labels: the package's ``post_process``.

    Reproduced with its quirks: an entity is closed only when the next label starts with ``B-`` or ``O`` (an ``I-``
    after ``O`` continues nothing and starts nothing), an I- span takes the type of the B- that opened it, and an
    entity still open at the end runs to the token before the final [SEP]. ``labels`` holds one label per token.
    """
    spans: list[tuple[int, int, str]] = []
    start = end = None
    entity_type = None
    for i, (token, label) in enumerate(zip(tokens, labels[: len(tokens)], strict=False)):  # as post_process
        if token in ("[CLS]", "[SEP]"):
            continue
        if label == "O" or i >= len(labels) - 1:
            continue
        following = labels[i + 1]
        if label.startswith("B-") and following.startswith("I-"):
            start, entity_type = i, label[2:]
        elif label.startswith("B-") and following.startswith("B-"):
            start = end = i
            spans.append((start, end, label[2:]))
            start, entity_type = i, label[2:]
        elif label.startswith("B-") and following.startswith("O"):
            start = end = i
            spans.append((start, end, label[2:]))
            start = end = entity_type = None
        elif label.startswith("I-") and following.startswith("B-"):
            end = i
            if start is not None:
                spans.append((start, end, entity_type))
            start, entity_type = i, label[2:]
        elif label.startswith("I-") and following.startswith("O"):
            end = i
            if start is not None:
                spans.append((start, end, entity_type))
            start = end = entity_type = None
    if start is not None and end is None:
        spans.append((start, len(tokens) - 2, entity_type))
    return spans


def directional_score(
    source_embeddings, target_embeddings, source_types: Sequence[str], target_types: Sequence[str], affinity: Affinity
) -> float:
    """The package's ``compute(gt, pred, ...)``: weighted best-match similarity of every source entity (eq. in the
    module docstring, step 3). Embeddings are (n, d) tensors; neither side may be empty."""
    import torch.nn.functional as F

    source = F.normalize(source_embeddings.double(), p=2, dim=1)
    target = F.normalize(target_embeddings.double(), p=2, dim=1)
    best_values, best_indices = (source @ target.T).max(dim=1)
    total = weight_sum = 0.0
    for value, index, source_type in zip(best_values.tolist(), best_indices.tolist(), source_types, strict=True):
        pair = (source_type, target_types[index])
        weight = affinity.weights[pair]
        negation = affinity.negation if pair in NEGATION_PAIRS else 1.0
        total += value * weight * negation
        weight_sum += weight
    return total / weight_sum if weight_sum != 0 else 0.0


def pair_score(candidate_embeddings, candidate_types, reference_embeddings, reference_types, affinity) -> float:
    """RaTEScore of one report pair from its entities' embeddings and types (module docstring, step 4)."""
    if len(candidate_types) == 0 or len(reference_types) == 0:
        return EMPTY_SCORE
    precision = directional_score(
        reference_embeddings, candidate_embeddings, reference_types, candidate_types, affinity
    )
    recall = directional_score(candidate_embeddings, reference_embeddings, candidate_types, reference_types, affinity)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


class RaTEScorer:
    """The RaTE NER model and the entity embedding model, loaded once from local folders; ``score`` per pair.

    ``ner_model``: a folder like Angelakeke/RaTE-NER-Deberta (config.json whose ``id2label`` is ``RATE_LABELS``,
    weights, tokenizer); ``embedding_model``: a folder like FremyCompany/BioLORD-2023-C (its transformers part:
    config.json, weights, tokenizer). Both load strictly and never download (``himed.metrics.weights``).
    """

    def __init__(
        self,
        ner_model: str | os.PathLike | None,
        embedding_model: str | os.PathLike | None,
        *,
        affinity: str | os.PathLike = "long",
        device: str = "cpu",
        batch_size: int = 16,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoModelForTokenClassification

        from himed.metrics.weights import MetricWeightsError, load_model_strict, load_tokenizer_local

        if batch_size < 1:
            raise ValueError(f"RaTEScore batch_size must be >= 1, got {batch_size}")
        self.affinity_name = str(affinity)
        self.affinity = Affinity.named(affinity)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        what = "RaTEScore NER model"
        self.ner_tokenizer = load_tokenizer_local(ner_model, what=what, flag="--ratescore-ner")
        self.ner = load_model_strict(AutoModelForTokenClassification, ner_model, what=what, flag="--ratescore-ner")
        id2label = {int(k): v for k, v in self.ner.config.id2label.items()}
        if sorted(id2label.values()) != sorted(RATE_LABELS):
            raise MetricWeightsError(
                f"{what}: --ratescore-ner {ner_model} labels are {sorted(id2label.values())}, not RaTE-NER's "
                f"{list(RATE_LABELS)}"
            )
        self.id2label = id2label
        what = "RaTEScore embedding model"
        self.embedding_tokenizer = load_tokenizer_local(embedding_model, what=what, flag="--ratescore-embedding")
        # The pooler is never used (the [CLS] hidden state is): it may be absent from or extra in the checkpoint.
        self.embedder = load_model_strict(
            AutoModel, embedding_model, what=what, flag="--ratescore-embedding", ignorable_prefixes=("pooler.",)
        )
        self.ner.to(self.device)
        self.embedder.to(self.device)
        self.ner_model, self.embedding_model = str(ner_model), str(embedding_model)

    def entities(self, texts: Sequence[str]) -> list[list[Entity]]:
        """(entity text, type) of every report, sentence by sentence (module docstring, step 1)."""
        import torch

        sentences, owners = [], []
        for index, text in enumerate(texts):
            for sentence in split_sentences(text):
                sentences.append(sentence)
                owners.append(index)
        out: list[list[Entity]] = [[] for _ in texts]
        tokenizer = self.ner_tokenizer
        for begin in range(0, len(sentences), self.batch_size):
            batch = sentences[begin : begin + self.batch_size]
            encoded = tokenizer(batch, max_length=NER_MAX_TOKENS, truncation=True, padding=True, return_tensors="pt")
            with torch.inference_mode():
                logits = self.ner(**{k: v.to(self.device) for k, v in encoded.items()}).logits
            predicted = logits.argmax(dim=2).tolist()
            for row, sentence_index in enumerate(range(begin, begin + len(batch))):
                length = int(encoded["attention_mask"][row].sum())
                ids = encoded["input_ids"][row][:length].tolist()
                tokens = tokenizer.convert_ids_to_tokens(ids)
                labels = [self.id2label[label] for label in predicted[row][:length]]
                for start, end, entity_type in decode_entities(tokens, labels):
                    text = tokenizer.convert_tokens_to_string(tokens[start : end + 1])
                    out[owners[sentence_index]].append((text, entity_type))
        return out

    def embed(self, strings: Sequence[str]):
        """[CLS] last hidden state of each string (module docstring, step 2), as a (n, d) float tensor on CPU."""
        import torch

        rows = []
        for begin in range(0, len(strings), self.batch_size):
            batch = list(strings[begin : begin + self.batch_size])
            encoded = self.embedding_tokenizer(
                batch, truncation=True, padding=True, max_length=ENTITY_MAX_TOKENS, return_tensors="pt"
            )
            with torch.inference_mode():
                hidden = self.embedder(**{k: v.to(self.device) for k, v in encoded.items()}).last_hidden_state
            rows.append(hidden[:, 0, :].float().cpu())
        return torch.cat(rows) if rows else torch.zeros(0, 0)

    def score(self, candidates: Sequence[str], references: Sequence[str]) -> list[float]:
        """RaTEScore of each (candidate, reference) pair."""
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates but {len(references)} references")
        candidate_entities = self.entities(candidates)
        reference_entities = self.entities(references)
        unique = list(dict.fromkeys(text for report in candidate_entities + reference_entities for text, _ in report))
        embeddings = self.embed(unique)
        row = {text: index for index, text in enumerate(unique)}

        def stack(report: list[Entity]):
            return embeddings[[row[text] for text, _ in report]], [entity_type for _, entity_type in report]

        scores = []
        for candidate, reference in zip(candidate_entities, reference_entities, strict=True):
            candidate_embeddings, candidate_types = stack(candidate)
            reference_embeddings, reference_types = stack(reference)
            scores.append(
                pair_score(candidate_embeddings, candidate_types, reference_embeddings, reference_types, self.affinity)
            )
        return scores

    def describe(self) -> dict[str, Any]:
        return {
            "ratescore_ner": self.ner_model,
            "ratescore_embedding": self.embedding_model,
            "ratescore_affinity": self.affinity_name,
        }


_SCORERS: dict[tuple[Any, ...], RaTEScorer] = {}


def get_ratescorer(ner_model, embedding_model, **kwargs: Any) -> RaTEScorer:
    """One scorer per configuration and process, so a reward and an evaluation load the models once."""
    key = (str(ner_model), str(embedding_model), tuple(sorted(kwargs.items())))
    if key not in _SCORERS:
        _SCORERS[key] = RaTEScorer(ner_model, embedding_model, **kwargs)
    return _SCORERS[key]


def ratescore(
    predictions: Sequence[str], references: Sequence[str], **scorer_options: Any
) -> tuple[dict[str, float], list[float], dict[str, Any]]:
    """Corpus RaTEScore (the mean over pairs), the per-pair scores, and what to record in ``config``.

    ``scorer_options``: ``ner_model``, ``embedding_model`` and the other ``RaTEScorer`` arguments.
    """
    options = dict(scorer_options)
    scorer = get_ratescorer(options.pop("ner_model", None), options.pop("embedding_model", None), **options)
    scores = scorer.score(list(predictions), list(references))
    corpus = {"ratescore": sum(scores) / len(scores)} if scores else {}
    return corpus, scores, scorer.describe()
