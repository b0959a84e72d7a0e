"""The realistic-dimension rehearsal (benchmarks/rehearsal.py): Qwen2.5-VL-3B widths, 1 layer per tower, real
vocabulary, 2 full-resolution JPEGs per study at the 3B recipe's budget; one SFT step and one GRPO step on CPU.

Slow (about 1-3 minutes and ~6 GB RSS on an idle machine): run with ``pytest -m slow tests/trainers/test_rehearsal.py``.
"""

import math

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    from benchmarks.rehearsal import run

    return run(tmp_path_factory.mktemp("rehearsal"))


def test_model_has_the_real_widths(rehearsal):
    model = rehearsal["model"]
    assert (model["vocab_size"], model["hidden_size"], model["vision_hidden_size"]) == (151936, 2048, 1280)
    assert 400e6 < model["parameters"] < 500e6  # 311 M tied embedding + 1 decoder layer + 1 vision block + merger


def test_sft_step_at_real_sizes(rehearsal):
    sft = rehearsal["sft"]
    assert sft["visual_tokens_match_budget"] and sft["placeholders_match_grid"]
    assert all(tokens <= 2048 for tokens in sft["visual_tokens_per_image"])
    # Two images of ~1,250 visual tokens: 2 x 4 x 1,248 patches of 3 x 2 x 14 x 14 values.
    assert sft["pixel_values_shape"] == [4 * sum(sft["visual_tokens_per_image"]), 3 * 2 * 14 * 14]
    assert sft["input_ids_length"] > sum(sft["visual_tokens_per_image"])
    assert sft["no_image_token_labelled"] and sft["labels_are_the_completion"]
    assert 0 < sft["labelled_tokens"] < sft["input_ids_length"] - sum(sft["visual_tokens_per_image"])
    assert sft["loss_finite"] and sft["loss"] > 5  # random weights over 151,936 classes: ~ln(151936) = 11.9


def test_grpo_step_at_real_sizes(rehearsal):
    grpo = rehearsal["grpo"]
    assert grpo["visual_tokens_match_budget"]
    assert grpo["prompt_ids_shape"][0] == 2  # G = 2 completions of one prompt
    assert grpo["image_placeholders_per_prompt"] == sum(grpo["visual_tokens_per_image"])
    assert grpo["completion_mask_shape"][0] == 2 and grpo["completion_mask_shape"][1] <= 8
    assert grpo["reward_table_shape"] == [2, 2] and grpo["rewards_finite"]
    assert grpo["has_reference_model"] and math.isfinite(grpo["loss"])


def test_memory_stays_within_the_shared_machine(rehearsal):
    assert rehearsal["peak_rss_mb"] < 8 * 1024
