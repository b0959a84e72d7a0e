"""Does each reward level, and the schedule, help? HiMed-RL's ablations (its table 1) on the CPU demo, over seeds.

One shared SFT checkpoint on the quickstart's demo data (``recipes/quickstart/sft.yaml``: 1,500 studies, 40% of the
training reports' findings left unmentioned), made once and cached under ``--work-dir``; then GRPO variants at an
equal budget (``--steps`` optimizer steps of 4 prompts x 8 generations, from the same checkpoint), each evaluated
on the whole test split (150 studies, complete references):

- ``full``: the quickstart's reward block (``recipes/quickstart/grpo.yaml``) with its linear schedule, whose
  ``total_steps`` is set to ``--steps`` so that the weight actually moves from the low level to the semantic one
  within the budget (alpha_low 1 -> 0.1);
- ``constant``: the same rewards with fixed weights (``constant`` schedule, alpha_low 0.5);
- ``no_semantic``: the low level only (token, concept, format, clinical, consistency), linear schedule (with
  group-normalised advantages a common factor on every reward changes nothing, so this is the low level at fixed
  relative weights);
- ``no_concept`` / ``no_token``: ``full`` without the concept / token reward.

Every cell's predictions are scored with the same yardstick, the quickstart's reward block at its end weights
(``reward_total_end``), next to CE micro/macro F1 (14 and 5 observations), BLEU-4 and ROUGE-L.

    OMP_NUM_THREADS=1 python benchmarks/ablation.py                            # the sweep (every variant x seed)
    OMP_NUM_THREADS=1 python benchmarks/ablation.py --variant full --seed 1    # one cell (recorded, then summarised)

Each cell writes ``<work-dir>/<variant>/seed<S>/cell.json``; a cell with that file is not run again (``--force``
reruns it). After a cell or the sweep, every ``cell.json`` found is gathered into ``--output``: a ``runs`` list (one
entry per run: ``variant``, ``seed``, ``metrics``, ``seconds``, ``load_avg``) and a ``summary`` (mean, sample std,
min, max over seeds per variant and metric).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
GRPO_RECIPE = ROOT / "recipes" / "quickstart" / "grpo.yaml"
SFT_RECIPE = ROOT / "recipes" / "quickstart" / "sft.yaml"
VARIANTS = ("full", "constant", "no_semantic", "no_concept", "no_token")
OPTIONAL = ("no_token",)  # run after every seed of the others ("where the budget allows")
SEEDS = (0, 1, 2)
# The README table's columns; the JSON records these and the rest of METRICS.
TABLE_METRICS = (
    "ce_micro_f1_14",
    "ce_macro_f1_14",
    "ce_micro_f1_5",
    "ce_macro_f1_5",
    "reward_total_end",
    "bleu_4",
    "rouge_l",
)
METRICS = (
    *TABLE_METRICS,
    "format_rate",
    "length_mean",
    "reward/clinical",
    "reward/semantic",
    "reward/token",
    "reward/concept",
)


def variant_block(variant: str, steps: int) -> dict[str, Any]:
    """The ``schedule`` and ``rewards`` overrides of a variant, derived from the quickstart's GRPO recipe."""
    recipe = yaml.safe_load(GRPO_RECIPE.read_text())
    rewards = list(recipe["rewards"])
    schedule = {**recipe["schedule"], "total_steps": steps}  # scaled to the run, so the weights move within it
    if variant == "full":
        pass
    elif variant == "constant":
        schedule = {"name": "constant", "alpha_low": 0.5}
    elif variant == "no_semantic":
        rewards = [entry for entry in rewards if entry["name"] != "semantic"]
    elif variant in ("no_concept", "no_token"):
        rewards = [entry for entry in rewards if entry["name"] != variant.removeprefix("no_")]
    else:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    return {"schedule": schedule, "rewards": rewards}


def evaluation(work_dir: Path, samples: int):
    from himed.trainers.pipeline import EvaluationConfig

    return EvaluationConfig(
        data_path=str(work_dir / "demo"),
        split="test",
        max_samples=samples,
        max_new_tokens=80,
        batch_size=50,
        clean="none",
        rewards=str(GRPO_RECIPE),  # one yardstick for every variant: the full block at its end weights
    )


def shared_sft(work_dir: Path, samples: int) -> Path:
    """Demo data, the tiny model and the SFT checkpoint, made once (the pipeline's markers skip what is done)."""
    from himed.trainers.pipeline import COMPLETE_MARKER, PipelineConfig, StageConfig, run_pipeline

    if (work_dir / "sft" / COMPLETE_MARKER).is_file() and (work_dir / "sft" / "eval" / "metrics.json").is_file():
        return work_dir / "sft"  # cached; cells running in parallel must not rewrite the pipeline's files
    config = PipelineConfig(
        output_dir=str(work_dir),
        base_model=str(work_dir / "tiny-model"),
        prepare=[
            ["data", "demo", "--out-dir", str(work_dir / "demo"), "--n", "1500", "--seed", "0", "--omit-rate", "0.4"],
            ["model", "tiny", "--arch", "qwen2_5_vl", "--out-dir", str(work_dir / "tiny-model"), "--seed", "0"],
        ],
        stages=[
            StageConfig(name="sft", kind="sft", recipe=str(SFT_RECIPE), overrides={"data_path": str(work_dir / "demo")})
        ],
        evaluate=evaluation(work_dir, samples),
        evaluate_base=False,
    )
    run_pipeline(config)
    return work_dir / "sft"


def run_cell(variant: str, seed: int, work_dir: Path, steps: int, samples: int, force: bool) -> dict[str, Any]:
    """Train and evaluate one (variant, seed) cell from the shared SFT checkpoint; returns its record."""
    from himed.trainers.pipeline import PipelineConfig, StageConfig, run_pipeline

    cell_dir = work_dir / variant / f"seed{seed}"
    record_path = cell_dir / "cell.json"
    if record_path.is_file() and not force:
        return json.loads(record_path.read_text())
    if force and cell_dir.exists():
        import shutil

        shutil.rmtree(cell_dir)
    sft = shared_sft(work_dir, samples)
    block = variant_block(variant, steps)
    overrides = {
        "data_path": str(work_dir / "demo"),
        "seed": seed,
        "max_steps": steps,
        "save_strategy": "no",
        "schedule": block["schedule"],
        "rewards": block["rewards"],
    }
    config = PipelineConfig(
        output_dir=str(cell_dir),
        base_model=str(sft),
        stages=[StageConfig(name="grpo", kind="grpo", recipe=str(GRPO_RECIPE), overrides=overrides)],
        evaluate=evaluation(work_dir, samples),
        evaluate_base=False,
    )
    load_before = os.getloadavg()
    started = time.perf_counter()
    summary = run_pipeline(config)
    seconds = time.perf_counter() - started
    metrics = json.loads((cell_dir / "grpo" / "eval" / "metrics.json").read_text())["metrics"]
    record = {
        "variant": variant,
        "seed": seed,
        "steps": steps,
        "eval_samples": samples,
        "schedule": block["schedule"],
        "rewards": [entry["name"] for entry in block["rewards"]],
        "metrics": {key: metrics[key] for key in METRICS if key in metrics},
        "seconds": round(seconds, 1),
        "stage_seconds": {key: round(value, 1) for key, value in summary["timings_s"].items()},
        # 1-minute load average before and after: the machine is shared, so timings are only comparable with it.
        "load_avg": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def summarise(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per variant and metric: mean, sample std (0 for one seed), min, max and the number of seeds."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for variant in dict.fromkeys(record["variant"] for record in records):
        runs = [record for record in records if record["variant"] == variant]
        summary[variant] = {}
        for key in METRICS:
            values = [run["metrics"][key] for run in runs if key in run["metrics"]]
            if values:
                summary[variant][key] = {
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "min": min(values),
                    "max": max(values),
                    "n": len(values),
                }
    return summary


def gather(work_dir: Path, output: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Every cell record under ``work_dir`` (in variant, seed order) into ``output``, with the summary."""
    records = []
    for variant in VARIANTS:
        for path in sorted((work_dir / variant).glob("seed*/cell.json"), key=lambda p: int(p.parent.name[4:])):
            records.append(json.loads(path.read_text()))
    sft_metrics = work_dir / "sft" / "eval" / "metrics.json"
    result = {
        **meta,
        "sft": (
            {key: value for key, value in json.loads(sft_metrics.read_text())["metrics"].items() if key in METRICS}
            if sft_metrics.is_file()
            else None
        ),
        "runs": records,
        "summary": summarise(records),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    return result


def markdown_table(result: dict[str, Any]) -> str:
    """The README's table: per variant, each metric's mean +- sample std over seeds (n seeds), the SFT row first."""
    header = ["variant", "seeds", *TABLE_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * len(TABLE_METRICS)]
    if result.get("sft"):
        lines.append("| SFT (start) | - | " + " | ".join(f"{result['sft'][k]:.3f}" for k in TABLE_METRICS) + " |")
    for variant, metrics in result["summary"].items():
        n = metrics[TABLE_METRICS[0]]["n"]
        cells = [f"{metrics[k]['mean']:.3f} ± {metrics[k]['std']:.3f}" for k in TABLE_METRICS]
        lines.append(f"| {variant} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, help="run this variant only (with --seed: one cell)")
    parser.add_argument("--seed", type=int, help="run this seed only")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="the sweep's variants, comma-separated")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="the sweep's seeds, comma-separated")
    parser.add_argument("--steps", type=int, default=100, help="GRPO optimizer steps per cell (the equal budget)")
    parser.add_argument("--eval-samples", type=int, default=150, help="test studies evaluated per cell")
    parser.add_argument("--jobs", type=int, default=2, help="cells trained at once (one core each)")
    parser.add_argument("--work-dir", default="runs/ablation", help="the cached SFT checkpoint and every cell")
    parser.add_argument("--output", default="benchmarks/results/ablation.json")
    parser.add_argument("--force", action="store_true", help="rerun cells that already have a record")
    parser.add_argument("--no-gather", action="store_true", help=argparse.SUPPRESS)  # the sweep's own children
    parser.add_argument("--table", action="store_true", help="print the recorded results as a markdown table")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads((ROOT / args.output).read_text())))
        return

    work_dir = (ROOT / args.work_dir).resolve() if not Path(args.work_dir).is_absolute() else Path(args.work_dir)
    variants = [args.variant] if args.variant else [v for v in args.variants.split(",") if v]
    seeds = [args.seed] if args.seed is not None else [int(s) for s in args.seeds.split(",") if s]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    load_before = os.getloadavg()
    if len(variants) * len(seeds) == 1:
        record = run_cell(variants[0], seeds[0], work_dir, args.steps, args.eval_samples, args.force)
        print(json.dumps(record, indent=2))
    else:
        shared_sft(work_dir, args.eval_samples)  # once, before the cells that share it
        # Seed-major, the optional variant last: if the budget runs out, what is done is balanced over variants.
        cells = [(variant, seed) for seed in seeds for variant in variants if variant not in OPTIONAL]
        cells += [(variant, seed) for variant in variants if variant in OPTIONAL for seed in seeds]

        def child(cell: tuple[str, int]) -> int:
            command = [sys.executable, __file__, "--variant", cell[0], "--seed", str(cell[1]), "--no-gather"]
            command += ["--steps", str(args.steps), "--eval-samples", str(args.eval_samples)]
            command += ["--work-dir", str(work_dir), "--output", args.output] + (["--force"] if args.force else [])
            return subprocess.run(command, cwd=ROOT, check=False).returncode

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            codes = list(pool.map(child, cells))
        failed = [cell for cell, code in zip(cells, codes, strict=True) if code]
        if failed:
            print(f"failed cells: {failed}", file=sys.stderr)
    if args.no_gather:
        return
    meta = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/ablation.py " + " ".join(sys.argv[1:]),
        "steps": args.steps,
        "eval_samples": args.eval_samples,
        "jobs": args.jobs,
        "cpu_count": os.cpu_count(),
        "last_invocation_seconds": round(time.perf_counter() - started, 1),
        "last_invocation_load_avg": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    result = gather(work_dir, ROOT / args.output, meta)
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
