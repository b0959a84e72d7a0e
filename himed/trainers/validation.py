"""Validate a recipe without loading a model or a dataset: what ``himed validate RECIPE.yaml`` and every stage run
first (``docs/architecture.md``).

A recipe's first line is the command that runs it; ``recipe_kind`` reads the stage from it (``recipes/sft.py`` or
``himed.trainers.sft``: SFT; ``recipes/himed_grpo.py`` or ``himed.trainers.grpo``: GRPO; ``himed pipeline``: a
pipeline). A stage recipe is parsed into its stage's dataclasses (unknown keys and bad field values are errors) and
given to the stage's ``validate`` (the patient-data guard, the shared checks, and for GRPO the reward block built,
judge keys included, without contacting a judge). A pipeline validates each stage's recipe with the flags the
pipeline would add.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from himed.trainers.config import PipelineConfig, first_line_command, parse_recipe
from himed.trainers.stages import STAGE_MODULES

# The entry scripts a recipe's first line may name, by stage kind (python -m names the modules of STAGE_MODULES).
ENTRY_SCRIPTS = {"himed_grpo.py": "grpo", "sft.py": "sft"}


def recipe_kind(path: str | Path) -> str:
    """``grpo``, ``sft`` or ``pipeline``: the stage named by the recipe's first line (the command that runs it)."""
    command = first_line_command(path)
    words = shlex.split(command)
    if words[:2] == ["himed", "pipeline"]:
        return "pipeline"
    modules = {module: kind for kind, module in STAGE_MODULES.items()}
    for word in words:
        kind = ENTRY_SCRIPTS.get(Path(word).name) or modules.get(word)
        if kind:
            return kind
    raise ValueError(
        f"{path}: its first line ({command!r}) names no stage; start the recipe with the command that runs it, "
        f"e.g. '# python recipes/sft.py --config {path}' or '# python -m himed.trainers.grpo --config {path}'"
    )


def stage_module(kind: str) -> ModuleType:
    """The module that trains ``kind`` (the one ``python -m`` runs), with ``RECIPE_ARGUMENTS`` and ``validate``."""
    from himed.trainers import grpo, sft

    return {module.__name__: module for module in (grpo, sft)}[STAGE_MODULES[kind]]


def validate_stage_recipe(kind: str, path: str | Path, flags: Sequence[str] = ()) -> tuple:
    """Parse a stage recipe (plus command-line ``flags``) into its stage's dataclasses and validate it; returns
    the parsed dataclasses. Raises ValueError naming the file and what to fix."""
    stage = stage_module(kind)
    parsed = parse_recipe(stage.RECIPE_ARGUMENTS, ["--config", str(path), *flags])
    try:
        stage.validate(*parsed)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return parsed


def validate_pipeline(config: PipelineConfig) -> None:
    """Validate every stage's recipe as the pipeline will run it (its overrides, a model and an output folder)."""
    model_path = config.base_model
    for stage in config.stages:
        output_dir = str(Path(config.output_dir) / stage.name)
        validate_stage_recipe(stage.kind, stage.recipe, stage.flags(model_path, output_dir))
        model_path = output_dir


def validate_recipe(path: str | Path, flags: Sequence[str] = ()) -> tuple:
    """Validate any recipe under recipes/ (a stage or a pipeline) as it would run, loading no model and no data.

    Returns the parsed dataclasses (for a pipeline: its ``PipelineConfig``, each stage's recipe validated too).
    """
    kind = recipe_kind(path)
    if kind != "pipeline":
        return validate_stage_recipe(kind, path, flags)
    if flags:
        raise ValueError("a pipeline takes no flags; put them in a stage's overrides")
    config = PipelineConfig.from_file(path)
    validate_pipeline(config)
    return (config,)
