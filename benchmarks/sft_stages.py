"""What each supervised stage buys before RL: every stage trained for the same step budget, then evaluated.

Stages (recipes/quickstart/sft_*.yaml), all from the same tiny model on the quickstart demo data, with the same
optimizer-step budget (``--steps``, batch 16):

- ``cold_start``: the tagged target (sft.yaml);
- ``weighted`` (LLM-RG4): positive/uncertain sentences weigh 1.75 (sft_weighted.yaml);
- ``observation_then_cold_start`` (DCRRG): 40% of the budget on per-observation prompts (sft_observation.yaml), the
  rest on full reports (sft.yaml);
- ``hierarchical`` (Hi-MrGn): findings turn then impression turn (sft_hierarchical.yaml), evaluated with
  ``himed evaluate --hierarchical``.

Each is evaluated on the demo test split (complete references) with ``himed evaluate`` (cleaning none, the rule
labeler). Needs the quickstart's data and tiny model (``himed pipeline recipes/quickstart/pipeline.yaml`` makes them,
or the two ``prepare`` commands in it).

    OMP_NUM_THREADS=1 python benchmarks/sft_stages.py --steps 300 --output benchmarks/results/sft_stages_300.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "quickstart"
KEYS = (
    "bleu_1",
    "bleu_4",
    "meteor",
    "rouge_l",
    "cider",
    "ce_micro_f1_14",
    "ce_macro_f1_14",
    "ce_micro_f1_5",
    "ce_macro_f1_5",
    "format_rate",
    "consistency_rate",
    "length_mean",
)


def train(recipe: str, model: str, output: Path, steps: int, env: dict) -> float:
    command = [
        sys.executable,
        "-m",
        "himed.trainers.sft",
        "--config",
        str(RECIPES / recipe),
        "--model_name_or_path",
        model,
        "--output_dir",
        str(output),
        "--max_steps",
        str(steps),
    ]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True)
    return time.perf_counter() - started


def evaluate(model: Path, out_dir: Path, data: str, limit: int, hierarchical: bool, env: dict) -> dict:
    command = [
        sys.executable,
        "-m",
        "himed.cli",
        "evaluate",
        "--model",
        str(model),
        "--data",
        data,
        "--split",
        "test",
        "--out-dir",
        str(out_dir),
        "--clean",
        "none",
        "--max-new-tokens",
        "80",
        "--batch-size",
        "50",
        "--limit",
        str(limit),
    ]
    if hierarchical:
        command.append("--hierarchical")
    subprocess.run(command, cwd=ROOT, env=env, check=True)
    return json.loads((out_dir / "metrics.json").read_text())["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per stage (batch 16)")
    parser.add_argument("--limit", type=int, default=150, help="test studies evaluated")
    parser.add_argument("--base-model", default="runs/quickstart/tiny-model")
    parser.add_argument("--data", default="runs/quickstart/demo")
    parser.add_argument("--work-dir", default="runs/sft_stages")
    parser.add_argument("--output", default="benchmarks/results/sft_stages.json")
    args = parser.parse_args()
    for path in (args.base_model, args.data):
        if not (ROOT / path).exists():
            raise SystemExit(f"{path} is missing: run the quickstart's prepare steps first (see the docstring)")

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    work = ROOT / args.work_dir
    observation_steps = int(args.steps * 0.4)
    results: dict[str, dict] = {}
    plans = {
        "cold_start": [("sft.yaml", args.steps)],
        "weighted": [("sft_weighted.yaml", args.steps)],
        "observation_then_cold_start": [
            ("sft_observation.yaml", observation_steps),
            ("sft.yaml", args.steps - observation_steps),
        ],
        "hierarchical": [("sft_hierarchical.yaml", args.steps)],
    }
    for name, plan in plans.items():
        model, seconds = args.base_model, 0.0
        for index, (recipe, steps) in enumerate(plan):
            output = work / name / f"{index}_{Path(recipe).stem}"
            seconds += train(recipe, model, output, steps, env)
            model = str(output)
        metrics = evaluate(Path(model), work / name / "eval", args.data, args.limit, name == "hierarchical", env)
        results[name] = {
            "train_seconds": round(seconds, 1),
            "plan": plan,
            **{key: round(metrics[key], 4) for key in KEYS if key in metrics},
        }
        print(name, json.dumps(results[name]), flush=True)

    record = {
        "command": f"OMP_NUM_THREADS=1 python benchmarks/sft_stages.py --steps {args.steps} --limit {args.limit}",
        "data": f"{args.data} (quickstart demo: train references omit 40% of present findings; test complete)",
        "stages": results,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
