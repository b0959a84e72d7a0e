"""Recipe configuration: YAML read into typed dataclasses, command-line flags overriding YAML.

A recipe YAML is flat, as in TRL and open-r1: its keys are the fields of TRL's ``GRPOConfig``/``SFTConfig``, TRL's
``ModelConfig`` (model path, dtype, LoRA), himed's ``DataArguments`` and, for GRPO, the reward block of DESIGN.md
section 3 (``schedule``, ``rewards``, ``impute``), which is the same block that ``himed score --config`` reads.
Unknown keys are errors (a key that silently does nothing is worse than a crash). The first line of every recipe
YAML is the command that runs it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from trl import GRPOConfig

from himed.data.sections import DEFAULT_SECTIONS, validate_sections

ON_BAD_ROWS = ("error", "skip")
THINK_MODES = ("labels", "empty")
SFT_STAGES = ("cold_start", "weighted", "observation", "hierarchical")


@dataclass
class DataArguments:
    """Where the study rows come from and how prompts and targets are built from them."""

    data_format: str = field(
        default="r2gen",
        metadata={"help": "Loader: r2gen (annotation.json + images/), mimic_cxr_jpg, jsonl or hf_disk."},
    )
    data_path: str | None = field(
        default=None, metadata={"help": "Dataset root (r2gen, mimic_cxr_jpg), file (jsonl) or save_to_disk folder."}
    )
    train_split: str = field(default="train", metadata={"help": "Split used for training."})
    eval_split: str | None = field(default=None, metadata={"help": "Split used for evaluation during training."})
    sections: list[str] = field(
        default_factory=lambda: list(DEFAULT_SECTIONS),
        metadata={"help": "Completion sections, in order: [think, finding, impression] or [think, finding]."},
    )
    include_indication: bool = field(default=True, metadata={"help": "Put the row's indication in the prompt."})
    include_prior: bool = field(default=True, metadata={"help": "Put the row's prior report in the prompt."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N evaluation rows."})
    on_bad_rows: str = field(
        default="error",
        metadata={"help": "error: stop at the first bad row naming file and row; skip: count, log and drop it."},
    )
    check_images: str = field(
        default="verify",
        metadata={
            "help": "Image check while loading: none, open (header), verify (PIL verify; true means this), or decode "
            "(every pixel, in parallel with a progress bar: catches truncated JPEGs). Results are cached per dataset "
            "by file size and mtime, so the ranks of a run and later runs check once (docs/images.md)."
        },
    )
    min_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Image budget (Qwen's min_pixels): smallest resized image, in pixels; null keeps the model "
            "folder's value. Saved into every stage's output folder (docs/images.md)."
        },
    )
    max_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Image budget (Qwen's max_pixels): largest resized image, in pixels (28*28 px per visual token "
            "for Qwen2.5-VL); null keeps the model folder's value (12,845,056 for Qwen2.5-VL-3B/7B-Instruct)."
        },
    )
    max_visual_tokens_per_study: int | None = field(
        default=None,
        metadata={
            "help": "A study whose images exceed this many visual tokens in all is a bad row (error or skip per "
            "on_bad_rows); null: no limit, only the start-of-stage log line on a sample."
        },
    )
    reports_csv: str | None = field(
        default=None, metadata={"help": "mimic_cxr_jpg only: the sectioned report CSV (findings/impression)."}
    )

    def __post_init__(self):
        self.sections = list(validate_sections(self.sections))
        if self.on_bad_rows not in ON_BAD_ROWS:
            raise ValueError(f"on_bad_rows must be one of {ON_BAD_ROWS}, got {self.on_bad_rows!r}")
        from himed.data.rows import image_check_level
        from himed.models.image_budget import validate_budget

        self.check_images = image_check_level(self.check_images)
        validate_budget(self.min_pixels, self.max_pixels)
        if self.max_visual_tokens_per_study is not None and self.max_visual_tokens_per_study < 1:
            raise ValueError(
                f"max_visual_tokens_per_study must be >= 1 or null, got {self.max_visual_tokens_per_study}"
            )

    def loader_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"on_bad": self.on_bad_rows, "check_images": self.check_images}
        if self.reports_csv is not None:
            options["reports_csv"] = self.reports_csv
        return options


@dataclass
class RewardArguments:
    """The reward block of DESIGN.md section 3, plus what may leave the machine."""

    schedule: str | None = field(
        default=None,
        metadata={"help": "Weight schedule, e.g. {name: linear, total_steps: 10000, alpha_min: 0.1} (YAML or JSON)."},
    )
    rewards: str | None = field(
        default=None,
        metadata={"help": "Reward entries: [{name, kwargs, as, level, weight}, ...] (YAML list, or JSON on the CLI)."},
    )
    impute: str = field(
        default="group_mean",
        metadata={"help": "How a failed (None) reward component is filled per group: group_mean or zero."},
    )
    allow_remote_patient_data: bool = field(
        default=False,
        metadata={
            "help": "Allow completions/images to reach remote loggers (report_to) or the hub. Off by default: "
            "report text and images are patient data."
        },
    )

    def reward_block(self) -> dict[str, Any]:
        """The block as a plain mapping for himed.rewards.config.RewardsConfig.from_dict."""
        block: dict[str, Any] = {"impute": self.impute}
        for name in ("schedule", "rewards"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = json.loads(value) if value.strip()[:1] in "[{" else yaml.safe_load(value)
            if value is not None:
                block[name] = value
        if "rewards" not in block:
            raise ValueError("a GRPO recipe needs a 'rewards' list (DESIGN.md section 3)")
        return block


@dataclass
class SFTStageArguments:
    """Which supervised stage runs and how its targets and loss are built."""

    stage: str = field(
        default="cold_start",
        metadata={
            "help": "Supervised stage: cold_start (tagged report targets, plain completion loss); weighted "
            "(LLM-RG4: cold-start targets, tokens of positive/uncertain sentences weighted by positive_weight); "
            "observation (DCRRG: one 'Describe the <observation>.' prompt per observation, answered by the "
            "report's sentences about it; run before the full-report stage); hierarchical (Hi-MrGn: the findings, then "
            "the impression conditioned on the images and the findings, as two turns; needs the impression section)."
        },
    )
    think: str = field(
        default="labels",
        metadata={"help": "Text of <think> in SFT targets: labels (a short rationale from the row's labels) or empty."},
    )
    positive_weight: float = field(
        default=1.75,
        metadata={
            "help": "weighted stage only: loss weight (lambda, > 0, unitless; other tokens weigh 1) of the tokens of "
            "sentences in which the rule labeler finds a positive or uncertain mention (LLM-RG4, 1.75 there)."
        },
    )
    observations: str = field(
        default="five",
        metadata={"help": "observation stage only: five (DESIGN.md section 3) or all (the 14 CheXbert names)."},
    )

    def __post_init__(self):
        from himed.clinical.observations import observation_set

        if self.stage not in SFT_STAGES:
            raise ValueError(f"stage must be one of {SFT_STAGES}, got {self.stage!r}")
        if self.think not in THINK_MODES:
            raise ValueError(f"think must be one of {THINK_MODES}, got {self.think!r}")
        if not self.positive_weight > 0:
            raise ValueError(f"positive_weight must be > 0 (1 = unweighted), got {self.positive_weight!r}")
        observation_set(self.observations)  # raises with the allowed names


@dataclass
class HimedGRPOConfig(GRPOConfig):
    """TRL's GRPOConfig plus what himed hands TRL's colocated vLLM engine (himed.trainers.vllm_engine)."""

    vllm_dtype: str = field(
        default="match",
        metadata={
            "help": "dtype of the colocated vLLM rollout engine (vllm_mode: colocate). match (default): the trainer's "
            "own compute dtype, i.e. the policy's dtype as loaded from the recipe's `dtype` (bfloat16/float16 under "
            "bf16/fp16 mixed precision), so that rollout and trainer logprobs agree (docs/vllm.md). TRL alone passes "
            "no dtype and vLLM then runs a float32 checkpoint in bfloat16, which TRL's importance sampling silently "
            "corrects for every step. float32 / bfloat16 / float16: that dtype; auto: vLLM's own choice. A vLLM "
            "server's dtype is its own --dtype flag."
        },
    )

    def __post_init__(self):
        from himed.trainers.vllm_engine import ROLLOUT_DTYPES

        super().__post_init__()
        if self.vllm_dtype not in ROLLOUT_DTYPES:
            raise ValueError(f"vllm_dtype must be one of {ROLLOUT_DTYPES}, got {self.vllm_dtype!r}")


def first_line_command(path: str | Path) -> str:
    """The command a recipe YAML documents on its first line (a comment)."""
    with open(path) as handle:
        first = handle.readline().strip()
    if not first.startswith("#"):
        raise ValueError(f"{path}: the first line must be a comment giving the command that runs this recipe")
    return first.lstrip("#").strip()


def parse_recipe(dataclass_types: Sequence[type], args: Sequence[str] | None = None) -> tuple:
    """Parse ``--config FILE`` plus command-line overrides into instances of ``dataclass_types``.

    Uses TRL's ``TrlParser`` (YAML values become defaults, flags override them); unknown keys in the YAML or on the
    command line are errors. Dict- and list-valued keys (``schedule``, ``rewards``) are taken from YAML as they are.
    """
    from trl import TrlParser

    parser = TrlParser(dataclass_types=list(dataclass_types))
    return tuple(parser.parse_args_and_config(args=list(args) if args is not None else None))


def validate_recipe_file(path: str | Path, dataclass_types: Sequence[type]) -> tuple:
    """Load a recipe YAML against ``dataclass_types`` without training (used by the recipe tests)."""
    first_line_command(path)
    return parse_recipe(dataclass_types, ["--config", str(path)])


def field_names(dataclass_type: type) -> set[str]:
    return {f.name for f in fields(dataclass_type)}
