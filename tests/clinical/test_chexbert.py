"""CheXbert with a tiny random-weight checkpoint in the published key layout and a local WordPiece tokenizer."""

from __future__ import annotations

import string

import pytest
import torch

from himed.clinical.chexbert import CLASS_TO_LABEL, CheXbert, CheXbertLabeler, read_config
from himed.clinical.labelers import clear_labeler_cache, get_labeler
from himed.clinical.observations import CHEXBERT_OBSERVATIONS, NO_FINDING, with_no_finding

TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}
WORDS = ["no", "pleural", "effusion", "heart", "is", "enlarged", "pneumothorax", "the", "small", "left", "."]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert_tokenizer")
    letters = list(string.ascii_lowercase + string.digits)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, *[f"##{c}" for c in letters]]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return folder


def _config(tokenizer_dir):
    vocab_size = len((tokenizer_dir / "vocab.txt").read_text().split())
    return {**TINY, "vocab_size": vocab_size}


def _save_published_layout(model: CheXbert, path) -> None:
    # The published chexbert.pth: saved from nn.DataParallel, wrapped with the optimizer state and epoch.
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    torch.save({"epoch": 3, "model_state_dict": state, "optimizer_state_dict": {"state": {}, "param_groups": []}}, path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer_dir):
    torch.manual_seed(0)
    model = CheXbert(read_config(_config(tokenizer_dir)))
    path = tmp_path_factory.mktemp("chexbert") / "chexbert.pth"
    _save_published_layout(model, path)
    return path, model


def test_published_key_layout(checkpoint):
    path, _ = checkpoint
    state = torch.load(path, weights_only=True)["model_state_dict"]
    assert "module.bert.embeddings.word_embeddings.weight" in state
    assert "module.bert.encoder.layer.0.attention.self.query.weight" in state
    assert "module.bert.pooler.dense.weight" in state
    assert state["module.linear_heads.0.weight"].shape == (4, TINY["hidden_size"])
    assert state["module.linear_heads.12.weight"].shape == (4, TINY["hidden_size"])
    assert state["module.linear_heads.13.weight"].shape == (2, TINY["hidden_size"])
    assert "module.linear_heads.14.weight" not in state


def test_labels_match_a_direct_forward_pass(checkpoint, tokenizer_dir):
    path, model = checkpoint
    labeler = CheXbertLabeler(checkpoint=path, tokenizer=tokenizer_dir, config=_config(tokenizer_dir), batch_size=2)
    texts = ["No pleural effusion.", "The heart is enlarged.", "", "small left pneumothorax", "x" * 3000]
    labels = labeler.label(texts)
    assert len(labels) == len(texts)
    vocab = (tokenizer_dir / "vocab.txt").read_text().split()
    model.eval()
    for text, got in zip(texts, labels, strict=True):
        # Tokenize by hand (whole words of the tiny vocabulary) and run the original module one report at a time.
        ids = [vocab.index("[CLS]")]
        for word in text.lower().replace(".", " .").split():
            ids += (
                [vocab.index(word)]
                if word in vocab
                else labeler.tokenizer.convert_tokens_to_ids(labeler.tokenizer.tokenize(word))
            )
        ids = ids[:511] + [vocab.index("[SEP]")]
        with torch.no_grad():
            logits = model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
        classes = [int(head.argmax(dim=1)) for head in logits]
        expected = {
            name: CLASS_TO_LABEL[index]
            for name, index in zip(CHEXBERT_OBSERVATIONS[:-1], classes[:-1], strict=True)
            if CLASS_TO_LABEL[index] is not None
        }
        assert got == with_no_finding(expected), text


def _forced_model(tokenizer_dir) -> CheXbert:
    # Heads with zero weights and one large bias predict a fixed class: head i -> class i % 4, No Finding -> 1.
    model = CheXbert(read_config(_config(tokenizer_dir)))
    with torch.no_grad():
        for index, head in enumerate(model.linear_heads):
            head.weight.zero_()
            head.bias.zero_()
            head.bias[1 if index == 13 else index % 4] = 10.0
    return model


def test_class_index_mapping_and_head_order(tmp_path, tokenizer_dir):
    path = tmp_path / "forced.pth"
    _save_published_layout(_forced_model(tokenizer_dir), path)
    config = _config(tokenizer_dir)
    by_rule = CheXbertLabeler(checkpoint=path, tokenizer=tokenizer_dir, config=config).label(["heart"])[0]
    by_head = CheXbertLabeler(checkpoint=path, tokenizer=tokenizer_dir, config=config, no_finding="head").label(
        ["heart"]
    )[0]
    # Index 0 blank (absent), 1 positive, 2 negative, 3 uncertain, in CheXbert's head order.
    expected = {}
    for index, name in enumerate(CHEXBERT_OBSERVATIONS[:-1]):
        value = {0: None, 1: 1, 2: 0, 3: -1}[index % 4]
        if value is not None:
            expected[name] = value
    assert expected["Cardiomegaly"] == 1 and expected["Lung Opacity"] == 0 and expected["Lung Lesion"] == -1
    assert "Enlarged Cardiomediastinum" not in expected
    assert by_rule == expected  # positives present, so the rule gives no No Finding
    assert by_head == {**expected, NO_FINDING: 1}


def test_raw_state_dict_without_prefix_and_old_buffers_load(tmp_path, tokenizer_dir):
    model = CheXbert(read_config(_config(tokenizer_dir)))
    state = dict(model.state_dict())
    # transformers 3.x-4.30 saved these constant buffers; they are ignored.
    state["bert.embeddings.position_ids"] = torch.arange(512)[None]
    path = tmp_path / "raw.pth"
    torch.save(state, path)
    labeler = CheXbertLabeler(checkpoint=path, tokenizer=tokenizer_dir, config=_config(tokenizer_dir))
    for name, value in model.state_dict().items():
        assert torch.equal(labeler.model.state_dict()[name], value), name


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape"])
def test_strict_loading_fails_loudly(tmp_path, tokenizer_dir, checkpoint, damage):
    _, model = checkpoint
    state = {f"module.{key}": value.clone() for key, value in model.state_dict().items()}
    if damage == "missing":
        del state["module.linear_heads.13.bias"]
        needle = "missing keys: linear_heads.13.bias"
    elif damage == "unexpected":
        state["module.classifier.weight"] = torch.zeros(2, 2)
        needle = "unexpected keys: classifier.weight"
    else:
        state["module.linear_heads.3.weight"] = torch.zeros(3, TINY["hidden_size"])
        needle = "wrong shape keys: linear_heads.3.weight (3, 32) vs (4, 32)"
    path = tmp_path / "bad.pth"
    torch.save({"model_state_dict": state}, path)
    with pytest.raises(ValueError) as error:
        CheXbertLabeler(checkpoint=path, tokenizer=tokenizer_dir, config=_config(tokenizer_dir))
    assert needle in str(error.value) and str(path) in str(error.value)


def test_bert_base_config_mismatch_says_to_pass_config(checkpoint, tokenizer_dir):
    path, _ = checkpoint
    with pytest.raises(ValueError, match="pass config="):
        CheXbertLabeler(checkpoint=path, tokenizer=tokenizer_dir)  # bert-base shape vs the tiny checkpoint


def test_missing_files_say_how_to_fix(tmp_path, tokenizer_dir, checkpoint):
    path, _ = checkpoint
    with pytest.raises(ValueError, match="chexbert.pth"):
        CheXbertLabeler(tokenizer=tokenizer_dir)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        CheXbertLabeler(checkpoint=tmp_path / "nope.pth", tokenizer=tokenizer_dir, config=_config(tokenizer_dir))
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        CheXbertLabeler(checkpoint=path, tokenizer=tmp_path, config=_config(tokenizer_dir))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        CheXbertLabeler(checkpoint=tmp_path / "junk.pth", tokenizer=tokenizer_dir, config=_config(tokenizer_dir))


def test_long_reports_are_cut_to_512_tokens(checkpoint, tokenizer_dir):
    path, _ = checkpoint
    labeler = CheXbertLabeler(checkpoint=path, tokenizer=tokenizer_dir, config=_config(tokenizer_dir))
    batch = labeler._encode(["effusion " * 2000, ""])
    assert batch["input_ids"].shape == (2, 512)
    sep = labeler.tokenizer.sep_token_id
    assert batch["input_ids"][0, -1] == sep
    assert batch["input_ids"][1, :2].tolist() == [labeler.tokenizer.cls_token_id, sep]
    assert batch["attention_mask"][1].sum() == 2


def test_get_labeler_caches_one_model(checkpoint, tokenizer_dir):
    path, _ = checkpoint
    clear_labeler_cache()
    config = _config(tokenizer_dir)
    first = get_labeler("chexbert", checkpoint=str(path), tokenizer=str(tokenizer_dir), config=config)
    second = get_labeler("chexbert", checkpoint=str(path), tokenizer=str(tokenizer_dir), config=config)
    assert first is second and first.name == "chexbert"
    assert first.label(["\x00\u2028 🫁", ""])[1] == first.label([""])[0]
    clear_labeler_cache()
