"""The tiny offline models: sizes, rope layout, tokenizer, chat template, determinism and input checks."""

from __future__ import annotations

import json

import pytest

from himed.models.tiny import (
    ARCHS,
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    TAG_TOKENS,
    TINY_SIZES,
    TinySize,
    build_tiny_model,
    mrope_section,
    read_corpus,
    train_tokenizer,
)

CORPUS = [
    "The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax.",
    "Mild cardiomegaly. Small left pleural effusion with adjacent atelectasis.",
    "Moderate pulmonary edema. Bilateral pleural effusions. Cardiomegaly.",
    "Right lower lobe consolidation concerning for pneumonia. No pneumothorax.",
    "Endotracheal tube terminates above the carina. The lungs are clear.",
] * 20


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head_dim", [16, 32, 64, 128])
def test_mrope_section_fills_half_the_head(arch, head_dim):
    section = mrope_section(head_dim, arch)
    assert sum(section) == head_dim // 2
    assert min(section) > 0


def test_mrope_section_keeps_upstream_proportions_at_upstream_size():
    assert mrope_section(128, "qwen2_5_vl") == [16, 24, 24]
    assert mrope_section(128, "qwen3_vl") == [24, 20, 20]


def test_default_sizes_give_16_visual_tokens():
    for arch, size in TINY_SIZES.items():
        assert size.visual_tokens_per_image == 16, arch
    assert TINY_SIZES["qwen2_5_vl"].patch_size == 14
    assert TINY_SIZES["qwen3_vl"].patch_size == 16


def test_saved_config_matches_sizes_and_tokenizer(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    text, vision = config["text_config"], config["vision_config"]
    size = TINY_SIZES["qwen2_5_vl"]
    assert config["model_type"] == "qwen2_5_vl"
    assert (text["hidden_size"], text["num_hidden_layers"], text["intermediate_size"]) == (128, 2, 384)
    assert (text["num_attention_heads"], text["num_key_value_heads"]) == (4, 2)
    assert (vision["depth"], vision["hidden_size"], vision["patch_size"]) == (2, 64, 14)
    assert vision["spatial_merge_size"] == 2 and vision["out_hidden_size"] == 128
    # Windowed attention in block 0 over 2 x 2 merged patches (4 windows per 112 px image), full attention in block 1.
    assert (vision["window_size"], vision["fullatt_block_indexes"]) == (56, [1])
    assert sum(text["rope_parameters"]["mrope_section"]) == size.head_dim // 2

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert text["vocab_size"] == len(tokenizer)
    assert config["image_token_id"] == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config["video_token_id"] == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert config["vision_start_token_id"] == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    generation = json.loads((tiny_model_dir / "generation_config.json").read_text())
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in generation["eos_token_id"]
    assert generation["pad_token_id"] == tokenizer.pad_token_id


def test_qwen3_config_uses_interleaved_mrope_and_deepstack(tiny_qwen3_dir):
    config = json.loads((tiny_qwen3_dir / "config.json").read_text())
    rope = config["text_config"]["rope_parameters"]
    assert config["model_type"] == "qwen3_vl"
    assert rope["mrope_interleaved"] is True
    assert sum(rope["mrope_section"]) == config["text_config"]["head_dim"] // 2
    assert config["vision_config"]["patch_size"] == 16
    assert config["vision_config"]["deepstack_visual_indexes"] == [0]
    processor_config = json.loads((tiny_qwen3_dir / "processor_config.json").read_text())
    assert processor_config["image_processor"]["patch_size"] == 16
    assert processor_config["processor_class"] == "Qwen3VLProcessor"
    # What the upstream processor needs to load this directory where torchvision is installed.
    video = processor_config["video_processor"]
    assert video["video_processor_type"] == "Qwen3VLVideoProcessor"
    assert (video["patch_size"], video["merge_size"], video["temporal_patch_size"]) == (16, 2, 2)


def test_tokenizer_special_tokens_and_tags():
    tokenizer = train_tokenizer(CORPUS, vocab_size=400)
    assert 300 <= len(tokenizer) <= 400
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    for tag in TAG_TOKENS:
        assert len(tokenizer(tag, add_special_tokens=False)["input_ids"]) == 1, tag
        assert tag not in tokenizer.all_special_tokens


def test_decode_keeps_tags_and_drops_special_tokens():
    tokenizer = train_tokenizer(CORPUS, vocab_size=400)
    completion = (
        "<think>Effusion.</think>\n<finding>Small left pleural effusion.</finding>\n<impression>Effusion.</impression>"
    )
    ids = tokenizer(completion + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == completion


def test_tokenizer_is_compact_on_its_corpus():
    tokenizer = train_tokenizer(CORPUS, vocab_size=800)
    for report in CORPUS[:5]:
        n_tokens = len(tokenizer(report, add_special_tokens=False)["input_ids"])
        # Whole-word merges: one token per word and per punctuation mark, where bytes would need ~6 per word.
        assert n_tokens <= len(report.split()) + report.count(".") + report.count(","), (report, n_tokens)


def test_chat_template_renders_qwen_style():
    tokenizer = train_tokenizer(CORPUS, vocab_size=400)
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            # A text part stored by `datasets` carries "image": None and must still render as text.
            "content": [{"type": "image", "image": None}, {"type": "text", "text": "Describe.", "image": None}],
        },
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": "<finding>Clear.</finding>"}], tokenize=False
    )
    assert full == rendered + "<finding>Clear.</finding><|im_end|>\n"
    assert "{% generation %}" in CHAT_TEMPLATE.replace("{%- generation -%}", "{% generation %}")


def test_build_is_deterministic_for_a_seed(tmp_path):
    first = build_tiny_model(tmp_path / "a", corpus=CORPUS, seed=3, vocab_size=400)
    second = build_tiny_model(tmp_path / "b", corpus=CORPUS, seed=3, vocab_size=400)
    other = build_tiny_model(tmp_path / "c", corpus=CORPUS, seed=4, vocab_size=400)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()
    assert (first / "tokenizer.json").read_bytes() == (other / "tokenizer.json").read_bytes()


def test_build_does_not_move_the_callers_random_stream(tmp_path):
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(tmp_path / "m", corpus=CORPUS, seed=0, vocab_size=400)
    assert torch.equal(torch.rand(3), expected)


def test_size_overrides_apply(tmp_path):
    out = build_tiny_model(tmp_path / "m", corpus=CORPUS, hidden_size=64, num_attention_heads=2, vocab_size=400)
    config = json.loads((out / "config.json").read_text())
    assert config["text_config"]["hidden_size"] == 64
    assert config["vision_config"]["out_hidden_size"] == 64
    assert sum(config["text_config"]["rope_parameters"]["mrope_section"]) == 16


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny architecture 'llama'"):
        build_tiny_model(tmp_path / "m", arch="llama", corpus=CORPUS)
    with pytest.raises(ValueError, match="unknown size override"):
        build_tiny_model(tmp_path / "m", corpus=CORPUS, hiden_size=64)
    with pytest.raises(ValueError, match="not divisible"):
        build_tiny_model(tmp_path / "m", corpus=CORPUS, hidden_size=130)
    with pytest.raises(ValueError, match="corpus is empty"):
        build_tiny_model(tmp_path / "m", corpus=["", "  "])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        build_tiny_model(tmp_path / "file", corpus=CORPUS)
    with pytest.raises(ValueError, match="image_size"):
        TinySize(image_size=100).validate()


def test_read_corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("First report.\n\n  Second report.  \n", encoding="utf-8")
    assert read_corpus(path) == ["First report.", "Second report."]
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_corpus(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no non-empty lines"):
        read_corpus(tmp_path / "empty.txt")


@pytest.mark.slow  # two fresh interpreters: ~15-40 s of imports
def test_build_is_deterministic_across_processes(tmp_path):
    # Python's hash seed and the tokenizer trainer's hash maps differ between processes; the files must not.
    import os
    import subprocess
    import sys

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS), encoding="utf-8")
    for hash_seed in ("1", "2"):
        command = [sys.executable, "-m", "himed.cli", "model", "tiny", "--arch", "qwen3_vl"]
        command += ["--out-dir", str(tmp_path / hash_seed), "--corpus", str(corpus), "--seed", "7"]
        subprocess.run(command, check=True, env={**os.environ, "PYTHONHASHSEED": hash_seed}, capture_output=True)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name
