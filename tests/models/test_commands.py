"""``himed model tiny`` end to end through the ``himed`` entry point."""

from __future__ import annotations

import json

from himed.cli import main
from himed.models.commands import ARCH_CHOICES
from himed.models.tiny import ARCHS


def test_arch_choices_match_the_builder():
    assert tuple(ARCH_CHOICES) == tuple(ARCHS)


def test_model_tiny_with_a_corpus_file(tmp_path, capsys):
    corpus = tmp_path / "reports.txt"
    corpus.write_text("The heart is normal.\nSmall left pleural effusion.\n" * 20, encoding="utf-8")
    out_dir = tmp_path / "tiny"
    code = main(
        ["model", "tiny", "--arch", "qwen3_vl", "--out-dir", str(out_dir), "--corpus", str(corpus), "--seed", "1"]
    )
    assert code == 0
    # The last line is the directory (a dependency may log to stdout on import: deepspeed does).
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out_dir)
    assert json.loads((out_dir / "config.json").read_text())["model_type"] == "qwen3_vl"
    assert (out_dir / "model.safetensors").is_file() and (out_dir / "tokenizer.json").is_file()


def test_model_tiny_missing_corpus_is_a_one_line_error(tmp_path, capsys):
    code = main(["model", "tiny", "--out-dir", str(tmp_path / "tiny"), "--corpus", str(tmp_path / "missing.txt")])
    assert code == 2
    assert "corpus file not found" in capsys.readouterr().err
    assert not (tmp_path / "tiny").exists()
