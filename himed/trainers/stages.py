"""What every training stage does the same way: load the policy and its processor, load the study rows, save.

A stage's output folder is always a complete model (weights + processor) that the next stage, ``himed evaluate``
and vLLM can load: with LoRA, the adapter is merged into the base weights on save and also kept under
``adapter/`` for those who want it.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def load_stage_model(model_args):
    """The policy and processor named by TRL's ``ModelConfig``."""
    from himed.models.loading import load_policy, load_processor

    if not model_args.model_name_or_path:
        raise ValueError("the recipe needs model_name_or_path (a hub id or a local folder)")
    processor = load_processor(model_args.model_name_or_path)
    model = load_policy(
        model_args.model_name_or_path,
        dtype=model_args.dtype,
        attn_implementation=model_args.attn_implementation,
    )
    return model, processor


def load_stage_rows(data_args) -> tuple[list[dict], list[dict]]:
    """Training rows and (possibly empty) evaluation rows, truncated to max_*_samples."""
    from himed.data.loaders import load_rows

    if not data_args.data_path:
        raise ValueError("the recipe needs data_path")
    options = data_args.loader_options()
    train_rows = load_rows(data_args.data_format, data_args.data_path, data_args.train_split, **options)
    if data_args.max_train_samples is not None:
        train_rows = train_rows[: data_args.max_train_samples]
    eval_rows: list[dict] = []
    if data_args.eval_split:
        eval_rows = load_rows(data_args.data_format, data_args.data_path, data_args.eval_split, **options)
        if data_args.max_eval_samples is not None:
            eval_rows = eval_rows[: data_args.max_eval_samples]
    if not train_rows:
        raise ValueError(f"{data_args.data_path}: split {data_args.train_split!r} has no rows")
    logger.info("training rows: %d, evaluation rows: %d", len(train_rows), len(eval_rows))
    return train_rows, eval_rows


def save_stage_output(trainer, processor, output_dir: str) -> Path:
    """Save a complete, loadable model (LoRA merged) with its processor into output_dir."""
    output = Path(output_dir)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):  # a PEFT model: keep the adapter, publish merged weights
        trainer.save_model(str(output / "adapter"))
        model = model.merge_and_unload()
        if trainer.args.should_save:
            model.save_pretrained(output)
    else:
        trainer.save_model(str(output))
    if trainer.args.should_save:
        processor.save_pretrained(output)
    trainer.accelerator.wait_for_everyone()
    return output
