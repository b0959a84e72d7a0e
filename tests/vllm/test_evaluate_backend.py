"""``himed evaluate --backend vllm`` on CPU gives the predictions ``--backend hf`` gives: float32 forced on both,
greedy decoding, same model, prompts and images (the default image budget of the checkpoint on both sides)."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.vllm


def evaluate(model_dir, data_dir, out_dir, backend):
    command = [sys.executable, "-m", "himed.cli", "evaluate", "--model", str(model_dir), "--data", str(data_dir)]
    command += ["--split", "train", "--limit", "6", "--out-dir", str(out_dir), "--backend", backend]
    command += ["--dtype", "float32", "--max-new-tokens", "24", "--batch-size", "3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (out_dir / "predictions.jsonl").read_text().splitlines()
    return {record["id"]: record["prediction"] for record in map(json.loads, lines)}


def first_difference(processor, left: str, right: str) -> str:
    a, b = processor.tokenizer(left)["input_ids"], processor.tokenizer(right)["input_ids"]
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"first differing token at {at}: hf {a[at : at + 1]} vs vllm {b[at : at + 1]} after {a[:at][-5:]}"


def test_vllm_backend_predicts_what_hf_predicts(tmp_path, tiny_model_dir, demo_variants):
    from himed.models.loading import load_processor

    data = demo_variants["two_images"]  # two images per study: the harder prompt
    hf = evaluate(tiny_model_dir, data, tmp_path / "hf", "hf")
    vllm = evaluate(tiny_model_dir, data, tmp_path / "vllm", "vllm")
    assert hf.keys() == vllm.keys() and len(hf) == 6
    processor = load_processor(tiny_model_dir)
    for study in hf:
        assert hf[study] == vllm[study], f"{study}: {first_difference(processor, hf[study], vllm[study])}"
