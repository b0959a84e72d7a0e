"""CPU cost of the model-based metrics at their published sizes (random weights): RaTEScore, BERTScore, SembScore.

    python benchmarks/metric_models.py [--n 200] [--output benchmarks/results/metric_models.json]

Models: DeBERTa-v3-base token classification (RaTE-NER-Deberta's shape) + MPNet-base (BioLORD-2023-C's), a
distilroberta-base-shaped RoBERTa (BERTScore), bert-base CheXbert (SembScore); random weights saved to a temporary
folder and loaded as the user's folders are (strictly). Tokenizers: the tests' small WordPiece / byte-level BPE ones
(about one token per word, close to the real tokenizers' 1.2-1.4 on radiology text). Pairs: ``--n`` report pairs from
the evaluation benchmark's generator (``benchmarks/evaluation.py``, ~54-word references).

Reported: seconds per pair for each metric, and each as a ratio to CheXbert labelling the same texts (a model forward
pass everyone already runs with ``--labeler chexbert``), measured in the same process, with the load average: on a
shared machine the ratios are steadier than the seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_models(root: Path, text_models) -> dict[str, Path]:
    import torch
    from transformers import (
        DebertaV2Config,
        DebertaV2ForTokenClassification,
        MPNetConfig,
        MPNetModel,
        RobertaConfig,
        RobertaForMaskedLM,
    )

    from himed.clinical.chexbert import CheXbert
    from himed.metrics.ratescore import RATE_LABELS

    torch.manual_seed(0)
    base = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
    folders = {"ner": root / "ner", "biolord": root / "biolord", "chexbert": root / "chexbert"}
    text_models.wordpiece_tokenizer(folders["ner"])
    DebertaV2ForTokenClassification(
        DebertaV2Config(
            **base, vocab_size=128100, max_position_embeddings=512, relative_attention=True, position_buckets=256,
            norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"], layer_norm_eps=1e-7,
            position_biased_input=False, type_vocab_size=0, id2label=dict(enumerate(RATE_LABELS)),
            label2id={label: i for i, label in enumerate(RATE_LABELS)},
        )
    ).save_pretrained(folders["ner"])  # fmt: skip
    text_models.wordpiece_tokenizer(folders["biolord"])
    MPNetModel(MPNetConfig(**base, vocab_size=30527, max_position_embeddings=514)).save_pretrained(folders["biolord"])
    folders["roberta"] = text_models.roberta_folder(root / "distilroberta", layers=1)
    RobertaForMaskedLM(
        RobertaConfig(**{**base, "num_hidden_layers": 6}, vocab_size=50265, max_position_embeddings=514, pad_token_id=1)
    ).save_pretrained(folders["roberta"])  # fmt: skip
    folders["chexbert"].mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(text_models.WORDS))]
    (folders["chexbert"] / "vocab.txt").write_text("\n".join(vocab) + "\n")
    state = {f"module.{k}": v for k, v in CheXbert().state_dict().items()}  # bert-base-uncased's shape
    torch.save({"model_state_dict": state}, folders["chexbert"] / "chexbert.pth")
    return folders


def timed(function, *args):
    started = time.perf_counter()
    cpu = time.process_time()
    result = function(*args)
    return result, time.perf_counter() - started, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    text_models = _load("text_models", HERE.parent / "tests" / "metrics" / "text_models.py")
    evaluation = _load("evaluation_benchmark", HERE / "evaluation.py")
    records = evaluation.make_pairs(args.n, 45, args.seed)
    from himed.data.sections import extract_lenient

    predictions = [extract_lenient(r["prediction"], ("think", "finding", "impression")) for r in records]
    references = [f"{r['findings']} {r['impression']}" for r in records]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folders = build_models(Path(tmp), text_models)
        from himed.clinical.chexbert import CheXbertLabeler
        from himed.metrics.ratescore import RaTEScorer
        from himed.metrics.rexrank import BertScorer

        chexbert = CheXbertLabeler(folders["chexbert"] / "chexbert.pth", folders["chexbert"])
        _, chexbert_wall, chexbert_cpu = timed(chexbert.embed, [*predictions, *references])
        rate = RaTEScorer(folders["ner"], folders["biolord"])
        _, rate_wall, rate_cpu = timed(rate.score, predictions, references)
        bert = BertScorer(folders["roberta"])
        _, bert_wall, bert_cpu = timed(bert.score, predictions, references)
    load_after = os.getloadavg()[0]
    n = len(predictions)
    result = {
        "n_pairs": n,
        "threads": torch.get_num_threads(),
        "load_average_1min": [load_before, load_after],
        "machine": platform.machine(),
        "max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "seconds_per_pair": {
            "sembscore_chexbert_baseline": chexbert_wall / n,
            "ratescore": rate_wall / n,
            "bertscore": bert_wall / n,
        },
        "cpu_seconds_per_pair": {
            "sembscore_chexbert_baseline": chexbert_cpu / n,
            "ratescore": rate_cpu / n,
            "bertscore": bert_cpu / n,
        },
        "ratio_to_chexbert_cpu": {"ratescore": rate_cpu / chexbert_cpu, "bertscore": bert_cpu / chexbert_cpu},
    }
    print(json.dumps(result, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
