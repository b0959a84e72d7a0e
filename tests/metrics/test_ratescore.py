"""RaTEScore: the package's arithmetic pinned on hand-made entities, its entity decoding, and strict local loading."""

import math

import pytest
import torch

from himed.metrics.ratescore import (
    AFFINITY_LONG,
    Affinity,
    RaTEScorer,
    decode_entities,
    pair_score,
    split_sentences,
)
from himed.metrics.weights import MetricWeightsError
from tests.metrics import text_models


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ratescore_models")
    # Every token B-DISEASE followed by B-DISEASE: each token is its own DISEASE entity (deterministic decoding).
    ner = text_models.rate_ner_folder(root / "ner", force_label="B-DISEASE")
    embedding = text_models.mpnet_folder(root / "biolord")
    return ner, embedding


def test_pair_score_matches_a_hand_computation_with_negation():
    affinity = Affinity.named("long")
    # Reference: "effusion" (DISEASE) and "lung" (ANATOMY); candidate: "no effusion" (NON-DISEASE) and an anatomy.
    reference = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    candidate = torch.tensor(
        [[2.0, 0.0], [0.6, 0.8]], dtype=torch.float64
    )  # not unit length: cosine similarity normalises
    reference_types = ["DISEASE", "ANATOMY"]
    candidate_types = ["NON-DISEASE", "ANATOMY"]
    # By hand: reference -> candidate, "effusion" best matches "no effusion" (cosine 1), a DISEASE/NON-DISEASE
    # negation clash (weight disease_non-disease, times neg_weight); "lung" best matches the anatomy (cosine 0.8).
    w_dn, w_nd, w_aa, neg = 0.3789136708096537, 0.10073046076318157, 0.2856134859160784, 0.8716553966489615
    p = (1.0 * w_dn * neg + 0.8 * w_aa) / (w_dn + w_aa)
    # candidate -> reference: "no effusion" -> "effusion" (non-disease_disease, negation), anatomy -> "lung" (0.8).
    r = (1.0 * w_nd * neg + 0.8 * w_aa) / (w_nd + w_aa)
    expected = 2 * p * r / (p + r)
    got = pair_score(candidate, candidate_types, reference, reference_types, affinity)
    assert got == pytest.approx(expected, abs=1e-12)
    # Without the negation the same geometry scores higher: the clash is what costs.
    same_polarity = pair_score(candidate, ["DISEASE", "ANATOMY"], reference, reference_types, affinity)
    assert same_polarity > got


def test_pair_score_edge_cases():
    affinity = Affinity.named("long")
    one = torch.tensor([[1.0, 0.0]])
    assert pair_score(torch.zeros(0, 2), [], one, ["DISEASE"], affinity) == 0.5
    assert pair_score(one, ["DISEASE"], torch.zeros(0, 2), [], affinity) == 0.5
    # Orthogonal entities: both directions 0, so the harmonic mean is 0 (not NaN).
    assert pair_score(one, ["DISEASE"], torch.tensor([[0.0, 1.0]]), ["DISEASE"], affinity) == 0.0
    # Identical entities of one type: 1.
    assert pair_score(one, ["ANATOMY"], one, ["ANATOMY"], affinity) == pytest.approx(1.0)


def test_affinity_matrices_and_files(tmp_path):
    long = Affinity.named("long")
    assert long.weights[("NON-DISEASE", "DISEASE")] == AFFINITY_LONG["non-disease_disease"]
    assert long.negation == AFFINITY_LONG["neg_weight"]
    assert Affinity.named("short").negation == pytest.approx(0.3611577852354489)
    path = tmp_path / "matrix.json"
    path.write_text('{"disease_disease": 1.0}')
    with pytest.raises(ValueError, match="neg_weight"):
        Affinity.named(path)


def test_decode_entities_follows_the_package_post_process():
    tokens = ["[CLS]", "no", "pleural", "effusion", "heart", "[SEP]"]
    labels = ["O", "B-NON-DISEASE", "I-NON-DISEASE", "I-NON-DISEASE", "B-ANATOMY", "O"]
    assert decode_entities(tokens, labels) == [(1, 3, "NON-DISEASE"), (4, 4, "ANATOMY")]
    # An entity still open at the end runs to the token before [SEP].
    assert decode_entities(["[CLS]", "a", "b", "[SEP]"], ["O", "B-DISEASE", "I-DISEASE", "I-DISEASE"]) == [
        (1, 2, "DISEASE")
    ]
    # The package's quirk: after a B- B- pair `end` stays set, so a final open span is dropped.
    tokens = ["[CLS]", "a", "b", "c", "[SEP]"]
    assert decode_entities(tokens, ["O", "B-ANATOMY", "B-DISEASE", "I-DISEASE", "I-DISEASE"]) == [(1, 1, "ANATOMY")]


def test_split_sentences():
    assert split_sentences("No effusion. Heart is normal!\nLungs clear") == ["No effusion.", "Heart is normal!",
                                                                             "Lungs clear"]  # fmt: skip
    assert split_sentences("A.\nLungs clear.") == ["Lungs clear."]  # pieces under 3 characters are dropped
    assert split_sentences("") == []


def test_scorer_on_random_weights_in_the_published_layouts(folders, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ner, embedding = folders
    scorer = RaTEScorer(ner, embedding)
    entities = scorer.entities(["No pleural effusion.", ""])
    assert entities == [[("no", "DISEASE"), ("pleural", "DISEASE"), ("effusion", "DISEASE"), (".", "DISEASE")], []]
    text = "No pleural effusion. Heart size is normal."
    scores = scorer.score([text, "mild cardiomegaly", ""], [text, "the lungs are clear", "small effusion"])
    assert scores[0] == pytest.approx(1.0)  # identical reports
    assert 0.0 <= scores[1] <= 1.0 + 1e-9 and scores[1] != pytest.approx(1.0, abs=1e-12)
    assert scores[2] == 0.5  # an empty candidate has no entity
    # The per-pair value is the package's formula on the scorer's own entities and embeddings.
    cand, ref = scorer.entities(["mild cardiomegaly"])[0], scorer.entities(["the lungs are clear"])[0]
    expected = pair_score(
        scorer.embed([t for t, _ in cand]), [k for _, k in cand], scorer.embed([t for t, _ in ref]),
        [k for _, k in ref], scorer.affinity,
    )  # fmt: skip
    assert scores[1] == pytest.approx(expected, rel=1e-5)
    assert math.isfinite(scores[1])


def test_wrong_or_missing_weights_are_errors_naming_them(folders, tmp_path):
    ner, embedding = folders
    broken = tmp_path / "ner_broken"
    text_models.rate_ner_folder(broken, force_label="B-DISEASE")
    key = text_models.rename_weight(broken, "deberta.encoder.layer.0.", "deberta.encoder.block.0.")
    with pytest.raises(MetricWeightsError, match="missing keys") as caught:
        RaTEScorer(broken, embedding)
    assert key in str(caught.value) and "--ratescore-ner" in str(caught.value)
    with pytest.raises(MetricWeightsError, match="--ratescore-embedding"):
        RaTEScorer(ner, tmp_path / "does_not_exist")
    with pytest.raises(MetricWeightsError, match="needs a local model folder"):
        RaTEScorer(None, embedding)


def test_ner_model_with_other_labels_is_rejected(folders, tmp_path):
    import json

    _, embedding = folders
    other = tmp_path / "ner_other"
    text_models.rate_ner_folder(other)
    config = json.loads((other / "config.json").read_text())
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(11)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(11)}
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(MetricWeightsError, match="not RaTE-NER"):
        RaTEScorer(other, embedding)


def test_ratescore_reward(folders, monkeypatch):
    from himed.rewards.registry import build_reward

    ner, embedding = folders
    reward, info = build_reward("ratescore", {"ner_model": str(ner), "embedding_model": str(embedding)})
    assert info.level == "high"
    completions = ["<think>x</think><finding>No pleural effusion.</finding><impression>Normal.</impression>", ""]
    references = ["No pleural effusion. Normal.", "No pleural effusion."]
    values = reward(completions, reference=references)
    assert values[0] == pytest.approx(1.0)
    assert values[1] == 0.5
    monkeypatch.delenv("HIMED_RATESCORE_NER", raising=False)
    with pytest.raises(ValueError, match="ner_model"):
        build_reward("ratescore", {"embedding_model": str(embedding)})
