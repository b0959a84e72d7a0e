"""Generating predictions from a model for ``himed evaluate --model``.

Rows from ``load_rows``, prompts from ``build_prompt``, greedy decoding in batches with a progress bar, each
prediction appended to ``DIR/predictions.jsonl`` as soon as its batch is done. A rerun with the same ``--out-dir``
skips the ids already there (an interrupted run resumes); ``DIR/generation.json`` records the settings, and a rerun
with different ones is an error rather than a silently mixed file. Backends: ``hf`` (``model.generate`` with left
padding; CPU or GPU) and ``vllm`` (GPU; imported only when asked for). ``--hierarchical`` decodes as the Hi-MrGn
stage was trained (``himed.trainers.sft``): a first pass asks for the findings (``findings_prompt``), a second pass
asks for the impression with the first answer as the assistant's earlier turn (``impression_prompt``); the
prediction is the two answers joined by a line break.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from himed.data.sections import reference_text
from himed.metrics.predictions import LineProblems, json_lines

logger = logging.getLogger(__name__)

BACKENDS = ("hf", "vllm")


@dataclass
class GenerationSettings:
    """What decides the generated text; recorded in DIR/generation.json and checked when a run resumes."""

    model: str
    data: str
    data_format: str
    split: str
    sections: list[str]
    max_new_tokens: int = 256
    backend: str = "hf"
    hierarchical: bool = False
    # The image budget (docs/images.md): None keeps the model folder's, which the training stages saved.
    min_pixels: int | None = None
    max_pixels: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        if not self.hierarchical:  # runs recorded before the flag existed resume unchanged
            del out["hierarchical"]
        for name in ("min_pixels", "max_pixels"):
            if out[name] is None:  # likewise for runs recorded before the image budget existed
                del out[name]
        return out


def read_done_ids(path: Path, known_ids: set[str]) -> set[str]:
    """Ids already in a predictions file being resumed. A last line cut off mid-write (an interrupted run) is
    dropped from the file; any other bad line, or an id not in the dataset split, is an error naming its line."""
    if not path.exists():
        return set()
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        cut = text.rfind("\n") + 1
        logger.warning("%s: dropping an incomplete last line left by an interrupted run", path)
        path.write_text(text[:cut], encoding="utf-8")
    problems = LineProblems(str(path))
    done: dict[str, int] = {}
    for number, line in json_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            problems.add(f"not valid JSON ({error.msg})", number)
            continue
        row_id = str(record.get("id")) if isinstance(record, dict) and record.get("id") is not None else None
        if row_id is None:
            problems.add("no 'id' (a resumable predictions file has one per line)", number)
        elif row_id in done:
            problems.add(f"duplicate id {row_id!r} (first on line {done[row_id]})", number)
        elif row_id not in known_ids:
            problems.add("id not in the dataset split (mismatched ids: was the file made from other data?)", number)
        else:
            done[row_id] = number
    problems.raise_if_any()
    return set(done)


def _check_settings(out_dir: Path, settings: GenerationSettings, resuming: bool) -> None:
    path = out_dir / "generation.json"
    wanted = settings.as_dict()
    if path.exists() and resuming:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        # The backend may change between runs (greedy decoding gives the same text up to numerics).
        differ = sorted(k for k in wanted if k != "backend" and recorded.get(k) != wanted[k])
        if differ:
            details = ", ".join(f"{k}: {recorded.get(k)!r} -> {wanted[k]!r}" for k in differ)
            raise ValueError(
                f"{out_dir / 'predictions.jsonl'} was generated with other settings ({details}); "
                "use another --out-dir or delete the file"
            )
    path.write_text(json.dumps(wanted, indent=2) + "\n", encoding="utf-8")


def _pil_images(row: Mapping) -> list:
    """The study's images decoded as RGB; ``ImageDecodeError`` naming the study and the file when one fails."""
    from himed.data.decode_guard import decode_study_images

    return [image.convert("RGB") for image in decode_study_images(str(row["id"]), row["images"])]


def _decodable(batch: Sequence[Mapping], on_bad: str, skipped: list[str]) -> tuple[list[Mapping], list[list]]:
    """The rows of ``batch`` whose images decode, with their images; under ``on_bad="skip"`` the others are
    counted in ``skipped`` and logged by name, under ``"error"`` the first one raises ``ImageDecodeError``."""
    from himed.data.decode_guard import ImageDecodeError

    rows, images = [], []
    for row in batch:
        try:
            images.append(_pil_images(row))
        except ImageDecodeError as error:
            if on_bad != "skip":
                raise
            skipped.append(str(row["id"]))
            logger.warning("skipped study %s (%d skipped so far): %s", row["id"], len(skipped), error)
            continue
        rows.append(row)
    return rows, images


class HFGenerator:
    """Greedy batched generation with ``model.generate`` (left padding, so every prompt ends where decoding starts)."""

    def __init__(
        self,
        model_path: str,
        *,
        device: str = "auto",
        dtype: str | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
    ) -> None:
        import torch

        from himed.models.image_budget import apply_image_budget
        from himed.models.loading import load_policy, load_processor

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.processor = apply_image_budget(load_processor(model_path), min_pixels, max_pixels)
        self.processor.tokenizer.padding_side = "left"
        self.model = load_policy(model_path, dtype=dtype).to(device).eval()

    def generate(self, prompts: Sequence[list[dict]], images: Sequence[list], max_new_tokens: int) -> list[str]:
        import torch

        texts = [self.processor.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
        flat_images = [image for study in images for image in study]
        inputs = self.processor(text=texts, images=flat_images or None, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        tokenizer = self.processor.tokenizer
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


class VLLMGenerator:
    """Greedy generation with vLLM's offline ``LLM`` (GPU only)."""

    def __init__(
        self,
        model_path: str,
        *,
        max_images: int,
        dtype: str | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
    ) -> None:
        try:
            from vllm import LLM
        except ImportError as error:
            raise ValueError(
                "--backend vllm needs the vllm package (GPU machines: pip install 'himed[vllm]'); "
                f"it could not be imported: {error}"
            ) from None
        from himed.models.image_budget import apply_image_budget, image_budget_kwargs
        from himed.models.loading import load_processor

        self.processor = apply_image_budget(load_processor(model_path), min_pixels, max_pixels)
        budget = image_budget_kwargs(SimpleNamespace(min_pixels=min_pixels, max_pixels=max_pixels))
        self.llm = LLM(
            model=model_path,
            dtype=dtype or "auto",
            limit_mm_per_prompt={"image": max(1, max_images)},
            mm_processor_kwargs=budget or None,  # vLLM resizes as the trainer did (docs/images.md)
        )

    def generate(self, prompts: Sequence[list[dict]], images: Sequence[list], max_new_tokens: int) -> list[str]:
        from vllm import SamplingParams

        requests = [
            {
                "prompt": self.processor.apply_chat_template(p, add_generation_prompt=True, tokenize=False),
                "multi_modal_data": {"image": study},
            }
            for p, study in zip(prompts, images, strict=True)
        ]
        outputs = self.llm.generate(requests, SamplingParams(temperature=0.0, max_tokens=max_new_tokens))
        return [output.outputs[0].text.strip() for output in outputs]


def generate_hierarchical(
    generator: Any, rows: Sequence[Mapping], sections: Sequence[str], max_new_tokens: int, images=None
):
    """Hi-MrGn's two-pass decoding: the findings, then the impression conditioned on the images and the findings.

    ``max_new_tokens`` bounds each pass. Returns one prediction per row: the findings answer, a line break, and the
    impression answer (the tagged completion the hierarchical stage's two targets join to).
    """
    from himed.data.prompts import findings_prompt, impression_prompt

    images = images if images is not None else [_pil_images(row) for row in rows]
    first = [findings_prompt(row, sections=sections) for row in rows]
    findings = generator.generate(first, images, max_new_tokens)
    second = [impression_prompt(prompt, answer) for prompt, answer in zip(first, findings, strict=True)]
    impressions = generator.generate(second, images, max_new_tokens)
    return [f"{answer}\n{impression}" for answer, impression in zip(findings, impressions, strict=True)]


def generate_predictions(
    rows: Sequence[Mapping],
    out_dir: str | Path,
    settings: GenerationSettings,
    *,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str | None = None,
    generator: Any = None,
    on_bad: str = "error",
    skipped: list[str] | None = None,
) -> Path:
    """Append a prediction line for every row not yet in DIR/predictions.jsonl; returns its path.

    A study whose image does not decode raises ``ImageDecodeError`` naming it and the file (``on_bad="error"``), or
    gets no prediction line and its id is appended to ``skipped`` (``on_bad="skip"``), logged by name.

    ``generator``: an object with ``generate(prompts, images, max_new_tokens) -> list[str]`` (default: the
    backend's generator, built only when something is left to generate).
    """
    from tqdm import tqdm

    from himed.data.prompts import build_prompt, hierarchical_sections

    if settings.hierarchical:
        hierarchical_sections(settings.sections)  # needs the impression section: fail before loading a model
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if settings.backend not in BACKENDS:
        raise ValueError(f"unknown backend {settings.backend!r}; choose one of {', '.join(BACKENDS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "predictions.jsonl"
    ids = [str(row["id"]) for row in rows]
    done = read_done_ids(path, set(ids))
    _check_settings(out_dir, settings, resuming=bool(done))
    todo = [row for row in rows if str(row["id"]) not in done]
    if done:
        logger.info("%s: %d of %d predictions already there; generating %d", path, len(done), len(rows), len(todo))
    if not todo:
        return path
    skipped = skipped if skipped is not None else []
    if generator is None:
        budget = {"min_pixels": settings.min_pixels, "max_pixels": settings.max_pixels}
        if settings.backend == "vllm":
            max_images = max(len(r["images"]) for r in todo)
            generator = VLLMGenerator(settings.model, max_images=max_images, dtype=dtype, **budget)
        else:
            generator = HFGenerator(settings.model, device=device, dtype=dtype, **budget)
    with path.open("a", encoding="utf-8") as file, tqdm(total=len(todo), desc="generating", unit="report") as bar:
        for start in range(0, len(todo), batch_size):
            batch, images = _decodable(todo[start : start + batch_size], on_bad, skipped)
            if not batch:
                texts = []
            elif settings.hierarchical:
                texts = generate_hierarchical(generator, batch, settings.sections, settings.max_new_tokens, images)
            else:
                prompts = [build_prompt(row, sections=settings.sections) for row in batch]
                texts = generator.generate(prompts, images, settings.max_new_tokens)
            for row, text in zip(batch, texts, strict=True):
                findings, impression = row.get("findings") or "", row.get("impression") or ""
                record = {
                    "id": str(row["id"]),
                    "prediction": text,
                    "reference": reference_text(findings, impression),
                    "findings": findings,
                    "impression": impression,
                }
                # One write per line and a flush per batch: an interruption loses at most the batch in flight.
                file.write(json.dumps(record) + "\n")
            file.flush()
            bar.update(min(batch_size, len(todo) - start))
    if skipped:
        logger.warning("%d studies skipped for undecodable images: %s", len(skipped), ", ".join(skipped[:5]))
    return path
