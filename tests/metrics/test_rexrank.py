"""The ReXrank suite: BLEU-2, RadGraph, RadCliQ-v1 arithmetic against the published code and leaderboard, and
BERTScore / SembScore on tiny random-weight models in the published layouts."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from himed.metrics.rexrank import (
    BERTSCORE_BASELINE,
    BertScorer,
    RexrankOptions,
    bleu2,
    radcliq_v1,
    radgraph_combined,
    rexrank_markdown,
    rexrank_reference,
    rexrank_suite,
    rexrank_tokens,
)
from himed.metrics.weights import MetricWeightsError
from tests.metrics import text_models


def test_prep_reports_tokens():
    # CXR-Report-Metric's prep_reports splits on single spaces only: a line break stays inside a token.
    assert rexrank_tokens("No effusion.\nHeart OK.") == ["no", "effusion", ".\nheart", "ok", "."]
    assert rexrank_tokens("  Heart  size. ") == ["heart", "size", "."]


def test_bleu2_by_hand_and_against_nltk_method1():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    candidate, reference = rexrank_tokens("Heart size is normal."), rexrank_tokens("The heart size is normal.")
    # 5/5 unigrams, 4/4 bigrams match; the candidate is one token short: BP = exp(1 - 6/5).
    assert bleu2(candidate, reference) == pytest.approx(math.exp(1 - 6 / 5))
    assert bleu2([], reference) == 0.0
    assert bleu2(["x"], reference) == 0.0  # no unigram match
    # One unigram match, no bigram: smoothing 1 gives the bigram precision 0.1 / 1.
    assert bleu2(["heart"], reference) == pytest.approx(math.exp(1 - 6) * math.sqrt(1.0 * 0.1))
    smooth = SmoothingFunction().method1
    pairs = [
        ("no pleural effusion . heart size is normal .", "heart size is normal . no effusion or pneumothorax ."),
        ("mild cardiomegaly with small left effusion", "the heart is mildly enlarged . small left pleural effusion ."),
        ("lungs clear", "the lungs are clear . no acute process ."),
        ("stable stable stable", "stable ."),
    ]
    for candidate, reference in pairs:
        expected = sentence_bleu([reference.split()], candidate.split(), weights=(0.5, 0.5), smoothing_function=smooth)
        assert bleu2(candidate.split(), reference.split()) == pytest.approx(expected)


def test_radgraph_combined_is_the_mean_of_entity_and_relation_f1():
    def annotation(entities):
        return {"entities": {str(i + 1): e for i, e in enumerate(entities)}}

    effusion = {"tokens": "effusion", "label": "OBS-DP", "relations": [["located_at", "2"]]}
    pleural = {"tokens": "pleural", "label": "ANAT-DP", "relations": []}
    reference = annotation([effusion, pleural])
    # Same entities, no relation: entity F1 1, relation F1 0.
    candidate = annotation([{**effusion, "relations": []}, pleural])
    assert radgraph_combined(candidate, reference) == pytest.approx(0.5)
    assert radgraph_combined(reference, reference) == 1.0
    # One of two entities, its label differs: entity F1 = 0.
    assert radgraph_combined(annotation([{**pleural, "label": "OBS-DP"}]), reference) == 0.0
    assert radgraph_combined({"entities": {}}, {"entities": {}}) == 0.0  # compute_f1: empty sets give 0


@pytest.mark.parametrize(
    ("radgraph", "bertscore", "sembscore", "bleu", "published"),
    [
        # rajpurkarlab/ReXrank results/result_mimic-cxr.csv: RadGraph, BertScore, SembScore, BLEU -> RadCliQ-v1.
        (0.146, 0.304, 0.331, 0.094, 1.437),  # CheXagent
        (0.168, 0.308, 0.365, 0.128, 1.369),  # CheXpertPlus-mimic
        (0.273, 0.430, 0.315, 0.193, 1.088),  # MedVersa
    ],
)
def test_radcliq_v1_reproduces_the_leaderboard(radgraph, bertscore, sembscore, bleu, published):
    # The leaderboard's inputs are rounded to 3 decimals, hence the tolerance.
    assert radcliq_v1(radgraph, bertscore, sembscore, bleu) == pytest.approx(published, abs=2e-3)


def test_rexrank_reference_string():
    from himed.metrics.predictions import PredictionLine

    line = PredictionLine(1, "a", "pred", "Clear. Normal.", "Clear.", "Normal.")
    assert rexrank_reference(line, "Clear. Normal.", "rexrank") == "Findings: Clear. Impression: Normal."
    no_impression = PredictionLine(1, "a", "pred", "Clear.", "Clear.", None)
    assert rexrank_reference(no_impression, "Clear.", "rexrank") == "Findings: Clear. Impression: None"
    assert rexrank_reference(PredictionLine(1, "a", "p", "Ref."), "Ref.", "rexrank") == "Ref."
    assert rexrank_reference(line, "Clear. Normal.", "himed") == "Clear. Normal."


@pytest.fixture(scope="module")
def roberta(tmp_path_factory):
    return text_models.roberta_folder(tmp_path_factory.mktemp("distilroberta"))


def _naive_bertscore(scorer, candidate, reference):
    """bert-score's greedy matching written as loops over tokens (weights 0 for <s> and </s>)."""

    def embed(text):
        ids = scorer._ids(text)
        with torch.no_grad():
            hidden = scorer.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[5][0]
        return [h / h.norm() for h in hidden.double()], ids

    (hyp, hyp_ids), (ref, ref_ids) = embed(candidate), embed(reference)
    special = {scorer.tokenizer.cls_token_id, scorer.tokenizer.sep_token_id}
    p_terms = [max(float(h @ r) for r in ref) for h, i in zip(hyp, hyp_ids, strict=True) if i not in special]
    r_terms = [max(float(r @ h) for h in hyp) for r, i in zip(ref, ref_ids, strict=True) if i not in special]
    p, r = sum(p_terms) / len(p_terms), sum(r_terms) / len(r_terms)
    return 2 * p * r / (p + r)


def test_bertscore_on_a_distilroberta_layout(roberta):
    scorer = BertScorer(roberta)
    assert scorer.layer == 5 and scorer.baseline == BERTSCORE_BASELINE
    # add_prefix_space=True, as bert-score encodes RoBERTa inputs: the first word is 'Ġheart', not 'heart'.
    assert scorer.tokenizer.convert_ids_to_tokens(scorer._ids("heart size"))[1] == "Ġheart"
    candidates = ["heart size is normal", "no  effusion", "", "mild cardiomegaly . the lungs are clear"]
    references = ["heart size is normal", "the lungs are clear", "clear", "no pneumothorax"]
    scores = scorer.score(candidates, references)
    b_p, b_r, b_f = BERTSCORE_BASELINE
    assert scores[0] == pytest.approx((1.0, 1.0, 1.0))
    # An empty candidate: raw P, R, F are 0, rescaled to (0 - b) / (1 - b).
    assert scores[2] == pytest.approx((-b_p / (1 - b_p), -b_r / (1 - b_r), -b_f / (1 - b_f)))
    raw = BertScorer(roberta, baseline=None)
    for index in (1, 3):
        # Runs of spaces are collapsed first (ReXrank's re.sub(r' +', ' ', ...)).
        candidate = " ".join(candidates[index].split())
        expected = _naive_bertscore(raw, candidate, references[index])
        assert raw.score([candidates[index]], [references[index]])[0][2] == pytest.approx(expected, abs=1e-9)
        assert scores[index][2] == pytest.approx((expected - b_f) / (1 - b_f), abs=1e-9)


def test_bertscore_rejects_a_wrong_checkpoint(roberta, tmp_path):
    broken = text_models.roberta_folder(tmp_path / "broken")
    key = text_models.rename_weight(broken, "roberta.encoder.layer.1.", "roberta.encoder.layers.1.")
    with pytest.raises(MetricWeightsError, match="--bertscore-model") as caught:
        BertScorer(broken)
    assert key.removeprefix("roberta.") in str(caught.value) or key in str(caught.value)


def test_bertscore_matches_the_bert_score_package(roberta, tmp_path, monkeypatch):
    """The published package on the same tiny model, where it is installed (it is not a himed dependency)."""
    bert_score = pytest.importorskip("bert_score")
    from transformers import AutoTokenizer

    # Under transformers 5 bert-score's encode(..., add_prefix_space=True) no longer adds the prefix space;
    # give it the tokenizer it had under transformers 4, when ReXrank computed its numbers.
    monkeypatch.setattr(
        bert_score.scorer, "get_tokenizer", lambda model_type, use_fast=False: AutoTokenizer.from_pretrained(
            model_type, add_prefix_space=True)
    )  # fmt: skip
    baseline = tmp_path / "baseline.tsv"
    baseline.write_text("LAYER,P,R,F\n" + "\n".join(f"{i},0.8,0.81,0.805" for i in range(7)) + "\n")
    candidates = ["heart size is normal", "no effusion", "mild cardiomegaly . the lungs are clear", "pleural effusion"]
    references = ["heart size is normal", "the lungs are clear", "no pneumothorax", "small left pleural effusion"]
    published = bert_score.BERTScorer(
        model_type=str(roberta), num_layers=5, lang="en", rescale_with_baseline=True, baseline_path=str(baseline),
        device="cpu",
    )  # fmt: skip
    precision, _, f1 = published.score(candidates, references)
    ours = BertScorer(roberta, baseline=(0.8, 0.81, 0.805)).score(candidates, references)
    assert [p for p, _, _ in ours] == pytest.approx([float(x) for x in precision], abs=1e-5)
    assert [f for _, _, f in ours] == pytest.approx([float(x) for x in f1], abs=1e-5)


@pytest.fixture(scope="module")
def chexbert(tmp_path_factory):
    from himed.clinical.chexbert import CheXbert, read_config

    folder = tmp_path_factory.mktemp("chexbert")
    words = sorted(set(text_models.WORDS))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = {"vocab_size": len(vocab), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64, "max_position_embeddings": 512}  # fmt: skip
    torch.manual_seed(0)
    model = CheXbert(read_config(config))
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    torch.save({"model_state_dict": state}, folder / "chexbert.pth")
    return {"checkpoint": str(folder / "chexbert.pth"), "tokenizer": str(folder), "config": config}


def test_sembscore_is_the_cosine_of_chexbert_cls_embeddings(chexbert):
    from himed.clinical.labelers import get_labeler

    labeler = get_labeler("chexbert", **chexbert)
    texts = ["no pleural effusion", "mild cardiomegaly", "no pleural   effusion"]
    embeddings = labeler.embed(texts)
    assert embeddings.shape == (3, 32)
    encoded = labeler._encode(texts[:1])
    with torch.no_grad():
        direct = labeler.model.bert(**encoded).last_hidden_state[0, 0]
    assert torch.allclose(embeddings[0], direct, atol=1e-6)
    assert torch.allclose(embeddings[0], embeddings[2], atol=1e-6)  # whitespace collapsed as CheXbert does
    metrics, scores, _, _ = rexrank_suite(texts[:2], [texts[2], texts[0]], RexrankOptions(chexbert=chexbert))
    cosine = torch.nn.functional.cosine_similarity(embeddings[1:2].double(), embeddings[0:1].double()).item()
    assert scores["sembscore"] == pytest.approx([1.0, cosine], abs=1e-6)
    assert metrics["sembscore"] == pytest.approx((1.0 + cosine) / 2, abs=1e-6)


# The stand-in radgraph package environment of the radgraph reward's tests (every word an entity, no relations).
_reward_tests = importlib.util.spec_from_file_location(
    "radgraph_reward_tests", Path(__file__).resolve().parents[1] / "rewards" / "test_radgraph_reward.py"
)
_reward_module = importlib.util.module_from_spec(_reward_tests)
_reward_tests.loader.exec_module(_reward_module)
fake_radgraph = _reward_module.fake_radgraph


def test_full_suite_and_its_table(roberta, chexbert, fake_radgraph, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(fake_radgraph / "site"))
    radgraph = {"python": sys.executable, "model_cache_dir": str(fake_radgraph / "cache"), "timeout": 60}
    options = RexrankOptions(bertscore_model=str(roberta), chexbert=chexbert, radgraph=radgraph)
    predictions = ["no pleural effusion .", "mild cardiomegaly", ""]
    references = ["no pleural effusion .", "the heart size is normal", "clear lungs"]
    metrics, scores, config, undefined = rexrank_suite(predictions, references, options)
    assert not undefined
    # The stand-in RadGraph makes every word an entity without relations: RadGraph = entity F1 / 2.
    assert scores["rexrank_radgraph"] == pytest.approx([0.5, 0.0, 0.0])
    for i in range(3):
        row = [scores[name][i] for name in ("rexrank_radgraph", "bertscore", "sembscore", "rexrank_bleu2")]
        assert scores["radcliq_v1"][i] == pytest.approx(radcliq_v1(*row))
    assert metrics["radcliq_v1"] == pytest.approx(sum(scores["radcliq_v1"]) / 3)
    assert metrics["inv_radcliq_v1"] == pytest.approx(1 / metrics["radcliq_v1"])
    table = rexrank_markdown(metrics, undefined, {"bertscore": [0.1, 0.2]})
    assert "| | 1/RadCliQ-v1 | RadCliQ-v1 | BLEU-2 | BERTScore | SembScore | RadGraph | RaTEScore | GREEN |" in table
    assert f"| value | {metrics['inv_radcliq_v1']:.4f} |" in table
    assert "| 95% CI | - | - | - | [0.1000, 0.2000] | - |" in table
    assert "RaTEScore (ratescore): left out" in table and "departs from ReXrank" in table


def test_missing_models_are_left_out_with_reasons_never_zero():
    metrics, scores, config, undefined = rexrank_suite(["a b"], ["a b"], RexrankOptions())
    assert metrics == {"rexrank_bleu2": 1.0}
    assert set(undefined) == {"bertscore", "sembscore", "rexrank_radgraph", "radcliq_v1", "inv_radcliq_v1"}
    assert "--bertscore-model" in undefined["bertscore"] and "needs" in undefined["radcliq_v1"]


def test_inverse_radcliq_is_resampled_as_one_over_the_mean():
    import numpy as np

    from himed.metrics.families import CORPUS_FUNCTIONS

    samples = [{"scores": {"radcliq_v1": value}} for value in (0.5, 1.0, None, 2.0)]
    counts = np.array([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 1.0, 1.0], [0.0, 0.0, 4.0, 0.0]])
    values = CORPUS_FUNCTIONS["reciprocal_mean"](samples, ["inv_radcliq_v1"], counts)["inv_radcliq_v1"]
    # Unscored samples are left out of the mean; a resample with no scored sample is NaN (undefined), not 0.
    assert values[0] == pytest.approx(1 / ((0.5 + 1.0 + 2.0) / 3))
    assert values[1] == pytest.approx(1 / ((0.5 * 2 + 2.0) / 3))
    assert np.isnan(values[2])
