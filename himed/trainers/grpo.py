"""GRPO with the HiMed-RL scheduled hierarchical reward, on TRL's ``GRPOTrainer``.

What himed adds to TRL, and nothing else:

- **Scheduled weights** (HiMed-RL eq. 8-10). Before each generation the effective weight of every reward component
  becomes ``alpha_level(t) * w_i``, with ``t`` the trainer's global optimizer step when the completions are
  generated; TRL's weighted sum (``reward_weights``) then *is* the composite of eq. 8. ``schedule/alpha_low``,
  ``schedule/alpha_high`` and each ``rewards/<name>/weight`` are logged.
- **Neutral imputation** of failed components (``docs/rewards.md``). TRL turns a ``None`` into NaN and ``nansum``
  then counts it as 0, which moves that completion's advantage. We impute on the tensor that
  ``_calculate_rewards`` returns, already gathered across processes, so every group is whole on every rank: a
  failed value takes its group's mean of that component (or 0 with ``impute: zero``); a group where every value
  failed gets 0, constant within the group. ``rewards/<name>/failure_rate`` is logged.
- **A circuit breaker** on those failure rates (``circuit_breaker`` in the reward block, on by default): a
  component failing on more than ``threshold`` of the completions for ``patience`` consecutive steps saves a
  checkpoint and stops the run with ``RewardCircuitOpen`` naming it, or warns once (``action: warn``);
  ``rewards/<name>/breaker_open`` is logged (``himed.trainers.circuit_breaker``, docs/judges.md).
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer, ModelConfig

from himed.rewards.composite import CompositeReward
from himed.trainers.circuit_breaker import (
    CircuitBreaker,
    RewardCircuitOpen,
    component_counters,
    trip_message,
    unwatched_names,
)
from himed.trainers.config import DataArguments, HimedGRPOConfig, RewardArguments, parse_recipe
from himed.trainers.stages import check_stage, load_stage_model, load_stage_rows, train_and_save
from himed.trainers.vllm_engine import adapt_colocate_generation, left_pad_processor, trainer_engine_options

logger = logging.getLogger(__name__)

PROVENANCE_FILE = "himed_rewards.json"
# The dataclasses a GRPO recipe is parsed into (himed.trainers.stages: a stage module's interface).
RECIPE_ARGUMENTS = (DataArguments, RewardArguments, HimedGRPOConfig, ModelConfig)


class HimedGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with scheduled hierarchical reward weights and neutral imputation (module docstring).

    ``reward`` (a ``CompositeReward``) supplies TRL's ``reward_funcs`` and, every step, its ``reward_weights``; the
    caller's ``args`` are not modified.
    """

    def __init__(
        self,
        *args: Any,
        reward: CompositeReward,
        rollout_mm_processor_kwargs: dict[str, int] | None = None,
        **kwargs: Any,
    ):
        self.reward = reward
        breaker = reward.config.circuit_breaker if reward.config is not None else None
        self.circuit_breaker = CircuitBreaker(breaker, reward.names, unwatched=unwatched_names(reward.components))
        # Left padding, so mm_token_type_ids line up with TRL's left-padded prompt ids (docs/vllm.md, cause 3).
        left_pad_processor(kwargs.get("processing_class"))
        # vLLM colocate: the engine TRL builds gets the trainer's dtype and the recipe's image budget
        # (rollout_mm_processor_kwargs: image_budget_kwargs of the recipe); himed.trainers.vllm_engine, docs/vllm.md.
        model = kwargs.get("model", args[0] if args else None)
        with trainer_engine_options(kwargs.get("args"), model, rollout_mm_processor_kwargs):
            super().__init__(*args, reward_funcs=reward.functions, **kwargs)
        adapt_colocate_generation(self)
        self.reward_weights = torch.tensor(reward.weights(0), dtype=torch.float32)

    def _mode(self) -> str:
        return "train" if self.model.training else "eval"

    def apply_schedule(self, step: int, mode: str = "train") -> list[float]:
        """Set TRL's reward weights to alpha_level(step) * w_i and log the schedule (HiMed-RL eq. 8-10)."""
        weights = self.reward.weights(step)
        self.reward_weights = torch.tensor(weights, dtype=torch.float32)
        alphas = self.reward.schedule.alphas(step)
        self._metrics[mode]["schedule/alpha_low"].append(float(alphas["low"]))
        self._metrics[mode]["schedule/alpha_high"].append(float(alphas["high"]))
        for name, weight in zip(self.reward.names, weights, strict=True):
            self._metrics[mode][f"rewards/{name}/weight"].append(float(weight))
        return weights

    def _generate_and_score_completions(self, inputs):
        self.apply_schedule(self.state.global_step, self._mode())
        return super()._generate_and_score_completions(inputs)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # TRL's (completions x components) matrix, already gathered across processes: every group is whole here.
        gathered = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        mode = self._mode()
        rates = self.record_failure_rates(gathered, mode)
        if mode == "train":
            self.watch_failures([rates[name] for name in self.reward.names])
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        return self.reward.impute(gathered, group_size=group_size)

    def record_failure_rates(self, gathered: torch.Tensor, mode: str) -> dict[str, float]:
        """Log ``rewards/<name>/failure_rate`` for one gathered batch, before imputation hides the failures."""
        rates = self.reward.failure_rates(gathered)
        for name, rate in rates.items():
            self._metrics[mode][f"rewards/{name}/failure_rate"].append(rate)
        return rates

    def watch_failures(self, rates: Sequence[float]) -> None:
        """The circuit breaker's hook (``himed.trainers.circuit_breaker``): log ``rewards/<name>/breaker_open``; on
        opening, warn once (``action: warn``) or log this step, save a checkpoint and raise ``RewardCircuitOpen``."""
        trips = self.circuit_breaker.observe(self.state.global_step, rates)
        for name, flag in self.circuit_breaker.open_flags().items():
            self._metrics["train"][f"rewards/{name}/breaker_open"].append(flag)
        config = self.circuit_breaker.config
        for trip in trips:
            counters = component_counters(self.reward.components[self.reward.names.index(trip.name)].fn)
            if config.action == "warn":
                if trip.first_time:
                    logger.warning(trip_message(trip, config, counters, None))
                continue
            self.log({})  # the failing step's rates and breaker_open reach log_history and the checkpoint
            self._save_checkpoint(self.model, trial=None)
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            checkpoint = str(Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            message = trip_message(trip, config, counters, checkpoint)
            logger.error(message)
            raise RewardCircuitOpen(message, component=trip.name, checkpoint=checkpoint)

    def provenance(self) -> dict[str, Any]:
        """What defines this run's reward, written next to every checkpoint (never raises on a describe())."""
        return {
            **self.reward.provenance(),
            "global_step": self.state.global_step,
            "effective_weights": [float(w) for w in self.reward_weights],
        }

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            if folder.is_dir():
                self._write_provenance(folder)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            folder = Path(output_dir or self.args.output_dir)
            folder.mkdir(parents=True, exist_ok=True)
            self._write_provenance(folder)

    def _write_provenance(self, folder: Path) -> None:
        (folder / PROVENANCE_FILE).write_text(json.dumps(self.provenance(), indent=2, default=str))


def validate(data_args, reward_args, grpo_args: GRPOConfig, model_args) -> CompositeReward:
    """Everything a parsed GRPO recipe can get wrong, checked before a model or dataset loads; returns the reward.

    The dataclasses checked their own fields when parsed; here: the patient-data guard and the checks every stage
    shares, then the reward block is built once (every reward's kwargs, a judge's keys, without contacting it).
    """
    check_stage(data_args, grpo_args, model_args)
    if grpo_args.reward_weights is not None:
        raise ValueError(
            "reward_weights: himed sets TRL's reward weights from the schedule every step; give each reward entry a "
            "'weight' instead"
        )
    return CompositeReward.from_config(reward_args.reward_block(), sections=data_args.sections, where="recipe")


def run_grpo(data_args, reward_args, grpo_args: GRPOConfig, model_args) -> HimedGRPOTrainer:
    """Build model, data and rewards from a parsed recipe, train, and save the policy with its processor."""
    from trl import get_peft_config

    from himed.data.decode_guard import guard_image_decoding
    from himed.data.examples import grpo_dataset
    from himed.models.image_budget import image_budget_kwargs, prepare_stage_images

    reward = validate(data_args, reward_args, grpo_args, model_args)  # before anything heavy loads
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
        args=grpo_args,
        # Images decode under on_bad_rows: a bad one is an error naming the study, or a counted, logged skip.
        train_dataset=guard_image_decoding(grpo_dataset(train_rows, **prompt_options), data_args.on_bad_rows),
        eval_dataset=guard_image_decoding(grpo_dataset(eval_rows, **prompt_options), data_args.on_bad_rows, name="eval")
        if eval_rows
        else None,
        peft_config=get_peft_config(model_args),
        reward=reward,
        rollout_mm_processor_kwargs=image_budget_kwargs(data_args),
    )
    return train_and_save(trainer, processor, grpo_args)


def main(argv: Sequence[str] | None = None) -> HimedGRPOTrainer:
    """Entry point of ``recipes/himed_grpo.py``: ``--config FILE`` plus flag overrides."""
    return run_grpo(*parse_recipe(RECIPE_ARGUMENTS, argv))


if __name__ == "__main__":
    main()
