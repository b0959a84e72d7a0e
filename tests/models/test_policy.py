"""A reloaded tiny policy and processor do what the trainers need: image placeholders, generation, gradients."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from himed.models.loading import load_policy, load_processor

ARCH_DIRS = ["tiny_model_dir", "tiny_qwen3_dir"]


def _image(side: int, shade: int = 128) -> Image.Image:
    return Image.new("RGB", (side, side), (shade, shade // 2, 255 - shade))


def _chat(n_images: int) -> list[dict]:
    content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": "Write the report."}]
    return [{"role": "user", "content": content}]


@pytest.fixture(scope="module")
def policies(request) -> dict:
    """(model, processor) per architecture, loaded once for this module."""
    loaded = {}
    for name in ARCH_DIRS:
        directory = request.getfixturevalue(name)
        loaded[name] = (load_policy(directory), load_processor(directory))
    return loaded


@pytest.mark.parametrize("arch_dir", ARCH_DIRS)
@pytest.mark.parametrize("n_images", [1, 2])
def test_processor_expands_each_image_to_its_visual_tokens(policies, arch_dir, n_images):
    _, processor = policies[arch_dir]
    side = 112 if arch_dir == "tiny_model_dir" else 128  # 16 visual tokens at patch 14 / 16, merge 2
    text = processor.apply_chat_template(_chat(n_images), tokenize=False, add_generation_prompt=True)
    inputs = processor(text=text, images=[_image(side, 60 * i) for i in range(n_images)], return_tensors="pt")
    assert set(inputs) >= {"input_ids", "attention_mask", "pixel_values", "image_grid_thw"}
    assert (inputs["input_ids"] == processor.image_token_id).sum().item() == 16 * n_images
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8]] * n_images
    # One row per patch before the 2 x 2 merge; each row holds 3 channels x 2 frames x patch x patch values.
    patch = 14 if arch_dir == "tiny_model_dir" else 16
    assert tuple(inputs["pixel_values"].shape) == (64 * n_images, 3 * 2 * patch * patch)


@pytest.mark.parametrize("arch_dir", ARCH_DIRS)
def test_chat_template_with_images_in_the_messages(policies, arch_dir):
    # What GRPOTrainer does: the images ride inside the messages and the processor tokenizes a batch of prompts.
    _, processor = policies[arch_dir]
    side = 112 if arch_dir == "tiny_model_dir" else 128

    def prompt(n_images: int) -> list[dict]:
        parts = [{"type": "image", "image": _image(side, 50 * i)} for i in range(n_images)]
        return [{"role": "user", "content": [*parts, {"type": "text", "text": "Write the report."}]}]

    tokenized = processor.apply_chat_template(
        conversation=[prompt(1), prompt(2)], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    counts = [ids.count(processor.image_token_id) for ids in tokenized["input_ids"]]
    assert counts == [16, 32]
    assert len(tokenized["image_grid_thw"]) == 3
    assert len(tokenized["mm_token_type_ids"][1]) == len(tokenized["input_ids"][1])


def test_large_images_are_downscaled_to_the_token_budget(policies):
    _, processor = policies["tiny_model_dir"]
    text = processor.apply_chat_template(_chat(1), tokenize=False, add_generation_prompt=True)
    inputs = processor(text=text, images=[Image.new("RGB", (640, 480))], return_tensors="pt")
    assert (inputs["input_ids"] == processor.image_token_id).sum().item() <= 16


def test_processor_refuses_videos(policies):
    from himed.models.processors import IMAGE_ONLY_PROCESSORS

    _, processor = policies["tiny_model_dir"]
    if type(processor) not in IMAGE_ONLY_PROCESSORS.values():
        pytest.skip("torchvision is installed: the upstream processor handles videos")
    with pytest.raises(ValueError, match="no video processor"):
        processor(text="<|vision_start|><|video_pad|><|vision_end|>", videos=[[_image(112)] * 2])


def test_processor_image_count_mismatch_is_an_error(policies):
    _, processor = policies["tiny_model_dir"]
    text = processor.apply_chat_template(_chat(2), tokenize=False, add_generation_prompt=True)
    with pytest.raises(ValueError, match="same as the number of images"):
        processor(text=text, images=[_image(112)], return_tensors="pt")


@pytest.mark.parametrize("arch_dir", ARCH_DIRS)
def test_generate_16_new_tokens_on_a_padded_batch(policies, arch_dir):
    model, processor = policies[arch_dir]
    side = 112 if arch_dir == "tiny_model_dir" else 128
    texts = [
        processor.apply_chat_template(_chat(1), tokenize=False, add_generation_prompt=True),
        processor.apply_chat_template(_chat(2), tokenize=False, add_generation_prompt=True),
    ]
    # Left padding, as TRL pads prompts for generation.
    inputs = processor(
        text=texts,
        images=[_image(side), _image(side, 30), _image(side, 200)],
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )
    torch.manual_seed(0)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=16, min_new_tokens=16, do_sample=True)
    prompt_length = inputs["input_ids"].shape[1]
    assert output.shape == (2, prompt_length + 16)
    assert torch.equal(output[:, :prompt_length], inputs["input_ids"])
    new_tokens = output[:, prompt_length:]
    assert int(new_tokens.max()) < len(processor.tokenizer)
    decoded = processor.batch_decode(new_tokens, skip_special_tokens=True)
    assert len(decoded) == 2 and all(isinstance(text, str) for text in decoded)


@pytest.mark.parametrize("arch_dir", ARCH_DIRS)
def test_forward_backward_step_changes_text_and_vision_parameters(request, arch_dir):
    # A fresh copy: this test trains it.
    model = load_policy(request.getfixturevalue(arch_dir))
    processor = load_processor(request.getfixturevalue(arch_dir))
    side = 112 if arch_dir == "tiny_model_dir" else 128
    messages = _chat(1) + [{"role": "assistant", "content": "<finding>The heart is normal.</finding>"}]
    text = processor.apply_chat_template(messages, tokenize=False)
    inputs = processor(text=text, images=[_image(side)], return_tensors="pt")
    labels = inputs["input_ids"].clone()
    labels[labels == processor.image_token_id] = -100
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(**inputs, labels=labels).loss
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    changed = {name for name, param in model.named_parameters() if not torch.equal(before[name], param)}
    assert any(name.startswith("model.language_model.") for name in changed)
    # Gradients reach the vision tower through the visual tokens, so the image actually conditions the text.
    assert any(name.startswith("model.visual.") for name in changed)
    assert "lm_head.weight" in changed
