"""The metric models at their published sizes (random weights): strict loading and scoring work at full size.

Slow (builds and saves ~1.6 GB of random weights): ``pytest -m slow tests/metrics/test_published_sizes.py``.
"""

import importlib.util
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

_spec = importlib.util.spec_from_file_location("text_models", Path(__file__).with_name("text_models.py"))
text_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(text_models)

PAIRS = [
    ("No pleural effusion. Heart size is normal.", "Heart size is normal. No effusion or pneumothorax."),
    ("Mild cardiomegaly with small left effusion.", "The heart is mildly enlarged. Small left pleural effusion."),
] * 10


def test_ratescore_at_published_size(tmp_path):
    import torch
    from transformers import DebertaV2Config, DebertaV2ForTokenClassification, MPNetConfig, MPNetModel

    from himed.metrics.ratescore import RATE_LABELS, RaTEScorer

    torch.manual_seed(0)
    ner, embedding = tmp_path / "ner", tmp_path / "biolord"
    text_models.wordpiece_tokenizer(ner)
    text_models.wordpiece_tokenizer(embedding)
    # microsoft/deberta-v3-base's config (RaTE-NER-Deberta is a fine-tuned deberta-v3-base, 735 MB of float32).
    DebertaV2ForTokenClassification(
        DebertaV2Config(
            vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            max_position_embeddings=512, relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm",
            share_att_key=True, pos_att_type=["p2c", "c2p"], layer_norm_eps=1e-7, position_biased_input=False,
            type_vocab_size=0, id2label=dict(enumerate(RATE_LABELS)),
            label2id={label: i for i, label in enumerate(RATE_LABELS)},
        )
    ).save_pretrained(ner)  # fmt: skip
    # BioLORD-2023-C is an MPNet of all-mpnet-base-v2's shape.
    MPNetModel(
        MPNetConfig(vocab_size=30527, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, max_position_embeddings=514)
    ).save_pretrained(embedding)  # fmt: skip
    started = time.perf_counter()
    scorer = RaTEScorer(ner, embedding)
    loaded = time.perf_counter()
    scores = scorer.score([c for c, _ in PAIRS], [r for _, r in PAIRS])
    done = time.perf_counter()
    print(f"RaTEScore published size: load {loaded - started:.1f} s, {len(PAIRS)} pairs {done - loaded:.1f} s")
    assert len(scores) == len(PAIRS) and all(0.0 <= s <= 1.0 + 1e-9 for s in scores)


def test_bertscore_at_published_size(tmp_path):
    import torch
    from transformers import RobertaConfig, RobertaForMaskedLM

    from himed.metrics.rexrank import BertScorer

    torch.manual_seed(0)
    folder = text_models.roberta_folder(tmp_path / "distilroberta", layers=1)
    # distilroberta-base's shape: 6 layers of 768, vocabulary 50265 (our tiny tokenizer's ids are a subset).
    config = RobertaConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=6, num_attention_heads=12,
                           intermediate_size=3072, max_position_embeddings=514, pad_token_id=1)  # fmt: skip
    RobertaForMaskedLM(config).save_pretrained(folder)
    started = time.perf_counter()
    scorer = BertScorer(folder)
    scores = scorer.score([c for c, _ in PAIRS], [r for _, r in PAIRS])
    print(f"BERTScore published size: {len(PAIRS)} pairs {time.perf_counter() - started:.1f} s")
    assert len(scores) == len(PAIRS) and scores[0][2] < 1.0
