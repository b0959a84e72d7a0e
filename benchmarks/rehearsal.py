"""A realistic-dimension rehearsal on CPU: one SFT step and one GRPO step at Qwen2.5-VL-3B's real widths.

    python benchmarks/rehearsal.py [--output benchmarks/results/rehearsal.json] [--work-dir DIR]

Model: built from the published Qwen2.5-VL-3B-Instruct configuration (``QWEN2_5_VL_3B_CONFIG`` below, the values of
its config.json: hidden 2048, 16 heads, 2 KV heads, head dim 128, intermediate 11008, vocabulary 151,936, tied
embeddings, mrope sections [16, 24, 24], rope theta 1e6; vision tower 1280 wide, 16 heads, intermediate 3420, patch
14, merge 2, temporal patch 2, window 112, output 2048) with ONE decoder layer and ONE vision block instead of 36 and
32 (the one block is windowed, like blocks 0-6 of the real tower; the real full-attention blocks are 7, 15, 23, 31).
Random weights, bfloat16 as the recipes train (``dtype: bfloat16``, ``bf16: true``): ~446 M parameters, ~0.9 GB.

Tokenizer: the tiny offline BPE tokenizer (``himed.models.tiny.train_tokenizer`` on the demo report corpus, with the
Qwen special tokens and chat template) and the model's ``vocab_size`` set to the real 151,936: every id the tokenizer
emits fits, and the embedding matrix, the LM head, the logits and the log-softmax have the real vocabulary width.
Its special tokens have small ids (0-6) rather than Qwen's 151,643+, which changes nothing that is measured.

Data: 2 studies of 2 full-resolution JPEGs each (frontal 2,544 x 3,056 px and lateral 3,056 x 2,544 px, the size of
a typical MIMIC-CXR-JPG image; ``benchmarks/image_cache.py`` draws them), at the 3B recipe's budget
(``recipes/qwen2.5-vl-3b/grpo.yaml``: min_pixels / max_pixels), through the real stage functions (data arguments,
image budget, decode guard, TRL's trainers and collators).

- SFT: ``cold_start`` stage, batch 1 study, plain SGD (``optim: sgd``: no optimizer state, so the step's memory is
  weights + gradients + activations; Adam's two fp32 moments would add 3.6 GB at this size), one step.
- GRPO: the recipe's loss (``loss_type: grpo``, ``beta: 0.1``, so a reference model is loaded too) and gradient
  checkpointing, G = 2 generations of 8 tokens with HF generation, batch of 2 completions (one prompt), the format and
  token rewards, SGD, one step.

Each step runs in its own Python process (``--step``), so each peak RSS is that step's alone.

Checked at real sizes: the processor's visual tokens per image (``image_grid_thw``) against the budget's
``smart_resize`` count, ``pixel_values`` and ``input_ids`` shapes, the SFT loss mask (exactly the completion's
tokens carry labels; no image or prompt token does), the GRPO completion mask and prompt length, and the reward
columns (one finite value per completion per reward). Recorded: the wall time of each step, the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The published config.json of Qwen/Qwen2.5-VL-3B-Instruct (architecture fields), as transformers 5.x names them.
QWEN2_5_VL_3B_CONFIG = {
    "text_config": {
        "vocab_size": 151936,
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-06,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        "sliding_window": 32768,
        "use_sliding_window": False,
        "max_window_layers": 70,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
    },
    "vision_config": {
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_channels": 3,
        "out_hidden_size": 2048,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
    },
    "tie_word_embeddings": True,
}
# What the rehearsal changes: one layer per tower (and so no full-attention vision block).
REHEARSAL_LAYERS = {"num_hidden_layers": 1, "depth": 1, "fullatt_block_indexes": []}
# Qwen2.5-VL-3B-Instruct's preprocessor_config.json (before the recipe's budget is applied).
QWEN2_5_VL_IMAGE_PROCESSOR = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "merge_size": 2}


def rehearsal_config(tokenizer):
    """``Qwen2_5_VLConfig`` of the 3B model with ``REHEARSAL_LAYERS`` and the tokenizer's special token ids."""
    from transformers import Qwen2_5_VLConfig

    text = {**QWEN2_5_VL_3B_CONFIG["text_config"], "num_hidden_layers": REHEARSAL_LAYERS["num_hidden_layers"]}
    vision = {
        **QWEN2_5_VL_3B_CONFIG["vision_config"],
        "depth": REHEARSAL_LAYERS["depth"],
        "fullatt_block_indexes": REHEARSAL_LAYERS["fullatt_block_indexes"],
    }
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in SPECIAL_IDS.items()}
    text.update(bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"])
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=True,
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
    )


SPECIAL_IDS = {
    "bos": "<|endoftext|>",
    "pad": "<|endoftext|>",
    "eos": "<|im_end|>",
    "image": "<|image_pad|>",
    "video": "<|video_pad|>",
    "vision_start": "<|vision_start|>",
    "vision_end": "<|vision_end|>",
}


def build_rehearsal_model(out_dir: Path, seed: int = 0) -> Path:
    """Write the rehearsal model (bfloat16, random weights) with its processor into ``out_dir``."""
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from himed.models.processors import Qwen2_5_VLImageOnlyProcessor
    from himed.models.tiny import CHAT_TEMPLATE, _prompt_texts, default_corpus, train_tokenizer

    tokenizer = train_tokenizer(default_corpus(seed) + _prompt_texts(), vocab_size=1000)
    config = rehearsal_config(tokenizer)
    assert config.text_config.vocab_size == 151936 and len(tokenizer) <= config.text_config.vocab_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>")], pad_token_id=tokenizer.pad_token_id
    )
    image_processor = Qwen2VLImageProcessorPil(temporal_patch_size=2, **QWEN2_5_VL_IMAGE_PROCESSOR)
    processor = Qwen2_5_VLImageOnlyProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    parameters = sum(p.numel() for p in model.parameters())  # tied: the embedding counts once
    (out_dir / "rehearsal.json").write_text(json.dumps({"parameters": parameters, "layers": REHEARSAL_LAYERS}))
    return out_dir


def write_studies(root: Path, n: int = 2) -> Path:
    """An R2Gen folder of ``n`` studies, each a frontal + lateral full-resolution JPEG, all in the train split."""
    from benchmarks.image_cache import FRONTAL, LATERAL, radiograph
    from himed.data.demo import sample_study

    entries = []
    for i in range(n):
        paths = []
        for view, (width, height) in (("pa", FRONTAL), ("lateral", LATERAL)):
            path = root / "images" / f"r{i}" / f"{view}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            radiograph(width, height, seed=100 + 2 * i + (view == "lateral")).save(path, quality=95)
            paths.append(f"r{i}/{view}.jpg")
        study = sample_study(i, 0)
        entries.append(
            {
                "id": f"r{i}",
                "findings": study.findings,
                "impression": study.impression,
                "labels": study.labels,
                "views": ["PA", "LATERAL"],
                "image_path": paths,
            }
        )
    (root / "annotation.json").write_text(json.dumps({"train": entries}))
    return root


def recipe_budget() -> dict[str, int]:
    recipe = yaml.safe_load((ROOT / "recipes/qwen2.5-vl-3b/grpo.yaml").read_text())
    return {"min_pixels": recipe["min_pixels"], "max_pixels": recipe["max_pixels"]}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """CPU time of this process so far: on a shared machine the step's CPU time, not its wall time, is what it costs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Recorder:
    """Wraps a collator or a method and keeps what it returned (the batch the step trained on)."""

    def __init__(self, function):
        self.function, self.outputs = function, []

    def __call__(self, *args, **kwargs):
        output = self.function(*args, **kwargs)
        self.outputs.append(output)
        return output


def expected_visual_tokens(processor) -> list[int]:
    from benchmarks.image_cache import FRONTAL, LATERAL
    from himed.models.image_budget import visual_tokens

    return [visual_tokens(height, width, processor) for width, height in (FRONTAL, LATERAL)]


def sft_step(model_dir: Path, data_dir: Path, out_dir: Path) -> dict:
    """One SFT step through the cold-start stage; returns the checks and the timing."""
    from trl import ModelConfig, SFTConfig

    from himed.models.image_budget import prepare_stage_images
    from himed.trainers.config import DataArguments, SFTStageArguments
    from himed.trainers.sft import STAGES
    from himed.trainers.stages import load_stage_model, load_stage_rows

    data_args = DataArguments(data_path=str(data_dir), max_train_samples=1, **recipe_budget())
    stage_args = SFTStageArguments()
    args = SFTConfig(
        output_dir=str(out_dir),
        max_steps=1,
        per_device_train_batch_size=1,
        learning_rate=1e-5,
        optim="sgd",
        use_cpu=True,
        bf16=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        max_length=None,
        seed=0,
    )
    model, processor = load_stage_model(ModelConfig(model_name_or_path=str(model_dir), dtype="bfloat16"))
    train_rows, _ = prepare_stage_images(processor, data_args, *load_stage_rows(data_args))
    trainer = STAGES["cold_start"](
        train_rows, [], data_args, stage_args, model=model, args=args, processing_class=processor
    )
    trainer.data_collator = recorder = Recorder(trainer.data_collator)
    start, cpu_start = time.perf_counter(), cpu_seconds()
    trainer.train()
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    (batch,) = recorder.outputs
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    input_ids, labels = batch["input_ids"][0], batch["labels"][0]
    grid = batch["image_grid_thw"].tolist()
    per_image = [t * h * w // 4 for t, h, w in grid]
    labelled = labels != -100
    completion = tokenizer.decode(input_ids[labelled])
    loss = trainer.state.log_history[0]["loss"]
    checks = {
        "visual_tokens_per_image": per_image,
        "visual_tokens_match_budget": per_image == expected_visual_tokens(processor),
        "image_placeholders_in_input_ids": int((input_ids == image_id).sum()),
        "placeholders_match_grid": int((input_ids == image_id).sum()) == sum(per_image),
        "pixel_values_shape": list(batch["pixel_values"].shape),
        "input_ids_length": int(input_ids.shape[0]),
        "labelled_tokens": int(labelled.sum()),
        "no_image_token_labelled": not bool((labelled & (input_ids == image_id)).any()),
        "labels_are_the_completion": completion.strip().startswith("<think>") and "</impression>" in completion,
        "loss": loss,
        "loss_finite": loss == loss and abs(loss) != float("inf"),
    }
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "peak_rss_mb_after": round(peak_rss_mb()),
        **checks,
    }


def grpo_step(model_dir: Path, data_dir: Path, out_dir: Path) -> dict:
    """One GRPO step (G = 2, 8 tokens, HF generation, beta 0.1 with a reference model)."""
    import torch
    from trl import GRPOConfig, ModelConfig

    from himed.data.decode_guard import guard_image_decoding
    from himed.data.examples import grpo_dataset
    from himed.models.image_budget import prepare_stage_images
    from himed.rewards.composite import CompositeReward
    from himed.trainers.config import DataArguments, RewardArguments
    from himed.trainers.grpo import HimedGRPOTrainer
    from himed.trainers.stages import load_stage_model, load_stage_rows

    data_args = DataArguments(data_path=str(data_dir), max_train_samples=1, **recipe_budget())
    reward_args = RewardArguments(rewards=[{"name": "format"}, {"name": "token"}])
    args = GRPOConfig(
        output_dir=str(out_dir),
        max_steps=1,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=8,
        learning_rate=1e-6,
        optim="sgd",
        beta=0.1,
        loss_type="grpo",
        use_cpu=True,
        bf16=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        gradient_checkpointing=True,  # as the recipe; without it this step's peak RSS is ~2 GB higher
        seed=0,
    )
    model, processor = load_stage_model(ModelConfig(model_name_or_path=str(model_dir), dtype="bfloat16"))
    train_rows, _ = prepare_stage_images(processor, data_args, *load_stage_rows(data_args))
    trainer = HimedGRPOTrainer(
        model=model,
        processing_class=processor,
        train_dataset=guard_image_decoding(grpo_dataset(train_rows, sections=data_args.sections)),
        args=args,
        reward=CompositeReward.from_config(reward_args.reward_block(), sections=data_args.sections, where="rehearsal"),
    )
    trainer._generate_and_score_completions = generated = Recorder(trainer._generate_and_score_completions)
    trainer._calculate_rewards = rewards = Recorder(trainer._calculate_rewards)
    start, cpu_start = time.perf_counter(), cpu_seconds()
    trainer.train()
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    output = generated.outputs[0]
    reward_table = rewards.outputs[0]
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    prompt_ids = output["prompt_ids"]
    grid = output["image_grid_thw"].tolist()
    per_image = [t * h * w // 4 for t, h, w in grid]
    entry = trainer.state.log_history[0]
    checks = {
        "visual_tokens_per_image": per_image[:2],
        "visual_tokens_match_budget": per_image[:2] == expected_visual_tokens(processor),
        "prompt_ids_shape": list(prompt_ids.shape),
        "image_placeholders_per_prompt": int((prompt_ids[0] == image_id).sum()),
        "completion_mask_shape": list(output["completion_mask"].shape),
        "completion_tokens": int(output["completion_mask"].sum()),
        "reward_table_shape": list(reward_table.shape),
        "rewards_finite": bool(torch.isfinite(reward_table).all()),
        "reward_means": {name: entry.get(f"rewards/{name}/mean") for name in trainer.reward.names},
        "has_reference_model": trainer.ref_model is not None,
        "loss": entry.get("loss"),
    }
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "peak_rss_mb_after": round(peak_rss_mb()),
        **checks,
    }


STEPS = {"sft": sft_step, "grpo": grpo_step}


def step_in_subprocess(step: str, model_dir: Path, data_dir: Path, out_dir: Path) -> dict:
    """Run one step in a fresh Python process, so that its peak RSS is its own (the other step's memory is not in
    it) and the machine gets the memory back after it."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(Path(__file__).resolve()), "--step", step]
    command += ["--model-dir", str(model_dir), "--data-dir", str(data_dir), "--work-dir", str(out_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the {step} step failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(work_dir: Path) -> dict:
    """Build the model and the studies, then one SFT step and one GRPO step, each in its own process."""
    import torch
    from transformers import AutoConfig

    start = time.perf_counter()
    model_dir = build_rehearsal_model(work_dir / "model")
    data_dir = write_studies(work_dir / "data")
    build_seconds = time.perf_counter() - start
    config = AutoConfig.from_pretrained(model_dir)
    n_params = json.loads((model_dir / "rehearsal.json").read_text())["parameters"]
    sft = step_in_subprocess("sft", model_dir, data_dir, work_dir / "sft")
    grpo = step_in_subprocess("grpo", model_dir, data_dir, work_dir / "grpo")
    return {
        "model": {
            "config": "Qwen2.5-VL-3B-Instruct widths, 1 decoder layer, 1 vision block, bfloat16, tied embeddings",
            "vocab_size": config.text_config.vocab_size,
            "hidden_size": config.text_config.hidden_size,
            "vision_hidden_size": config.vision_config.hidden_size,
            "parameters": n_params,
            "threads": int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())),
        },
        "budget": recipe_budget(),
        "build_seconds": round(build_seconds, 1),
        "sft": sft,
        "grpo": grpo,
        "peak_rss_mb": max(sft["peak_rss_mb"], grpo["peak_rss_mb"], round(peak_rss_mb())),
    }


def main(argv: list[str] | None = None) -> int:
    from benchmarks.loaders import machine_record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/rehearsal.json"))
    parser.add_argument("--work-dir", help="where the model and data go (default: a temporary folder)")
    parser.add_argument("--step", choices=sorted(STEPS), help=argparse.SUPPRESS)  # one step, in this process
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        result = STEPS[args.step](Path(args.model_dir), Path(args.data_dir), Path(args.work_dir))
        print(json.dumps({**result, "peak_rss_mb": round(peak_rss_mb())}))
        return 0
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rehearsal-") as temporary:
        result = run(Path(args.work_dir or temporary))
    result["command"] = "python benchmarks/rehearsal.py"
    result["machine"] = machine_record(load_before)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
