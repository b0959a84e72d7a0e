"""The supervised cold start, on TRL's ``SFTTrainer``.

HiMed-RL starts RL from a policy that already writes the tagged format. The cold start trains on prompt/completion
pairs whose completion is the tagged target (``<think>`` holding a short rationale built from the row's labels, or
empty; then the configured sections), so TRL computes a completion-only loss: the prompt and its image tokens carry
no loss. The chat template and prompts are the same as GRPO's, so the RL stage sees the distribution the cold start
was trained on.

``stage`` (``SFTStageArguments``) picks one of the supervised stages of ``STAGES``, each a function that builds the
train/eval datasets and the trainer:

- ``cold_start``: the tagged targets above, TRL's plain completion loss.
- ``weighted``: LLM-RG4's token-weighted loss on the same targets (``himed.trainers.weighted``).
- ``observation``: DCRRG's observation-level stage, one prompt per observation answered by the report's sentences
  about it (``himed.data.observations``); a recipe runs it before a full-report stage.
- ``hierarchical``: Hi-MrGn's two turns, the findings first, then the impression with the findings turn in its
  prompt (``himed.data.examples.hierarchical_examples``). Each turn is its own prompt/completion example, so both
  turns are trained with TRL's completion-only loss and no ``{% generation %}`` template markers are needed;
  ``himed evaluate --hierarchical`` decodes the same two turns.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from trl import SFTConfig, SFTTrainer

logger = logging.getLogger(__name__)


def _report_options(data_args, stage_args) -> dict:
    return {
        "on_bad": data_args.on_bad_rows,
        "sections": data_args.sections,
        "think": stage_args.think,
        "include_indication": data_args.include_indication,
        "include_prior": data_args.include_prior,
    }


def _datasets(build, train_rows, eval_rows, on_bad: str = "error", **options) -> dict:
    """Train/eval datasets whose images decode under the on_bad_rows policy (``himed.data.decode_guard``)."""
    from himed.data.decode_guard import guard_image_decoding

    return {
        "train_dataset": guard_image_decoding(build(train_rows, **options), on_bad, name="train"),
        "eval_dataset": guard_image_decoding(build(eval_rows, **options), on_bad, name="eval") if eval_rows else None,
    }


def cold_start_stage(train_rows, eval_rows, data_args, stage_args, **trainer_kwargs) -> SFTTrainer:
    from himed.data.examples import sft_dataset

    datasets = _datasets(sft_dataset, train_rows, eval_rows, **_report_options(data_args, stage_args))
    return SFTTrainer(**datasets, **trainer_kwargs)


def weighted_stage(train_rows, eval_rows, data_args, stage_args, **trainer_kwargs) -> SFTTrainer:
    from himed.data.examples import sft_dataset
    from himed.trainers.weighted import WeightedSFTTrainer

    options = {**_report_options(data_args, stage_args), "weighted": True}
    datasets = _datasets(sft_dataset, train_rows, eval_rows, **options)
    return WeightedSFTTrainer(**datasets, **trainer_kwargs, positive_weight=stage_args.positive_weight)


def observation_stage(train_rows, eval_rows, data_args, stage_args, **trainer_kwargs) -> SFTTrainer:
    from himed.clinical.observations import observation_set
    from himed.data.examples import observation_dataset

    options = {
        "on_bad": data_args.on_bad_rows,
        "observations": observation_set(stage_args.observations),
        "include_indication": data_args.include_indication,
        "include_prior": data_args.include_prior,
    }
    return SFTTrainer(**_datasets(observation_dataset, train_rows, eval_rows, **options), **trainer_kwargs)


def hierarchical_stage(train_rows, eval_rows, data_args, stage_args, **trainer_kwargs) -> SFTTrainer:
    from himed.data.examples import hierarchical_dataset

    datasets = _datasets(hierarchical_dataset, train_rows, eval_rows, **_report_options(data_args, stage_args))
    return SFTTrainer(**datasets, **trainer_kwargs)


# stage name (SFTStageArguments.stage) -> builder of its trainer; a new stage adds one entry here.
STAGES = {
    "cold_start": cold_start_stage,
    "weighted": weighted_stage,
    "observation": observation_stage,
    "hierarchical": hierarchical_stage,
}


def run_sft(data_args, stage_args, sft_args: SFTConfig, model_args) -> SFTTrainer:
    """Build model and data from a parsed recipe, train the configured stage, and save the policy and processor."""
    from trl import get_peft_config

    from himed.data.decode_guard import log_decode_skips
    from himed.models.image_budget import prepare_stage_images
    from himed.trainers.grpo import resolve_resume
    from himed.trainers.stages import load_stage_model, load_stage_rows, save_stage_output

    model, processor = load_stage_model(model_args)
    train_rows, eval_rows = prepare_stage_images(processor, data_args, *load_stage_rows(data_args))
    trainer = STAGES[stage_args.stage](
        train_rows,
        eval_rows,
        data_args,
        stage_args,
        model=model,
        args=sft_args,
        processing_class=processor,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=resolve_resume(sft_args.resume_from_checkpoint, sft_args.output_dir))
    log_decode_skips(trainer.train_dataset, trainer.eval_dataset)
    save_stage_output(trainer, processor, sft_args.output_dir)
    return trainer


def main(argv: Sequence[str] | None = None) -> SFTTrainer:
    """Entry point of ``recipes/sft.py``: ``--config FILE`` plus flag overrides."""
    from trl import ModelConfig

    from himed.trainers.config import DataArguments, SFTStageArguments, parse_recipe

    data_args, stage_args, sft_args, model_args = parse_recipe(
        [DataArguments, SFTStageArguments, SFTConfig, ModelConfig], argv
    )
    return run_sft(data_args, stage_args, sft_args, model_args)


if __name__ == "__main__":
    main()
