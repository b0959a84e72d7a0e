"""``himed pipeline FILE.yaml`` (himed/trainers/pipeline.py) and ``himed validate RECIPE.yaml``
(himed/trainers/validation.py)."""

from __future__ import annotations

import argparse


def _pipeline(args) -> int:
    from himed.trainers.pipeline import PipelineConfig, run_pipeline

    run_pipeline(PipelineConfig.from_file(args.file))
    return 0


def _validate(args) -> int:
    from himed.trainers.validation import validate_recipe

    print(f"himed validate: OK: {validate_recipe(args.recipe, args.flags).summary()}")
    return 0


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "pipeline",
        help="run preparation, training stages, evaluation after each, and a comparison table",
        description="Run a pipeline YAML: prepare steps, stages in order (each resumes if complete), evaluation, "
        "and output_dir/comparison.md.",
    )
    parser.add_argument("file", help="pipeline YAML, e.g. recipes/quickstart/pipeline.yaml")
    parser.set_defaults(handler=_pipeline)

    parser = subparsers.add_parser(
        "validate",
        help="check a recipe (SFT, GRPO or pipeline) as it would run, without loading a model or data",
        description="Parse a recipe YAML into its stage's typed configs and run every check its stage runs before "
        "loading anything: unknown keys, field values, data options, the patient-data guard, and for GRPO the "
        "reward block built (reward kwargs, judge keys; no judge is contacted). The stage is read from the recipe's "
        "first line (the command that runs it). Prints one line and exits 0 when the recipe is valid; prints the "
        "error and exits 2 otherwise.",
    )
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/quickstart/grpo.yaml")
    parser.add_argument(
        "flags",
        nargs=argparse.REMAINDER,
        help="command-line overrides as the stage takes them, e.g. --bf16 false --use_cpu true (a pipeline adds "
        "them to every stage)",
    )
    parser.set_defaults(handler=_validate)
