"""The supervised cold start, on TRL's ``SFTTrainer``.

HiMed-RL starts RL from a policy that already writes the tagged format. The cold start trains on prompt/completion
pairs whose completion is the tagged target (``<think>`` holding a short rationale built from the row's labels, or
empty; then the configured sections), so TRL computes a completion-only loss: the prompt and its image tokens carry
no loss. The chat template and prompts are the same as GRPO's, so the RL stage sees the distribution the cold start
was trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from trl import SFTConfig, SFTTrainer

logger = logging.getLogger(__name__)


def run_sft(data_args, stage_args, sft_args: SFTConfig, model_args) -> SFTTrainer:
    """Build model and data from a parsed recipe, train the cold start, and save the policy with its processor."""
    from trl import get_peft_config

    from himed.data.examples import sft_dataset
    from himed.trainers.grpo import resolve_resume
    from himed.trainers.stages import load_stage_model, load_stage_rows, save_stage_output

    model, processor = load_stage_model(model_args)
    train_rows, eval_rows = load_stage_rows(data_args)
    options = {
        "sections": data_args.sections,
        "think": stage_args.think,
        "include_indication": data_args.include_indication,
        "include_prior": data_args.include_prior,
    }
    trainer = SFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=sft_dataset(train_rows, **options),
        eval_dataset=sft_dataset(eval_rows, **options) if eval_rows else None,
        processing_class=processor,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=resolve_resume(sft_args.resume_from_checkpoint, sft_args.output_dir))
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
