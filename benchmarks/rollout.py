"""Rollout speed: vLLM colocate against HF ``generate``, and one GRPO step in each mode, in one run (.venv-vllm).

    .venv-vllm/bin/python benchmarks/rollout.py --out benchmarks/results/rollout.json

Same tiny model (``himed model tiny``, float32), same demo prompts (the GRPO prompt builder, 1 image per study),
same sampling settings (temperature 1, top_p 1, no top_k, ``--max-tokens`` new tokens, ``--generations`` per
prompt). vLLM runs in-process as TRL's colocate engine does (its ``LLM`` with the dtype himed passes); HF runs
``model.generate`` on the same processor output, left-padded. Completion tokens/s counts generated tokens up to and
including EOS. The GRPO step time is TRL's logged ``step_time`` (generation + scoring + backward + optimizer), mean
over the steps after the first. Measured, not tuned: CPU numbers say nothing about GPU ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine, like TRL's colocate mode


def prompts_and_images(demo_dir: Path, n: int):
    from trl.data_utils import prepare_multimodal_messages

    from himed.data.examples import grpo_dataset
    from himed.data.loaders import load_rows

    rows = load_rows("r2gen", str(demo_dir), "train")[:n]
    dataset = grpo_dataset(rows, sections=["think", "finding", "impression"])
    conversations, images = [], []
    for example in dataset:
        conversations.append(prepare_multimodal_messages(example["prompt"], images=example["images"]))
        images.append([image.convert("RGB") for image in example["images"]])
    return conversations, images


def hf_tokens_per_second(model_dir, conversations, images, generations, max_tokens, repeats):
    import torch

    from himed.models.loading import load_policy, load_processor

    processor = load_processor(model_dir, padding_side="left")
    model = load_policy(model_dir, dtype="float32").eval()
    eos = processor.tokenizer.eos_token_id
    texts = [processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
    inputs = processor(text=texts, images=[i for study in images for i in study], padding=True, return_tensors="pt")
    timings, tokens = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(
                **inputs,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=max_tokens,
                num_return_sequences=generations,
                pad_token_id=processor.tokenizer.pad_token_id,
            )
        timings.append(time.perf_counter() - started)
        new = output[:, inputs["input_ids"].shape[1] :]
        done = (new == eos).int().cumsum(1)
        tokens = int(((done == 0) | ((done == 1) & (new == eos))).sum())  # up to and including the first EOS
    return tokens / statistics.median(timings), tokens, timings


def vllm_tokens_per_second(model_dir, conversations, images, generations, max_tokens, repeats):
    from vllm import LLM, SamplingParams

    from himed.models.loading import load_processor
    from himed.trainers.vllm_engine import collapse_image_runs

    processor = load_processor(model_dir)
    llm = LLM(
        model=str(model_dir),
        dtype="float32",
        max_model_len=1024,
        max_num_batched_tokens=4096,
        seed=0,
        logprobs_mode="processed_logprobs",
        limit_mm_per_prompt={"image": 2},
    )
    requests = []
    for conversation, study in zip(conversations, images, strict=True):
        ids = processor.apply_chat_template(
            [conversation], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"][0]
        prompt = {"prompt_token_ids": collapse_image_runs(list(ids), processor.image_token_id)}
        prompt["multi_modal_data"] = {"image": study if len(study) > 1 else study[0]}
        requests.extend([prompt] * generations)  # TRL's colocate mode: n=1 per duplicated prompt
    params = SamplingParams(n=1, temperature=1.0, top_p=1.0, top_k=0, max_tokens=max_tokens, logprobs=0)
    timings, tokens = [], 0
    for _ in range(repeats):
        llm.reset_prefix_cache()
        llm.llm_engine.reset_encoder_cache()  # every repeat pays the vision tower, as after a weight sync
        started = time.perf_counter()
        outputs = llm.generate(requests, params, use_tqdm=False)
        timings.append(time.perf_counter() - started)
        tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    del llm
    return tokens / statistics.median(timings), tokens, timings


def grpo_step_seconds(model_dir, demo_dir, use_vllm, prompts, generations, max_tokens, steps):
    from trl import GRPOConfig, ModelConfig

    from himed.trainers.config import DataArguments, RewardArguments
    from himed.trainers.grpo import run_grpo

    config = json.loads((Path(model_dir) / "config.json").read_text())
    vision_ids = [
        config[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    ]
    # A random-weight model samples these now and then; TRL's scoring forward then fails (image tokens without
    # images). Both engines are told to never sample them, each in its own terms.
    forbid = {"logit_bias": {i: -100.0 for i in vision_ids}} if use_vllm else {"suppress_tokens": vision_ids}
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            output_dir=out,
            use_cpu=True,
            bf16=False,
            learning_rate=1e-4,
            num_generations=generations,
            per_device_train_batch_size=prompts * generations,
            max_completion_length=max_tokens,
            max_steps=steps,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            seed=0,
            temperature=1.0,
            generation_kwargs=forbid,
            use_vllm=use_vllm,
            vllm_mode="colocate",
            vllm_max_model_length=1024,
        )
        trainer = run_grpo(
            DataArguments(data_path=str(demo_dir), max_train_samples=prompts * steps),
            RewardArguments(rewards=[{"name": "format"}, {"name": "token"}]),
            args,
            ModelConfig(model_name_or_path=str(model_dir), dtype="float32"),
        )
    times = [entry["step_time"] for entry in trainer.state.log_history if "step_time" in entry]
    return statistics.mean(times[1:]), times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/rollout.json")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grpo-steps", type=int, default=4)
    # Smaller GRPO steps: a random-weight model samples <|image_pad|> about once per thousand tokens, and TRL's
    # scoring forward then fails on a completion holding image tokens (the same in both modes).
    parser.add_argument("--grpo-prompts", type=int, default=4)
    parser.add_argument("--grpo-max-tokens", type=int, default=32)
    args = parser.parse_args(argv)

    from himed.data.demo import generate_demo
    from himed.models.tiny import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="rollout_bench_"))
    model_dir = build_tiny_model(work / "tiny", arch="qwen2_5_vl", seed=0)
    demo_dir = work / "demo"
    generate_demo(demo_dir, n=max(40, args.prompts * args.grpo_steps * 2), seed=0, lateral_rate=0.0)
    conversations, images = prompts_and_images(demo_dir, args.prompts)
    load = os.getloadavg()
    hf_rate, hf_tokens, hf_times = hf_tokens_per_second(
        model_dir, conversations, images, args.generations, args.max_tokens, args.repeats
    )
    vllm_rate, vllm_tokens, vllm_times = vllm_tokens_per_second(
        model_dir, conversations, images, args.generations, args.max_tokens, args.repeats
    )
    grpo = (args.grpo_prompts, args.generations, args.grpo_max_tokens, args.grpo_steps)
    hf_step, hf_steps = grpo_step_seconds(model_dir, demo_dir, False, *grpo)
    vllm_step, vllm_steps = grpo_step_seconds(model_dir, demo_dir, True, *grpo)
    result = {
        "command": "python benchmarks/rollout.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": vars(args),
        "load_average_at_start": [round(x, 2) for x in load],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "hf_generate": {"completion_tokens_per_s": round(hf_rate, 1), "tokens": hf_tokens, "seconds": hf_times},
        "vllm_colocate": {"completion_tokens_per_s": round(vllm_rate, 1), "tokens": vllm_tokens, "seconds": vllm_times},
        "vllm_over_hf_tokens_per_s": round(vllm_rate / hf_rate, 2),
        "grpo_step_seconds": {
            "hf": round(hf_step, 3),
            "vllm": round(vllm_step, 3),
            "hf_all": hf_steps,
            "vllm_all": vllm_steps,
        },
        "hf_over_vllm_step_time": round(hf_step / vllm_step, 2),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
