"""`himed pipeline FILE.yaml` (see himed/trainers/pipeline.py)."""

from __future__ import annotations


def _pipeline(args) -> int:
    from himed.trainers.pipeline import PipelineConfig, run_pipeline

    run_pipeline(PipelineConfig.from_file(args.file))
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
