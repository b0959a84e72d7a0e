"""``himed evaluate`` with RaTEScore, GREEN and ``--suite rexrank`` on tiny random-weight models and a scripted
GREEN server: metrics.json, the ReXrank table in metrics.md, and metrics left out with their reasons."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from himed.cli import main

HERE = Path(__file__).resolve().parent


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


text_models = _load("text_models", HERE / "text_models.py")
judge_server_module = _load("judge_server_conftest", HERE.parent / "verifiers" / "conftest.py")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from himed.clinical.chexbert import CheXbert, read_config

    root = tmp_path_factory.mktemp("metric_models")
    out = {
        "ner": text_models.rate_ner_folder(root / "ner", force_label="B-DISEASE"),
        "biolord": text_models.mpnet_folder(root / "biolord"),
        "roberta": text_models.roberta_folder(root / "distilroberta"),
    }
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(text_models.WORDS))]
    (root / "chexbert").mkdir()
    (root / "chexbert" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    # bert-base shape is what --chexbert-checkpoint expects without a config: keep the tiny vocabulary, full shape.
    model = CheXbert(read_config({"vocab_size": len(vocab), "num_hidden_layers": 1}))
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               root / "chexbert" / "chexbert.pth")  # fmt: skip
    out["chexbert"] = root / "chexbert"
    return out


@pytest.fixture
def green_server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")
    server = judge_server_module.ScriptedJudgeServer(lifetime=60.0).start()
    candidate = re.compile(r"3\. Candidate Report:\n    (.*?)\n\n    4\.", re.DOTALL)

    def answer(user):
        matched = candidate.search(user).group(1).lower().count("effusion")
        return f"[Clinically Significant Errors]:\n(b) Missing: 1. x\n\n[Matched Findings]:\n{matched}. effusion\n"

    server.answer_text = answer
    yield server
    server.stop()


@pytest.fixture
def predictions(tmp_path):
    rows = [
        {"id": "1", "prediction": "No pleural effusion.", "findings": "No pleural effusion.", "impression": "Normal."},
        {"id": "2", "prediction": "Mild cardiomegaly.", "findings": "Heart size is normal.", "impression": ""},
    ]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_suite_rexrank_writes_the_table_and_leaves_out_what_cannot_run(
    models, green_server, predictions, tmp_path, monkeypatch
):
    # The test's chexbert.pth is a 1-layer BERT (bert-base has 12, too big for a default test); the CLI has no
    # flag for a CheXbert config, so the labeler is told here.
    from himed.clinical import labelers

    real_get_labeler = labelers.get_labeler

    def get_labeler(name, **kwargs):
        if name == "chexbert":
            kwargs.setdefault("config", {"vocab_size": len((models["chexbert"] / "vocab.txt").read_text().split()),
                                         "num_hidden_layers": 1})  # fmt: skip
        return real_get_labeler(name, **kwargs)

    monkeypatch.setattr(labelers, "get_labeler", get_labeler)
    out = tmp_path / "out"
    argv = [
        "evaluate", "--predictions", str(predictions), "--out-dir", str(out), "--meteor", "nltk",
        "--suite", "rexrank",
        "--ratescore-ner", str(models["ner"]), "--ratescore-embedding", str(models["biolord"]),
        "--green-base-url", green_server.url, "--green-model", "green-test",
        "--bertscore-model", str(models["roberta"]),
        "--chexbert-checkpoint", str(models["chexbert"] / "chexbert.pth"), "--chexbert-tokenizer",
        str(models["chexbert"]),
    ]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "metrics.json").read_text())
    metrics, config = result["metrics"], result["config"]
    for name in ("rexrank_bleu2", "bertscore", "sembscore", "ratescore", "green", "bleu_4"):
        assert name in metrics
    assert metrics["green"] == pytest.approx((0.5 + 0.0) / 2)  # 1 matched + 1 missing; nothing matched
    # No RadGraph environment: RadGraph and RadCliQ-v1 are left out with reasons, never 0.
    for name in ("rexrank_radgraph", "radcliq_v1", "inv_radcliq_v1"):
        assert name not in metrics and name in config["undefined"]
    assert config["suite"] == "rexrank" and config["rexrank"]["references_rewritten"] == 2
    # ReXrank's references: 'Findings: ... Impression: ...', so BLEU-2 of line 1 is below 1 though the text matches.
    assert metrics["rexrank_bleu2"] < 1.0
    # Per-sample scores reach samples.jsonl, and the bootstrap gives the model-based metrics intervals too.
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["scores"]["green"] for s in samples] == [0.5, 0.0]
    assert all(0.0 <= s["scores"]["ratescore"] <= 1.0 + 1e-9 for s in samples)
    assert metrics["ratescore"] == pytest.approx(sum(s["scores"]["ratescore"] for s in samples) / 2)
    assert result["ci95"]["green"] == [0.0, 0.5]
    markdown = (out / "metrics.md").read_text()
    assert "## ReXrank" in markdown and "RadCliQ-v1 (radcliq_v1): left out, needs rexrank_radgraph" in markdown
    assert "Where this computation departs from ReXrank's" in markdown
    assert "| 95% CI | - | - | [" in markdown  # the intervals of the computed columns


def test_ratescore_alone_in_the_default_suite(models, predictions, tmp_path):
    out = tmp_path / "out"
    argv = ["evaluate", "--predictions", str(predictions), "--out-dir", str(out), "--meteor", "nltk",
            "--ratescore-ner", str(models["ner"]), "--ratescore-embedding", str(models["biolord"])]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= result["metrics"]["ratescore"] <= 1.0
    assert "bertscore" not in result["metrics"] and "suite" not in result["config"]
    assert "## ReXrank" not in (out / "metrics.md").read_text()


def test_rexrank_flags_without_the_suite_are_an_error(models, predictions, tmp_path, capsys):
    argv = ["evaluate", "--predictions", str(predictions), "--out-dir", str(tmp_path / "o"),
            "--bertscore-model", str(models["roberta"])]  # fmt: skip
    assert main(argv) == 2
    assert "--suite rexrank" in capsys.readouterr().err
