"""The realistic-dimension rehearsal (benchmarks/rehearsal.py): Qwen2.5-VL-3B widths, 1 layer per tower, real
vocabulary, 2 full-resolution JPEGs per study at the 3B recipe's budget; one SFT step and one GRPO step on CPU.

Slow (~3 minutes on an idle 2-core machine with 2 threads; ~255 CPU seconds for the two steps; peak RSS 6.4 GiB for
the SFT step and 8.4 GiB for the GRPO step, each in its own process): ``pytest -m slow tests/trainers/test_rehearsal.py``.
"""

import math
import os

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    from benchmarks.rehearsal import run

    # The two steps run in subprocesses: give them up to 2 threads (CI's slow step runs on an idle runner; one
    # thread takes ~5 CPU minutes in all, two ~3). HIMED_REHEARSAL_THREADS overrides (1 on a shared machine).
    with pytest.MonkeyPatch.context() as patch:
        threads = os.environ.get("HIMED_REHEARSAL_THREADS") or str(min(2, os.cpu_count() or 1))
        patch.setenv("OMP_NUM_THREADS", threads)
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
    # Measured 6.4 GiB (SFT) and 8.4 GiB (GRPO, with its reference model for beta 0.1); the bound catches a regression
    # such as full-prompt logits over the 151,936-word vocabulary (+1.6 GB per copy) or a lost decode guard cast.
    assert rehearsal["sft"]["peak_rss_mb"] < 8 * 1024
    assert rehearsal["grpo"]["peak_rss_mb"] < 10 * 1024
