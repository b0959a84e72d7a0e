"""GRPO with the HiMed-RL scheduled hierarchical reward, on TRL's ``GRPOTrainer``.

What himed adds to TRL, and nothing else:

- **Scheduled weights** (HiMed-RL eq. 8-10). Before each generation the effective weight of every reward component
  becomes ``alpha_level(t) * w_i``, with ``t`` the trainer's global optimizer step when the completions are
  generated; TRL's weighted sum (``reward_weights``) then *is* the composite of eq. 8. ``schedule/alpha_low``,
  ``schedule/alpha_high`` and each ``rewards/<name>/weight`` are logged.
- **Neutral imputation** of failed components (DESIGN.md section 3). TRL turns a ``None`` into NaN and ``nansum``
  then counts it as 0, which moves that completion's advantage. We impute on the tensor that
  ``_calculate_rewards`` returns, already gathered across processes, so every group is whole on every rank: a
  failed value takes its group's mean of that component (or 0 with ``impute: zero``); a group where every value
  failed gets 0, constant within the group. ``rewards/<name>/failure_rate`` is logged.
- **Provenance**: every checkpoint gets ``himed_rewards.json`` (reward block, schedule, each reward's description,
  e.g. a judge's prompt hash), so a run can be audited and resumed with the same reward.
- **Patient data stays local**: report text and images never reach a remote logger or the hub unless the recipe
  sets ``allow_remote_patient_data: true``.

Everything else is TRL's, passed through unchanged: ``loss_type``, ``beta``, ``epsilon``, ``num_generations``, vLLM
colocate/server rollout, PEFT/LoRA, gradient checkpointing, bf16, DeepSpeed through accelerate.

Where TRL's defaults depart from the paper (HiMed-RL trains GRPO with a KL term): TRL 1.16 defaults to
``loss_type: dapo`` and ``beta: 0.0``; the paper's setting is ``loss_type: grpo`` and ``beta: 0.1``. The Qwen
recipes set the paper's values explicitly; the CPU quickstart keeps ``beta: 0`` (no reference model: half the memory
and time on a laptop).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer

from himed.rewards.composite import build_reward_functions, effective_weights, failure_rates, impute
from himed.rewards.config import RewardsConfig
from himed.rewards.schedules import build_schedule
from himed.trainers.vllm_engine import adapt_colocate_generation, left_pad_processor, trainer_engine_options

logger = logging.getLogger(__name__)

PROVENANCE_FILE = "himed_rewards.json"
REMOTE_LOGGERS_SAFE = ("none", "tensorboard")  # tensorboard writes local files only


def check_patient_data_policy(args: GRPOConfig, allow_remote_patient_data: bool) -> None:
    """Refuse configurations that would send report text or images off the machine, unless explicitly allowed."""
    if allow_remote_patient_data:
        return
    report_to = args.report_to if isinstance(args.report_to, list) else [args.report_to]
    remote = [name for name in report_to if name and name not in REMOTE_LOGGERS_SAFE]
    problems = []
    if remote and (getattr(args, "log_completions", False) or getattr(args, "log_multimodal", False)):
        problems.append(f"log_completions/log_multimodal with report_to={remote} would upload reports and images")
    if getattr(args, "log_completions_hub_repo", None):
        problems.append("log_completions_hub_repo would push completions to the hub")
    if getattr(args, "push_to_hub", False):
        problems.append("push_to_hub would publish a model trained on patient data")
    if problems:
        raise ValueError(
            "patient data would leave this machine: " + "; ".join(problems) + ". Set allow_remote_patient_data: true "
            "in the recipe if your data governance allows it."
        )


class HimedGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with scheduled hierarchical reward weights and neutral imputation (module docstring)."""

    def __init__(
        self,
        *args: Any,
        rewards_config: RewardsConfig,
        sections: Sequence[str],
        grpo_args: GRPOConfig,
        rollout_mm_processor_kwargs: dict[str, int] | None = None,
        **kwargs: Any,
    ):
        self.rewards_config = rewards_config
        self.reward_components = build_reward_functions(rewards_config, sections=sections)
        self.schedule = build_schedule(rewards_config.schedule)
        self.impute_mode = rewards_config.impute
        grpo_args.reward_weights = list(effective_weights(self.reward_components, self.schedule, 0))
        left_pad_processor(kwargs.get("processing_class"))
        # vLLM colocate: the engine TRL builds gets the trainer's dtype (himed.trainers.vllm_engine, docs/vllm.md).
        # and the recipe's image budget (rollout_mm_processor_kwargs: image_budget_kwargs of the recipe).
        model = kwargs.get("model", args[0] if args else None)
        with trainer_engine_options(grpo_args, model, rollout_mm_processor_kwargs):
            super().__init__(
                *args, args=grpo_args, reward_funcs=[component.fn for component in self.reward_components], **kwargs
            )
        adapt_colocate_generation(self)

    @property
    def component_names(self) -> list[str]:
        return [component.name for component in self.reward_components]

    def _mode(self) -> str:
        return "train" if self.model.training else "eval"

    def apply_schedule(self, step: int, mode: str = "train") -> list[float]:
        """Set TRL's reward weights to alpha_level(step) * w_i and log the schedule (HiMed-RL eq. 8-10)."""
        weights = list(effective_weights(self.reward_components, self.schedule, step))
        self.reward_weights = torch.tensor(weights, dtype=torch.float32)
        alphas = self.schedule.alphas(step)
        self._metrics[mode]["schedule/alpha_low"].append(float(alphas["low"]))
        self._metrics[mode]["schedule/alpha_high"].append(float(alphas["high"]))
        for name, weight in zip(self.component_names, weights, strict=True):
            self._metrics[mode][f"rewards/{name}/weight"].append(float(weight))
        return weights

    def _generate_and_score_completions(self, inputs):
        self.apply_schedule(self.state.global_step, self._mode())
        return super()._generate_and_score_completions(inputs)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        gathered = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        mode = self._mode()
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        for name, rate in zip(self.component_names, failure_rates(gathered), strict=True):
            self._metrics[mode][f"rewards/{name}/failure_rate"].append(float(rate))
        return impute(gathered, group_size=group_size, mode=self.impute_mode)

    def provenance(self) -> dict[str, Any]:
        """What defines this run's reward, written next to every checkpoint."""
        described = {}
        for component in self.reward_components:
            describe = getattr(component.fn, "describe", None)
            if callable(describe):
                described[component.name] = describe()
        return {
            "rewards": self.rewards_config.to_dict(),
            "components": [{"name": c.name, "level": c.level, "weight": c.weight} for c in self.reward_components],
            "descriptions": described,
            "global_step": self.state.global_step,
            "effective_weights": [float(w) for w in self.reward_weights],
        }

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            if folder.is_dir():
                (folder / PROVENANCE_FILE).write_text(json.dumps(self.provenance(), indent=2, default=str))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            folder = Path(output_dir or self.args.output_dir)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / PROVENANCE_FILE).write_text(json.dumps(self.provenance(), indent=2, default=str))


def resolve_resume(resume: str | None, output_dir: str) -> str | None:
    """``last`` means the newest checkpoint in output_dir (None when there is none yet)."""
    if resume in (None, "", "none", "false", "False"):
        return None
    if resume in ("last", "true", "True"):
        from transformers.trainer_utils import get_last_checkpoint

        return get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    if not os.path.isdir(resume):
        raise FileNotFoundError(f"resume_from_checkpoint: no checkpoint folder at {resume}")
    return resume


def run_grpo(data_args, reward_args, grpo_args: GRPOConfig, model_args) -> HimedGRPOTrainer:
    """Build model, data and rewards from a parsed recipe, train, and save the policy with its processor."""
    from trl import get_peft_config

    from himed.data.decode_guard import guard_image_decoding, log_decode_skips
    from himed.data.examples import grpo_dataset
    from himed.models.image_budget import image_budget_kwargs, prepare_stage_images
    from himed.trainers.stages import load_stage_model, load_stage_rows, save_stage_output

    check_patient_data_policy(grpo_args, reward_args.allow_remote_patient_data)
    rewards_config = RewardsConfig.from_dict(reward_args.reward_block(), where="recipe reward block")
    model, processor = load_stage_model(model_args)
    train_rows, eval_rows = prepare_stage_images(processor, data_args, *load_stage_rows(data_args))
    prompt_options = {
        "sections": data_args.sections,
        "include_indication": data_args.include_indication,
        "include_prior": data_args.include_prior,
    }
    trainer = HimedGRPOTrainer(
        model=model,
        processing_class=processor,
        # Images decode under on_bad_rows: a bad one is an error naming the study, or a counted, logged skip.
        train_dataset=guard_image_decoding(grpo_dataset(train_rows, **prompt_options), data_args.on_bad_rows),
        eval_dataset=guard_image_decoding(grpo_dataset(eval_rows, **prompt_options), data_args.on_bad_rows, name="eval")
        if eval_rows
        else None,
        peft_config=get_peft_config(model_args),
        rewards_config=rewards_config,
        sections=data_args.sections,
        grpo_args=grpo_args,
        rollout_mm_processor_kwargs=image_budget_kwargs(data_args),
    )
    trainer.train(resume_from_checkpoint=resolve_resume(grpo_args.resume_from_checkpoint, grpo_args.output_dir))
    log_decode_skips(trainer.train_dataset, trainer.eval_dataset)
    save_stage_output(trainer, processor, grpo_args.output_dir)
    return trainer


def main(argv: Sequence[str] | None = None) -> HimedGRPOTrainer:
    """Entry point of ``recipes/himed_grpo.py``: ``--config FILE`` plus flag overrides."""
    from trl import ModelConfig

    from himed.trainers.config import DataArguments, HimedGRPOConfig, RewardArguments, parse_recipe

    data_args, reward_args, grpo_args, model_args = parse_recipe(
        [DataArguments, RewardArguments, HimedGRPOConfig, ModelConfig], argv
    )
    return run_grpo(data_args, reward_args, grpo_args, model_args)


if __name__ == "__main__":
    main()
