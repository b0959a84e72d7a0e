"""Recipe configuration: YAML read into typed dataclasses, command-line flags overriding YAML.

A recipe YAML is flat, as in TRL and open-r1: its keys are the fields of TRL's ``GRPOConfig``/``SFTConfig``, TRL's
``ModelConfig`` (model path, dtype, LoRA), himed's ``DataArguments`` and, for GRPO, the reward block
(``schedule``, ``rewards``, ``impute``; ``docs/rewards.md``), which is the same block that ``himed score --config``
reads. Unknown keys are errors (a key that silently does nothing is worse than a crash). The first line of every
recipe YAML is the command that runs it (``himed.trainers.validation`` reads it to know the stage). A pipeline YAML
(``PipelineConfig``) chains stages; ``himed.trainers.pipeline`` runs it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from trl import GRPOConfig

from himed.data.normalize import CLEAN_STYLES, DEFAULT_CLEAN_STYLE
from himed.data.sections import DEFAULT_SECTIONS, validate_sections
from himed.trainers.stages import STAGE_MODULES

ON_BAD_ROWS = ("error", "skip")
THINK_MODES = ("labels", "empty")


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
    allow_remote_patient_data: bool = field(
        default=False,
        metadata={
            "help": "Allow report text, images or a model trained on them to leave the machine (remote loggers with "
            "log_completions, push_to_hub, a completions hub repo). Off by default: they are patient data."
        },
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
        from himed.data.loaders import LOADERS, accepted_loader_options

        self.sections = list(validate_sections(self.sections))
        if self.on_bad_rows not in ON_BAD_ROWS:
            raise ValueError(f"on_bad_rows must be one of {ON_BAD_ROWS}, got {self.on_bad_rows!r}")
        if self.data_format not in LOADERS:
            raise ValueError(f"data_format must be one of {', '.join(LOADERS)}, got {self.data_format!r}")
        unsupported = sorted(set(self.loader_options()) - set(accepted_loader_options(self.data_format)))
        if unsupported:
            raise ValueError(f"{', '.join(unsupported)}: not an option of data_format {self.data_format!r}")
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
    """The reward block of a GRPO recipe (``docs/rewards.md``): a mapping/list from YAML, or a YAML/JSON string
    given as a command-line flag."""

    schedule: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Weight schedule, e.g. {name: linear, total_steps: 10000, alpha_min: 0.1} (YAML or JSON)."},
    )
    rewards: list[dict[str, Any]] | str | None = field(
        default=None,
        metadata={"help": "Reward entries: [{name, kwargs, as, level, weight}, ...] (YAML list, or JSON on the CLI)."},
    )
    impute: str = field(
        default="group_mean",
        metadata={"help": "How a failed (None) reward component is filled per group: group_mean or zero."},
    )
    circuit_breaker: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "When one component's persistent failures stop the run, e.g. {threshold: 0.5, patience: 3, "
            "action: stop} (the default; action warn logs once and trains on); docs/judges.md."
        },
    )

    def reward_block(self) -> dict[str, Any]:
        """The block as a plain mapping for himed.rewards.config.RewardsConfig.from_dict."""
        block: dict[str, Any] = {"impute": self.impute}
        for name in ("schedule", "rewards", "circuit_breaker"):
            value = getattr(self, name)
            if isinstance(value, str):  # a command-line flag: YAML, which JSON is (nearly) a subset of
                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError as error:
                    raise ValueError(f"--{name}: not valid YAML or JSON: {error}") from None
            if value is not None:
                block[name] = value
        if "rewards" not in block:
            raise ValueError("a GRPO recipe needs a 'rewards' list, e.g. rewards: [{name: token}, {name: format}]")
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
        metadata={
            "help": "observation stage only: five (Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural "
            "Effusion) or all (the 14 CheXbert names)."
        },
    )
    consistency_weight: float = field(
        default=0.0,
        metadata={
            "help": "hierarchical stage only: weight (>= 0, unitless, added to the token cross-entropy) of Hi-MrGn's "
            "findings-impression consistency term, an InfoNCE over the impression examples of a micro-batch "
            "(himed.trainers.hierarchical, docs/judges.md); 0 = off (the default)."
        },
    )
    consistency_temperature: float = field(
        default=0.1,
        metadata={
            "help": "hierarchical stage only: temperature tau (> 0) dividing the cosine similarities of the "
            "consistency term's InfoNCE; smaller = sharper."
        },
    )

    def __post_init__(self):
        from himed.clinical.observations import observation_set
        from himed.trainers.sft import STAGES

        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.think not in THINK_MODES:
            raise ValueError(f"think must be one of {THINK_MODES}, got {self.think!r}")
        if not self.positive_weight > 0:
            raise ValueError(f"positive_weight must be > 0 (1 = unweighted), got {self.positive_weight!r}")
        observation_set(self.observations)  # raises with the allowed names
        if not (math.isfinite(self.consistency_weight) and self.consistency_weight >= 0):
            raise ValueError(
                f"consistency_weight must be a finite number >= 0 (0 = off), got {self.consistency_weight!r}"
            )
        if self.consistency_weight > 0 and self.stage != "hierarchical":
            raise ValueError(
                f"consistency_weight applies to the hierarchical stage only (stage is {self.stage!r}); set it to 0 or "
                "use stage: hierarchical"
            )
        if not (math.isfinite(self.consistency_temperature) and self.consistency_temperature > 0):
            raise ValueError(f"consistency_temperature must be > 0, got {self.consistency_temperature!r}")


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


# -- pipeline YAML (himed pipeline FILE.yaml; himed.trainers.pipeline runs it) ----------------------------------------


def _from_mapping(cls, mapping: Any, where: str):
    if not isinstance(mapping, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    try:
        return cls(**mapping)
    except TypeError as error:
        raise ValueError(f"{where}: {error}") from None


@dataclass
class StageConfig:
    name: str = field(metadata={"help": "Stage name; its output goes to output_dir/<name>."})
    kind: str = field(metadata={"help": f"One of {sorted(STAGE_MODULES)}."})
    recipe: str = field(metadata={"help": "The stage's recipe YAML."})
    overrides: dict[str, Any] = field(default_factory=dict, metadata={"help": "Extra --key value flags."})
    evaluate: bool = field(default=True, metadata={"help": "Evaluate this stage's output."})
    launcher: str | None = field(default=None, metadata={"help": "This stage's launcher (default: the pipeline's)."})

    def __post_init__(self):
        if self.kind not in STAGE_MODULES:
            raise ValueError(f"stage {self.name!r}: kind must be one of {sorted(STAGE_MODULES)}, got {self.kind!r}")
        if not Path(self.recipe).is_file():
            raise FileNotFoundError(f"stage {self.name!r}: recipe {self.recipe} not found")

    def flags(self, model_path: str, output_dir: str) -> list[str]:
        """The flags the pipeline adds to the stage's recipe: the previous model, the output folder, ``overrides``."""
        flags = ["--model_name_or_path", model_path, "--output_dir", output_dir]
        for key, value in self.overrides.items():
            flags += [f"--{key}", json.dumps(value) if isinstance(value, dict | list) else str(value)]
        return flags


@dataclass
class EvaluationConfig:
    data_path: str = field(metadata={"help": "Dataset for evaluation."})
    data_format: str = field(default="r2gen", metadata={"help": "Loader name, as in recipes."})
    split: str = field(default="test", metadata={"help": "Split to evaluate."})
    max_samples: int | None = field(default=None, metadata={"help": "Evaluate the first N rows only."})
    max_new_tokens: int = field(default=128, metadata={"help": "Generation budget per report."})
    batch_size: int = field(default=16, metadata={"help": "Generation batch size."})
    clean: str = field(
        default=DEFAULT_CLEAN_STYLE,
        metadata={
            "help": f"Text cleaning before the NLG metrics, as himed evaluate --clean: {', '.join(CLEAN_STYLES)}."
        },
    )
    extra_args: list[str] = field(default_factory=list, metadata={"help": "More `himed evaluate` flags."})
    rewards: str | None = field(
        default=None,
        metadata={"help": "A recipe (or score config) whose reward block also scores each stage's predictions."},
    )

    def __post_init__(self):
        if self.clean not in CLEAN_STYLES:
            raise ValueError(f"evaluate.clean must be one of {', '.join(CLEAN_STYLES)}, got {self.clean!r}")


@dataclass
class PipelineConfig:
    output_dir: str = field(metadata={"help": "Root folder of the run."})
    base_model: str = field(metadata={"help": "Model the first stage starts from."})
    stages: list[StageConfig] = field(metadata={"help": "Training stages, in order."})
    launcher: str = field(default="python", metadata={"help": "How stages are launched: python, or accelerate ..."})
    prepare: list[list[str]] = field(default_factory=list, metadata={"help": "himed sub-commands to run first."})
    evaluate: EvaluationConfig | None = field(default=None, metadata={"help": "Evaluation after each stage."})
    evaluate_base: bool = field(default=True, metadata={"help": "Also evaluate the base model."})

    @classmethod
    def from_file(cls, path: str | Path) -> PipelineConfig:
        with open(path) as handle:
            raw = yaml.safe_load(handle)
        config = _from_mapping(cls, raw, str(path))
        config.stages = [_from_mapping(StageConfig, s, f"{path}: stages[{i}]") for i, s in enumerate(config.stages)]
        names = [stage.name for stage in config.stages]
        if len(set(names)) != len(names) or "base" in names:
            raise ValueError(f"{path}: stage names must be distinct and not 'base': {names}")
        if config.evaluate is not None:
            config.evaluate = _from_mapping(EvaluationConfig, config.evaluate, f"{path}: evaluate")
        for i, step in enumerate(config.prepare):
            if not isinstance(step, list) or not all(isinstance(arg, str) for arg in step):
                raise ValueError(f"{path}: prepare[{i}] must be a list of strings (a himed sub-command)")
        return config
