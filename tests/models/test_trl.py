"""TRL's GRPOTrainer and SFTTrainer run on a tiny policy with the processor from ``load_processor``.

These exercise every processor call TRL 1.16 makes for Qwen-VL (chat template with images in the messages,
``__call__`` with padding sides and ``add_special_tokens``, ``batch_decode``, the tokenizer's pad/eos, the image pad
token lookup, ``{% generation %}`` masks for ``assistant_only_loss``), which matters most for the image-only fallback.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from himed.models.loading import load_policy, load_processor

PROMPT = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Write the report."}]}]
TARGET = "<finding>The heart is normal.</finding>"


def _images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (112, 112), (40 * i, 100, 100)) for i in range(n)]


def _common_args(output_dir) -> dict:
    return {
        "output_dir": str(output_dir),
        "max_steps": 1,
        "report_to": [],
        "use_cpu": True,
        "bf16": False,
        "logging_steps": 1,
        "save_strategy": "no",
        "gradient_checkpointing": False,
        "dataloader_num_workers": 0,
    }


@pytest.mark.slow  # ~10 s on 2 busy cores; test_policy covers the processor calls GRPO makes
def test_grpo_step_updates_the_policy(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model, processor = load_policy(tiny_model_dir), load_processor(tiny_model_dir)
    dataset = Dataset.from_list([{"prompt": PROMPT, "image": image} for image in _images(4)])
    seen = []

    def reward(completions, **kwargs):
        texts = [completion[0]["content"] for completion in completions]
        seen.extend(texts)
        return [float(len(text)) for text in texts]

    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    args = GRPOConfig(
        **_common_args(tmp_path),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        learning_rate=1e-2,
    )
    trainer = GRPOTrainer(
        model=model, reward_funcs=reward, args=args, train_dataset=dataset, processing_class=processor
    )
    trainer.train()
    assert len(seen) == 4 and all(isinstance(text, str) for text in seen)
    assert any("loss" in entry for entry in trainer.state.log_history)
    assert any(not torch.equal(before[name], param) for name, param in model.named_parameters())


@pytest.mark.parametrize("assistant_only_loss", [False, True])
def test_sft_step_runs_and_masks_the_prompt(tiny_model_dir, tmp_path, assistant_only_loss):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, processor = load_policy(tiny_model_dir), load_processor(tiny_model_dir)
    if assistant_only_loss:
        # Structured content for every message: Arrow cannot store a column mixing strings and lists of parts.
        answer = {"role": "assistant", "content": [{"type": "text", "text": TARGET}]}
        rows = [{"messages": [*PROMPT, answer], "images": [image]} for image in _images(2)]
    else:
        completion = [{"role": "assistant", "content": TARGET}]
        rows = [{"prompt": PROMPT, "completion": completion, "images": [image]} for image in _images(2)]
    args = SFTConfig(
        **_common_args(tmp_path),
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        max_length=None,
        assistant_only_loss=assistant_only_loss,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=processor)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels = batch["labels"][0]
    if "completion_mask" in batch:
        labels = labels[batch["completion_mask"][0].bool()]
    trained = processor.tokenizer.decode(labels[labels != -100])
    # Only the answer (and its end-of-turn token) is trained on, never the prompt or the image placeholders.
    assert trained == TARGET + "<|im_end|>" + ("" if assistant_only_loss else "\n")
    trainer.train()
    assert any("loss" in entry for entry in trainer.state.log_history)
