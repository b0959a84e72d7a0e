"""Tiny random-weight text models in the published layouts of the metric models, for tests (not a test module).

- ``rate_ner_folder``: a DeBERTa-v2/v3 token classifier (``DebertaV2ForTokenClassification``, the architecture of
  Angelakeke/RaTE-NER-Deberta) with RaTE-NER's 11 IOB labels;
- ``mpnet_folder``: an ``MPNetModel`` (the architecture of FremyCompany/BioLORD-2023-C);
- ``roberta_folder``: a ``RobertaModel`` with a byte-level BPE tokenizer (distilroberta-base's layout, BERTScore).

Each is saved with ``save_pretrained`` next to a WordPiece (or byte-level BPE) tokenizer over a small radiology
vocabulary, so the code under test loads it exactly as it loads the user's real folder. Load with
``importlib`` (the test suite runs with ``--import-mode=importlib``).
"""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "no pleural effusion pneumothorax heart size is normal mild cardiomegaly the lungs are clear there "
    "left right lower lobe opacity consolidation edema small stable unchanged with of and in a . ,"
).split()


# The tiny shape every test model shares (the architectures are the published ones, the sizes are not).
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def wordpiece_tokenizer(folder: Path):
    """A lowercase WordPiece tokenizer ([CLS] text [SEP]) over ``WORDS``, saved in ``folder``."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: index for index, token in enumerate(specials + sorted(set(WORDS)))}
    backend = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    backend.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


def rate_ner_folder(folder: Path, *, force_label: str | None = None, seed: int = 0) -> Path:
    """A tiny RaTE-NER-shaped DeBERTa token classifier; ``force_label`` makes every token that label (zero classifier
    weights, a bias on that label) so entity decoding is deterministic."""
    import torch
    from transformers import DebertaV2Config, DebertaV2ForTokenClassification

    from himed.metrics.ratescore import RATE_LABELS

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = wordpiece_tokenizer(folder)
    config = DebertaV2Config(
        **TINY,
        vocab_size=len(tokenizer),
        max_position_embeddings=128,
        relative_attention=True,
        position_buckets=16,
        pos_att_type=["p2c", "c2p"],
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pad_token_id=0,
        id2label=dict(enumerate(RATE_LABELS)),
        label2id={label: index for index, label in enumerate(RATE_LABELS)},
    )
    model = DebertaV2ForTokenClassification(config)
    if force_label is not None:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.fill_(-10.0)
            model.classifier.bias[RATE_LABELS.index(force_label)] = 10.0
    model.save_pretrained(folder)
    return folder


def mpnet_folder(folder: Path, seed: int = 0) -> Path:
    """A tiny BioLORD-shaped MPNet encoder."""
    import torch
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = wordpiece_tokenizer(folder)
    config = MPNetConfig(**TINY, vocab_size=len(tokenizer), max_position_embeddings=130, pad_token_id=0)
    MPNetModel(config).save_pretrained(folder)
    return folder


def rename_weight(folder: Path, old_prefix: str, new_prefix: str) -> str:
    """Rename the first key starting with ``old_prefix`` in ``folder``'s model.safetensors; returns the old key."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    state = load_file(path)
    key = next(k for k in state if k.startswith(old_prefix))
    state[new_prefix + key[len(old_prefix) :]] = state.pop(key)
    save_file(state, path, metadata={"format": "pt"})
    return key


def roberta_folder(folder: Path, seed: int = 0, layers: int = 6) -> Path:
    """A tiny distilroberta-shaped ``RobertaModel`` (6 layers, as distilroberta-base) with a byte-level BPE
    ``RobertaTokenizer`` trained on ``WORDS``, saved as a RobertaForMaskedLM checkpoint is (an lm_head, no pooler)."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaTokenizer

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        [" ".join(WORDS)] * 20, vocab_size=400, min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )  # fmt: skip
    trainer.save_model(str(folder))
    tokenizer = RobertaTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(folder)
    config = RobertaConfig(
        **{**TINY, "num_hidden_layers": layers},
        vocab_size=len(tokenizer),
        max_position_embeddings=130,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    RobertaForMaskedLM(config).save_pretrained(folder)
    return folder
