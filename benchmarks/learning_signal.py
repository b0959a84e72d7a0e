"""Does GRPO learn on the CPU quickstart? Runs the quickstart pipeline from scratch and records base -> SFT -> GRPO.

The quickstart's demo references leave 40% of the present findings unmentioned in the training split (the rows'
labels keep the image truth; validation and test references are complete), so SFT learns incomplete reports, and
GRPO's clinical reward (``reference_labels: row``) sees what the references miss. This script times the whole
``himed pipeline recipes/quickstart/pipeline.yaml`` (install excluded) in a fresh output folder and writes each
stage's clinical efficacy, NLG metrics and GRPO reward (scored on the test split's complete references) to JSON.

Over seeds (``--seeds 0,1,2``): seed S runs the same pipeline in ``runs/learning_signal/seed<S>`` with the tiny
model's initialisation, the SFT stage and the GRPO stage all seeded S; the demo data stays the quickstart's (seed 0),
so the spread is that of training, on one dataset. Seed 0 is the quickstart exactly (other folder). Each seed's
record is kept in its folder (``seed_result.json``) and not rerun unless ``--force``; the output gathers every seed
asked for, with the mean, min and max of each metric.

    OMP_NUM_THREADS=1 python benchmarks/learning_signal.py --seeds 0,1,2 [--output benchmarks/results/learning_signal.json]
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


def seeded_pipeline(seed: int, run_dir: Path) -> Path:
    """The quickstart pipeline rewritten for one seed into ``run_dir/pipeline.yaml`` (module docstring)."""
    config = yaml.safe_load(PIPELINE.read_text())
    old = config["output_dir"]

    def moved(value):
        if isinstance(value, str):
            return value.replace(old, str(run_dir), 1) if value.startswith(old) else value
        if isinstance(value, list):
            return [moved(item) for item in value]
        if isinstance(value, dict):
            return {key: moved(item) for key, item in value.items()}
        return value

    config = moved(config)
    for step in config["prepare"]:
        if step[:2] == ["model", "tiny"]:
            step[step.index("--seed") + 1] = str(seed)
    for stage in config["stages"]:
        stage["overrides"] = {**stage.get("overrides", {}), "data_path": config["evaluate"]["data_path"], "seed": seed}
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_seed(seed: int, run_dir: Path, keep: bool) -> dict:
    """One timed pipeline run; its stages' metrics and timings."""
    pipeline = PIPELINE if run_dir is None else seeded_pipeline(seed, run_dir)
    config = yaml.safe_load(Path(pipeline).read_text())
    out = ROOT / config["output_dir"]
    if out.exists() and not keep:
        shutil.rmtree(out)
        if run_dir is not None:
            pipeline = seeded_pipeline(seed, run_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    load_before = os.getloadavg()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "himed.cli", "pipeline", str(pipeline)], cwd=ROOT, env=env, check=True)
    wall = time.perf_counter() - started
    return collect(seed, config, out, wall, [round(load_before[0], 2), round(os.getloadavg()[0], 2)])


def collect(seed: int, config: dict, out: Path, wall: float, load_avg: list[float] | None) -> dict:
    """The record of a finished pipeline run in ``out``."""
    stages = {}
    for name in ["base", *[stage["name"] for stage in config["stages"]]]:
        metrics = json.loads((out / name / "eval" / "metrics.json").read_text())["metrics"]
        stages[name] = {key: metrics[key] for key in KEYS if key in metrics}
    summary = json.loads((out / "pipeline_summary.json").read_text())
    sft, grpo = stages["sft"], stages["grpo"]
    return {
        "seed": seed,
        "wall_seconds": round(wall, 1),
        "stage_seconds": {key: round(value, 1) for key, value in summary["timings_s"].items()},
        # The machine may be shared: the 1-minute load average before and after the run, next to its time.
        "load_avg": load_avg,
        "stages": stages,
        "grpo_minus_sft": {key: round(grpo[key] - sft[key], 4) for key in KEYS if key in grpo and key in sft},
    }


def finished_record(seed: int, run_dir: Path) -> dict:
    """The record of a seed's pipeline that ran to the end outside this script's timer (``--finished``)."""
    summary = run_dir / "pipeline_summary.json"
    if not summary.is_file():
        raise FileNotFoundError(f"{summary}: the pipeline of seed {seed} has not finished")
    config = yaml.safe_load((run_dir / "pipeline.yaml").read_text())
    wall = sum(json.loads(summary.read_text())["timings_s"].values())
    record = collect(seed, config, run_dir, wall, None)
    record["wall_note"] = "sum of the pipeline's stage and evaluation timings (preparation not timed)"
    return record


def spread(records: list[dict], path: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Mean, min and max over seeds of every metric under ``path`` (e.g. ("stages", "grpo"))."""
    tables = []
    for record in records:
        for key in path:
            record = record[key]
        tables.append(record)
    keys = [key for key in tables[0] if all(key in table for table in tables)]
    return {
        key: {
            "mean": sum(table[key] for table in tables) / len(tables),
            "min": min(table[key] for table in tables),
            "max": max(table[key] for table in tables),
        }
        for key in keys
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="benchmarks/results/learning_signal.json")
    parser.add_argument(
        "--seeds",
        help="comma-separated seeds, each in runs/learning_signal/seed<S> (default: the "
        "quickstart itself, in runs/quickstart)",
    )
    parser.add_argument("--force", action="store_true", help="rerun seeds that already have a record")
    parser.add_argument("--keep", action="store_true", help="reuse an existing run folder (no timing claim)")
    parser.add_argument(
        "--finished",
        action="store_true",
        help="record seeds whose pipeline finished without this script timing it (wall = the sum of the "
        "pipeline's own stage and evaluation timings, preparation excluded)",
    )
    args = parser.parse_args()

    if args.seeds is None:
        record = run_seed(0, None, args.keep)
        result = {
            "command": "OMP_NUM_THREADS=1 python benchmarks/learning_signal.py  "
            "(= himed pipeline recipes/quickstart/pipeline.yaml)",
            "cpu_count": os.cpu_count(),
            **{key: value for key, value in record.items() if key != "seed"},
        }
    else:
        records = []
        for seed in [int(s) for s in args.seeds.split(",") if s]:
            run_dir = ROOT / "runs" / "learning_signal" / f"seed{seed}"
            saved = run_dir / "seed_result.json"
            if saved.is_file() and not args.force:
                records.append(json.loads(saved.read_text()))
                continue
            if args.finished:
                record = finished_record(seed, run_dir)
                saved.write_text(json.dumps(record, indent=2) + "\n")
                records.append(record)
                continue
            record = run_seed(seed, run_dir, args.keep)
            saved.write_text(json.dumps(record, indent=2) + "\n")
            records.append(record)
        result = {
            "command": f"OMP_NUM_THREADS=1 python benchmarks/learning_signal.py --seeds {args.seeds}",
            "cpu_count": os.cpu_count(),
            "seeds": [record["seed"] for record in records],
            "note": "seed S: tiny-model init, SFT and GRPO seeded S; the demo data is the quickstart's (seed 0)",
            "wall_seconds": spread(records, ("stage_seconds",))
            | {
                "total": {
                    "mean": sum(r["wall_seconds"] for r in records) / len(records),
                    "min": min(r["wall_seconds"] for r in records),
                    "max": max(r["wall_seconds"] for r in records),
                }
            },
            "summary": {name: spread(records, ("stages", name)) for name in records[0]["stages"]}
            | {"grpo_minus_sft": spread(records, ("grpo_minus_sft",))},
            "runs": records,
        }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result.get("summary", result), indent=2))


if __name__ == "__main__":
    main()
