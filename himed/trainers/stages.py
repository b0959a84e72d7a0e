"""What every training stage does the same way (``docs/architecture.md``).

Before anything loads: the patient-data guard and the checks every recipe shares (``check_stage``); each stage
module adds its own in its ``validate`` (GRPO builds its reward there). Then: load the policy and its processor, load
the study rows, resume, train, save. A stage's output folder is always a complete model (weights + processor) that
the next stage, ``himed evaluate`` and vLLM can load: with LoRA, the adapter is merged into the base weights on save
and also kept under ``adapter/`` for those who want it.

A stage kind is a module (``STAGE_MODULES``) with ``RECIPE_ARGUMENTS`` (the dataclasses its recipe is parsed into),
``validate(*parsed)`` (raises ValueError before anything heavy), ``run(*parsed)`` and ``main(argv)``; the pipeline
launches it as ``python -m <module> --config RECIPE`` and ``himed validate`` runs its ``validate``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

# Stage kind -> the module that trains it (run with `python -m` or `accelerate launch -m`).
STAGE_MODULES = {"sft": "himed.trainers.sft", "grpo": "himed.trainers.grpo"}
REMOTE_LOGGERS_SAFE = ("none", "tensorboard")  # tensorboard writes local files only


def check_patient_data_policy(args, allow_remote_patient_data: bool) -> None:
    """Refuse a trainer config (TRL's GRPOConfig or SFTConfig) that would send report text, images or a model
    trained on them off the machine, unless the recipe sets ``allow_remote_patient_data: true``."""
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


def check_stage(data_args, trainer_args, model_args) -> None:
    """The checks every stage's recipe shares, before anything loads (the dataclasses checked their own fields)."""
    check_patient_data_policy(trainer_args, data_args.allow_remote_patient_data)
    if not model_args.model_name_or_path:
        raise ValueError("the recipe needs model_name_or_path (a hub id or a local folder)")
    if not data_args.data_path:
        raise ValueError("the recipe needs data_path (the dataset folder or file)")


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


def load_stage_model(model_args):
    """The policy and processor named by TRL's ``ModelConfig``."""
    from himed.models.loading import load_policy, load_processor

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


def train_and_save(trainer, processor, args):
    """Train (resuming from ``args.resume_from_checkpoint``: a folder, or ``last``) and save the stage's output."""
    from himed.data.decode_guard import log_decode_skips

    trainer.train(resume_from_checkpoint=resolve_resume(args.resume_from_checkpoint, args.output_dir))
    log_decode_skips(trainer.train_dataset, trainer.eval_dataset)  # images that failed to decode, counted and named
    save_stage_output(trainer, processor, args.output_dir)
    return trainer
