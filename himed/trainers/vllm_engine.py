"""What himed hands TRL's colocated vLLM engine so that rollout and trainer compute the same thing (docs/vllm.md).

TRL 1.16 builds the colocate engine inside ``VLLMGeneration._init_vllm`` as ``LLM(model=model.name_or_path, ...)``
with no ``dtype`` and no ``mm_processor_kwargs``, and exposes no option to add engine arguments. Two consequences
were measured (docs/vllm.md, "The logp gap"):

- dtype: vLLM resolves ``dtype="auto"`` of a float32 checkpoint to its platform's preferred half type
  (``vllm/config/model.py: _resolve_auto_dtype``, "Downcast for float32 models": bfloat16 on x86 CPUs and on
  CUDA), while the trainer scores in float32: every sampled token's logprob then differs by bfloat16 rounding.
- image budget: the engine's HF processor is built from the checkpoint's preprocessor config, not from the
  trainer's processor, so a ``min_pixels``/``max_pixels`` set on the trainer's side would give vLLM other grids.

:func:`colocate_engine_options` adds engine keyword arguments for the duration of the trainer's construction, by
wrapping the ``LLM`` name that ``trl.generation.vllm_generation`` calls; nothing in TRL or vLLM is edited. Server
mode is not affected: a server's dtype and processor options are its own command line (``--dtype``,
``--mm-processor-kwargs``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

logger = logging.getLogger(__name__)

DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
ROLLOUT_DTYPES = ("match", "float32", "bfloat16", "float16", "auto")


def rollout_dtype(choice: str, model: Any, bf16: bool = False, fp16: bool = False) -> str | None:
    """The dtype for the colocated engine: ``choice`` itself, or with ``match`` the trainer's compute dtype.

    ``match``: bfloat16/float16 under mixed precision (``bf16``/``fp16`` in the recipe: the trainer then scores under
    autocast), else the dtype of the policy's parameters as loaded from the recipe's ``dtype``. ``auto`` leaves the
    choice to vLLM (None: TRL's behaviour, which downcasts float32 checkpoints).
    """
    if choice not in ROLLOUT_DTYPES:
        raise ValueError(f"vllm_dtype must be one of {ROLLOUT_DTYPES}, got {choice!r}")
    if choice == "auto":
        return None
    if choice != "match":
        return choice
    if bf16:
        return "bfloat16"
    if fp16:
        return "float16"
    dtype = getattr(model, "dtype", None)
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"vllm_dtype: match cannot tell the policy's dtype ({dtype!r}); set vllm_dtype explicitly")
    return DTYPE_NAMES[dtype]


@contextmanager
def colocate_engine_options(**options: Any) -> Iterator[None]:
    """While active, TRL's colocate ``LLM(...)`` call receives ``options`` (those whose value is not None) too."""
    options = {key: value for key, value in options.items() if value is not None}
    try:
        import trl.generation.vllm_generation as generation
    except ImportError:  # TRL without its generation module: nothing to hook
        yield
        return
    original = getattr(generation, "LLM", None)
    if original is None or not options:  # vLLM not installed (TRL imports LLM only when it is), or nothing to add
        yield
        return

    def build_llm(*args: Any, **kwargs: Any):
        conflicting = {key for key in options if key in kwargs and kwargs[key] != options[key]}
        if conflicting:
            raise ValueError(f"TRL now passes {sorted(conflicting)} to vLLM itself; himed's hook would override it")
        logger.info("colocated vLLM engine options added by himed: %s", options)
        return original(*args, **{**kwargs, **options})

    generation.LLM = build_llm
    try:
        yield
    finally:
        generation.LLM = original


def trainer_engine_options(grpo_args: Any, model: Any, mm_processor_kwargs: dict[str, int] | None = None):
    """The context HimedGRPOTrainer builds TRL's trainer in: engine options for colocate mode, nothing otherwise.

    ``mm_processor_kwargs``: the recipe's image budget (``himed.models.image_budget.image_budget_kwargs``), so the
    engine's own HF processor resizes images as the trainer's does (same grids, same visual tokens).
    """
    from contextlib import nullcontext

    if not getattr(grpo_args, "use_vllm", False) or getattr(grpo_args, "vllm_mode", None) != "colocate":
        return nullcontext()
    choice = getattr(grpo_args, "vllm_dtype", "match")  # a plain GRPOConfig (tests, library use) has no such field
    dtype = rollout_dtype(choice, model, bf16=bool(grpo_args.bf16), fp16=bool(grpo_args.fp16))
    return colocate_engine_options(dtype=dtype, mm_processor_kwargs=mm_processor_kwargs or None)


def collapse_image_runs(prompt_ids: list[int], image_token_id: int) -> list[int]:
    """One image placeholder per run of image tokens: the prompt as the tokenizer renders it before the processor
    expands each ``<|image_pad|>`` to the image's grid (TRL PR #6718, issue #6294)."""
    collapsed: list[int] = []
    for token in prompt_ids:
        if token == image_token_id and collapsed and collapsed[-1] == image_token_id:
            continue
        collapsed.append(token)
    return collapsed


def send_unexpanded_prompts(vllm_generation: Any, image_token_id: int) -> None:
    """Make TRL's colocate ``generate`` hand vLLM one placeholder per image.

    TRL 1.16 sends the processor-expanded prompt ids (N ``<|image_pad|>`` per image) with the images; vLLM's own
    multimodal processor expands the placeholders it finds again, so the first pad of each run becomes N pads and the
    rollout conditions on a longer, corrupted prompt (N - 1 stray image tokens per image) than the one the trainer
    scores. The trainer keeps scoring its own expanded ids (TRL discards the ids vLLM returns); vLLM expands the
    collapsed ids to exactly those (tests/vllm/test_agreement.py compares them).
    """
    generate = vllm_generation.generate

    def generate_from_unexpanded(prompts, images, *args, **kwargs):
        if images is not None:
            prompts = [collapse_image_runs(list(ids), image_token_id) for ids in prompts]
        return generate(prompts, images, *args, **kwargs)

    vllm_generation.generate = generate_from_unexpanded


def reset_encoder_cache_on_sync(vllm_generation: Any) -> None:
    """Make TRL's colocate ``sync_weights`` also drop vLLM's cached vision-encoder outputs.

    vLLM keeps each image's encoder output (keyed by the image's content hash) across requests. TRL 1.16 resets only
    the prefix cache after pushing new weights, so an image seen before the sync is embedded with the *old* vision
    tower: measured on the tiny model, a logprob gap of ~0.4 nats per token on a repeated image against ~1e-7 on a
    new one (tests/vllm/test_agreement.py). vLLM documents ``reset_encoder_cache`` for exactly this ("should be
    called when model weights are updated").
    """
    sync_weights = vllm_generation.sync_weights

    def sync_weights_and_reset_encoder_cache(*args, **kwargs):
        result = sync_weights(*args, **kwargs)
        vllm_generation.llm.llm_engine.reset_encoder_cache()
        return result

    vllm_generation.sync_weights = sync_weights_and_reset_encoder_cache


def adapt_colocate_generation(trainer: Any) -> None:
    """After TRL built the trainer, for a vision-language policy in colocate mode: the two fixes above."""
    generation = getattr(trainer, "vllm_generation", None)
    if generation is None or getattr(generation, "mode", None) != "colocate":
        return
    image_token_id = getattr(trainer.processing_class, "image_token_id", None)
    if image_token_id is not None:
        send_unexpanded_prompts(generation, image_token_id)
        reset_encoder_cache_on_sync(generation)


def left_pad_processor(processor: Any) -> None:
    """GRPO scores prompts left-padded: make the processor pad the same side (both generation modes).

    TRL 1.16 left-pads the prompt ids itself, but rebuilds the multimodal inputs for scoring with
    ``processing_class(images=..., text=..., padding=True)``, which pads on the processor's own side. A processor
    loaded with the checkpoint's default ``padding_side="right"`` then right-pads ``mm_token_type_ids`` under
    left-padded ids: for every prompt shorter than the longest in its batch, Qwen-VL's M-RoPE index finds the image
    tokens at the wrong offsets and the trainer scores the completion at shifted positions (the logp gap measured
    against vLLM came only from such rows). TRL builds its own processor with ``padding_side="left"``; one passed in
    must be set the same way.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    if tokenizer is not None and hasattr(tokenizer, "padding_side"):
        tokenizer.padding_side = "left"
