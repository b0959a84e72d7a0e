"""Does GRPO learn on the CPU quickstart? Runs the quickstart pipeline from scratch and records base -> SFT -> GRPO.

The quickstart's demo references leave 40% of the present findings unmentioned in the training split (the rows'
labels keep the image truth; validation and test references are complete), so SFT learns incomplete reports, and
GRPO's clinical reward (``reference_labels: row``) sees what the references miss. This script times the whole
``himed pipeline recipes/quickstart/pipeline.yaml`` (install excluded) in a fresh output folder and writes each
stage's clinical efficacy, NLG metrics and GRPO reward (scored on the test split's complete references) to JSON.

    OMP_NUM_THREADS=1 python benchmarks/learning_signal.py [--output benchmarks/results/learning_signal.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "recipes" / "quickstart" / "pipeline.yaml"
KEYS = (
    "ce_micro_f1_14",
    "ce_macro_f1_14",
    "ce_micro_f1_5",
    "ce_macro_f1_5",
    "ce_micro_recall_14",
    "ce_micro_precision_14",
    "bleu_4",
    "rouge_l",
    "meteor",
    "format_rate",
    "length_mean",
    "reward_total_start",
    "reward_total_end",
    "reward/clinical",
    "reward/semantic",
    "reward/token",
    "reward/concept",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="benchmarks/results/learning_signal.json")
    parser.add_argument("--keep", action="store_true", help="reuse an existing runs/quickstart (no timing claim)")
    args = parser.parse_args()

    config = yaml.safe_load(PIPELINE.read_text())
    run_dir = ROOT / config["output_dir"]
    if run_dir.exists() and not args.keep:
        shutil.rmtree(run_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "himed.cli", "pipeline", str(PIPELINE)], cwd=ROOT, env=env, check=True)
    wall = time.perf_counter() - started

    stages = {}
    for name in ["base", *[stage["name"] for stage in config["stages"]]]:
        metrics = json.loads((run_dir / name / "eval" / "metrics.json").read_text())["metrics"]
        stages[name] = {key: metrics[key] for key in KEYS if key in metrics}
    summary = json.loads((run_dir / "pipeline_summary.json").read_text())
    sft, grpo = stages["sft"], stages["grpo"]
    result = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/learning_signal.py  (= himed pipeline recipes/quickstart/pipeline.yaml)",
        "wall_seconds": round(wall, 1),
        "stage_seconds": {key: round(value, 1) for key, value in summary["timings_s"].items()},
        "cpu_count": os.cpu_count(),
        "stages": stages,
        "grpo_minus_sft": {key: round(grpo[key] - sft[key], 4) for key in KEYS if key in grpo and key in sft},
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
