"""load_policy / load_processor: reloading tiny models, the torchvision-free fallback, and clear errors."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from himed.models import loading
from himed.models.loading import load_policy, load_processor
from himed.models.processors import Qwen2_5_VLImageOnlyProcessor, Qwen3VLImageOnlyProcessor


def test_load_policy_reloads_the_tiny_model(tiny_model_dir):
    model = load_policy(tiny_model_dir)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert model.config.text_config.hidden_size == 128
    assert next(model.parameters()).dtype == torch.float32


def test_load_policy_accepts_a_string_path_and_dtype_names(tiny_model_dir):
    model = load_policy(str(tiny_model_dir), dtype="bfloat16", attn_implementation="eager")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"
    assert next(load_policy(tiny_model_dir, dtype=torch.float16).parameters()).dtype == torch.float16


def test_load_policy_reloads_qwen3(tiny_qwen3_dir):
    assert type(load_policy(tiny_qwen3_dir)).__name__ == "Qwen3VLForConditionalGeneration"


def test_load_policy_bad_inputs(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        load_policy(tiny_model_dir, dtype="fp8")
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        load_policy(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        load_policy("./no/such/dir")
    with pytest.raises(FileNotFoundError, match="neither config.json nor adapter_config.json"):
        load_policy(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        load_policy(tmp_path / "file.txt")
    with pytest.raises(ValueError, match="a model name or directory is required"):
        load_policy("")


def test_load_policy_rejects_an_unknown_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no_such_arch"}))
    with pytest.raises(ValueError, match="cannot read the model configuration"):
        load_policy(tmp_path)


def test_load_policy_rejects_a_text_only_model(tmp_path):
    from transformers import Qwen2Config

    Qwen2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=100).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not an image-text-to-text architecture"):
        load_policy(tmp_path)


def test_load_policy_unknown_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="cannot find a model at 'himed-test/no-such-model'"):
        load_policy("himed-test/no-such-model")


def test_fallback_processor_is_used_and_logged_without_torchvision(tiny_model_dir, monkeypatch, caplog):
    # Force the CPU environment's situation even on a machine that has torchvision.
    monkeypatch.setattr("transformers.utils.is_torchvision_available", lambda: False)

    def no_video_processor(*args, **kwargs):
        raise OSError("Can't load video processor")

    monkeypatch.setattr("transformers.AutoProcessor.from_pretrained", no_video_processor)
    with caplog.at_level(logging.WARNING, logger=loading.__name__):
        processor = load_processor(tiny_model_dir)
    assert type(processor) is Qwen2_5_VLImageOnlyProcessor
    assert "torchvision is not installed" in caplog.text
    assert "Qwen2_5_VLImageOnlyProcessor" in caplog.text


def test_fallback_when_autoprocessor_returns_a_bare_tokenizer(tiny_qwen3_dir, monkeypatch, caplog):
    from transformers import AutoTokenizer

    monkeypatch.setattr("transformers.utils.is_torchvision_available", lambda: False)
    monkeypatch.setattr(
        "transformers.AutoProcessor.from_pretrained", lambda path, **kwargs: AutoTokenizer.from_pretrained(path)
    )
    with caplog.at_level(logging.WARNING, logger=loading.__name__):
        processor = load_processor(tiny_qwen3_dir)
    assert type(processor) is Qwen3VLImageOnlyProcessor
    assert "returned a Qwen2Tokenizer" in caplog.text


def test_no_fallback_when_torchvision_is_present(tiny_model_dir, monkeypatch):
    # With torchvision the upstream processor should work; hiding its failure behind the fallback would hide a bug.
    monkeypatch.setattr("transformers.utils.is_torchvision_available", lambda: True)

    def broken(*args, **kwargs):
        raise OSError("broken processor files")

    monkeypatch.setattr("transformers.AutoProcessor.from_pretrained", broken)
    with pytest.raises(ValueError, match="torchvision is installed"):
        load_processor(tiny_model_dir)


def test_load_processor_passes_kwargs_to_the_fallback(tiny_model_dir):
    processor = load_processor(tiny_model_dir, padding_side="left")
    assert processor.tokenizer.padding_side == "left"
    assert processor.tokenizer.pad_token == "<|endoftext|>"
    assert processor.tokenizer.eos_token == "<|im_end|>"


def test_load_processor_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        load_processor(tmp_path / "missing")


def test_fallback_saves_in_the_upstream_format(tiny_model_dir, tmp_path):
    processor = load_processor(tiny_model_dir)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == "Qwen2_5_VLProcessor"
    assert saved["video_processor"]["video_processor_type"] == "Qwen2VLVideoProcessor"
    assert saved["video_processor"]["patch_size"] == 14
    tokenizer_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert tokenizer_config["processor_class"] == "Qwen2_5_VLProcessor"
    assert type(load_processor(tmp_path)) is type(processor)


def test_fallback_reads_the_hub_layout(tiny_model_dir, tmp_path):
    # Hub checkpoints (Qwen/Qwen2.5-VL-3B-Instruct) keep the image processor in preprocessor_config.json with
    # min_pixels / max_pixels, and have a video_preprocessor_config.json that cannot be used without torchvision.
    import shutil

    hub_like = tmp_path / "hub_like"
    shutil.copytree(tiny_model_dir, hub_like)
    (hub_like / "processor_config.json").unlink()
    image_config = {
        "min_pixels": 3136,
        "max_pixels": 56 * 56,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
    }
    (hub_like / "preprocessor_config.json").write_text(json.dumps(image_config))
    video_config = dict(image_config, video_processor_type="Qwen2VLVideoProcessor")
    del video_config["image_processor_type"]
    (hub_like / "video_preprocessor_config.json").write_text(json.dumps(video_config))
    processor = load_processor(hub_like)
    assert processor.image_processor.size.longest_edge == 56 * 56
    from PIL import Image

    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}]}], tokenize=False, add_generation_prompt=True
    )
    inputs = processor(text=text, images=[Image.new("RGB", (112, 112))], return_tensors="pt")
    assert (inputs["input_ids"] == processor.image_token_id).sum().item() == 4  # 56 x 56 px: 2 x 2 merged patches


def test_load_policy_loads_a_lora_adapter_directory(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = load_policy(tiny_model_dir)
    adapted = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapted.save_pretrained(tmp_path / "adapter")
    model = load_policy(tmp_path / "adapter")
    lora = {name: param for name, param in model.named_parameters() if "lora_B" in name}
    assert lora and all(param.abs().sum() > 0 for param in lora.values())
    # No processor files next to the adapter: the base model's processor is used.
    assert load_processor(tmp_path / "adapter").tokenizer.eos_token == "<|im_end|>"
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ValueError, match="does not name its base model"):
        load_policy(tmp_path / "broken")
