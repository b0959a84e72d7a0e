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
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

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


@dataclass
class ValidatedRecipe:
    """A recipe that validated: its kind, the parsed dataclasses (a pipeline: its ``PipelineConfig``), what the
    stage's ``validate`` returned (GRPO: the built ``CompositeReward``) and, for a pipeline, each stage's result."""

    path: str
    kind: str
    parsed: tuple
    checked: Any = None
    stages: list[ValidatedRecipe] = field(default_factory=list)

    def summary(self) -> str:
        """One line: what was validated."""
        if self.kind == "pipeline":
            return f"{self.path}: pipeline of {len(self.stages)} stages, " + ", ".join(
                f"{stage.kind} ({stage.path})" for stage in self.stages
            )
        line = f"{self.path}: {self.kind} recipe"
        names = getattr(self.checked, "names", None)
        return f"{line}, rewards {', '.join(names)}" if names else line


def validate_stage_recipe(kind: str, path: str | Path, flags: Sequence[str] = ()) -> ValidatedRecipe:
    """Parse a stage recipe (plus command-line ``flags``) into its stage's dataclasses and run the stage's
    ``validate``. Raises ValueError naming the file and what to fix."""
    stage = stage_module(kind)
    parsed = parse_recipe(stage.RECIPE_ARGUMENTS, ["--config", str(path), *flags])
    try:
        checked = stage.validate(*parsed)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return ValidatedRecipe(str(path), kind, parsed, checked)


def validate_pipeline(config: PipelineConfig, flags: Sequence[str] = ()) -> list[ValidatedRecipe]:
    """Validate every stage's recipe as the pipeline will run it (its overrides, the previous stage's model, its
    output folder), plus ``flags`` (e.g. ``--bf16 false`` to check GPU recipes on a CPU machine)."""
    results = []
    model_path = config.base_model
    for stage in config.stages:
        output_dir = str(Path(config.output_dir) / stage.name)
        results.append(validate_stage_recipe(stage.kind, stage.recipe, [*stage.flags(model_path, output_dir), *flags]))
        model_path = output_dir
    return results


def validate_recipe(path: str | Path, flags: Sequence[str] = ()) -> ValidatedRecipe:
    """Validate any recipe under recipes/ (a stage or a pipeline) as it would run, loading no model and no data.

    ``flags`` are command-line overrides; for a pipeline they are added to every stage's.
    """
    kind = recipe_kind(path)
    if kind != "pipeline":
        return validate_stage_recipe(kind, path, flags)
    config = PipelineConfig.from_file(path)
    return ValidatedRecipe(str(path), kind, (config,), stages=validate_pipeline(config, flags))
