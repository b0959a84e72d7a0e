"""The hooks himed puts around TRL's colocated vLLM engine, checked without vLLM (tests/vllm runs them for real)."""

import pytest
import torch
import trl.generation.vllm_generation as generation

from himed.trainers.vllm_engine import (
    collapse_image_runs,
    colocate_engine_options,
    left_pad_processor,
    rollout_dtype,
    send_unexpanded_prompts,
)


class Model:
    dtype = torch.float32


def test_rollout_dtype_matches_the_trainer():
    assert rollout_dtype("match", Model()) == "float32"
    assert rollout_dtype("match", Model(), bf16=True) == "bfloat16"
    assert rollout_dtype("match", Model(), fp16=True) == "float16"
    assert rollout_dtype("bfloat16", Model()) == "bfloat16"
    assert rollout_dtype("auto", Model()) is None
    with pytest.raises(ValueError, match="vllm_dtype"):
        rollout_dtype("fp8", Model())
    with pytest.raises(ValueError, match="set vllm_dtype explicitly"):
        rollout_dtype("match", "a/hub-id")


def test_engine_options_reach_the_llm_call_and_are_removed_after(monkeypatch):
    calls = []
    monkeypatch.setattr(generation, "LLM", lambda **kwargs: calls.append(kwargs), raising=False)
    with colocate_engine_options(dtype="float32", mm_processor_kwargs=None):
        generation.LLM(model="m", seed=0)
    generation.LLM(model="m")
    assert calls == [{"model": "m", "seed": 0, "dtype": "float32"}, {"model": "m"}]
    with colocate_engine_options(dtype="float32"), pytest.raises(ValueError, match="TRL now passes"):
        generation.LLM(model="m", dtype="bfloat16")


def test_image_runs_collapse_to_one_placeholder_each():
    pad = 5
    assert collapse_image_runs([1, 3, pad, pad, pad, 4, 7, 3, pad, pad, 4, 2], pad) == [1, 3, pad, 4, 7, 3, pad, 4, 2]
    assert collapse_image_runs([1, 2], pad) == [1, 2]


def test_colocate_generate_receives_unexpanded_prompts_only_with_images():
    class Generation:
        def generate(self, prompts, images, num_generations, profiler=None):
            return prompts

    engine = Generation()
    send_unexpanded_prompts(engine, image_token_id=5)
    assert engine.generate([[3, 5, 5, 4]], [["image"]], num_generations=1) == [[3, 5, 4]]
    assert engine.generate([[3, 5, 5, 4]], None, num_generations=1) == [[3, 5, 5, 4]]


def test_processor_pads_left_like_trls_prompts(tiny_model_dir):
    from himed.models.loading import load_processor

    processor = load_processor(tiny_model_dir)
    left_pad_processor(processor)
    batch = processor(text=["a", "a b c d e f"], padding=True, return_tensors="pt")
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1
