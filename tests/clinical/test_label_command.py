"""``himed label``: JSONL in, ``{"id", "labels"}`` out; field selection; errors naming file:line."""

from __future__ import annotations

import json
import string

import pytest
import torch

from himed.cli import main
from himed.clinical.labelers import clear_labeler_cache
from himed.clinical.rules import ChexpertRuleLabeler


def _write(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rules_labels_each_row(tmp_path):
    source = _write(
        tmp_path / "in.jsonl",
        [
            {"id": "a", "text": "Small left pleural effusion. No pneumothorax."},
            "",
            {"id": 7, "text": ""},
            {"text": "Heart size is normal."},
        ],
    )
    target = tmp_path / "out" / "labels.jsonl"
    assert main(["label", "--input", str(source), "--output", str(target)]) == 0
    rows = _read(target)
    labeler = ChexpertRuleLabeler()
    assert rows == [
        {"id": "a", "labels": labeler.label_one("Small left pleural effusion. No pneumothorax.")},
        {"id": 7, "labels": {"No Finding": 1}},
        {"id": 4, "labels": labeler.label_one("Heart size is normal.")},  # no id: the line number
    ]
    assert rows[0]["labels"] == {"Pleural Effusion": 1, "Pneumothorax": 0}


def test_text_field_fallbacks_and_explicit_field(tmp_path):
    source = _write(
        tmp_path / "in.jsonl",
        [
            {"id": 1, "report": "Cardiomegaly."},
            {"id": 2, "findings": "No effusion.", "impression": "Pneumonia."},
            {"id": 3, "findings": "Small pneumothorax.", "impression": ""},
        ],
    )
    target = tmp_path / "out.jsonl"
    assert main(["label", "--input", str(source), "--output", str(target)]) == 0
    labels = [row["labels"] for row in _read(target)]
    assert labels[0] == {"Cardiomegaly": 1}
    assert labels[1] == {"Pleural Effusion": 0, "Pneumonia": 1}
    assert labels[2] == {"Pneumothorax": 1}
    assert main(["label", "--input", str(source), "--output", str(target), "--field", "impression"]) == 2


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": 1, "text": "ok"}', "{not json"], "in.jsonl:2: not valid JSON"),
        (['{"id": 1, "text": "ok"}', "", "[1, 2]"], "in.jsonl:3: expected a JSON object, got list"),
        (['{"id": 1, "body": "x"}'], "in.jsonl:1: no text field"),
        (['{"id": 1, "text": 5}'], "in.jsonl:1: field 'text' must be a string, got int"),
    ],
)
def test_bad_lines_are_named(tmp_path, capsys, lines, message):
    source = _write(tmp_path / "in.jsonl", lines)
    target = tmp_path / "out.jsonl"
    assert main(["label", "--input", str(source), "--output", str(target)]) == 2
    assert message in capsys.readouterr().err
    assert not target.exists()  # nothing written when the input is bad


def test_missing_field_with_explicit_field(tmp_path, capsys):
    source = _write(tmp_path / "in.jsonl", [{"id": 1, "text": "x"}])
    assert main(["label", "--input", str(source), "--output", str(tmp_path / "o.jsonl"), "--field", "report"]) == 2
    assert "in.jsonl:1: missing field 'report'" in capsys.readouterr().err


def test_chexbert_flags_are_checked(tmp_path, capsys):
    source = _write(tmp_path / "in.jsonl", [{"id": 1, "text": "x"}])
    out = str(tmp_path / "o.jsonl")
    assert main(["label", "--input", str(source), "--output", out, "--labeler", "chexbert"]) == 2
    assert "--chexbert-checkpoint and --chexbert-tokenizer" in capsys.readouterr().err
    assert main(["label", "--input", str(source), "--output", out, "--chexbert-checkpoint", "x.pth"]) == 2
    assert "only apply to --labeler chexbert" in capsys.readouterr().err
    assert main(["label", "--input", str(source), "--output", out, "--labeler", "nope"]) == 2
    assert "unknown labeler 'nope'" in capsys.readouterr().err


def test_chexbert_through_the_command(tmp_path):
    from himed.clinical.chexbert import CheXbert, CheXbertLabeler, read_config

    letters = list(string.ascii_lowercase)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *[f"##{c}" for c in letters]]
    tokenizer = tmp_path / "tok"
    tokenizer.mkdir()
    (tokenizer / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = {"vocab_size": len(vocab), "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 32, "max_position_embeddings": 512}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    torch.manual_seed(1)
    model = CheXbert(read_config(config))
    checkpoint = tmp_path / "chexbert.pth"
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, checkpoint)
    texts = ["no effusion", "heart is enlarged", ""]
    source = _write(tmp_path / "in.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts)])
    target = tmp_path / "out.jsonl"
    clear_labeler_cache()
    code = main(["label", "--input", str(source), "--output", str(target), "--labeler", "chexbert",
                 "--chexbert-checkpoint", str(checkpoint), "--chexbert-tokenizer", str(tokenizer),
                 "--chexbert-config", str(tmp_path / "config.json"), "--batch-size", "2"])  # fmt: skip
    assert code == 0
    expected = CheXbertLabeler(checkpoint=checkpoint, tokenizer=tokenizer, config=config).label(texts)
    assert _read(target) == [{"id": i, "labels": labels} for i, labels in enumerate(expected)]
    clear_labeler_cache()
