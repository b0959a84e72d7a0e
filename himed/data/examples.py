"""Study rows -> the datasets that TRL's trainers read.

- GRPO rows: ``prompt`` (conversational messages with one image slot per image), ``images``, and the columns that
  rewards read as kwargs: ``reference`` (findings + " " + impression), ``findings``, ``impression``, ``labels``
  (JSON text: Arrow would otherwise turn the per-row label dicts into a struct with every key, None where unmentioned)
  and ``id``.
- SFT rows: ``prompt`` + ``completion`` (the tagged target, so TRL computes a completion-only loss) + ``images``.

Images stay paths (or PIL images from a saved HF dataset) in an Arrow ``Image`` column, decoded lazily by
``datasets`` when a batch is drawn, so a large dataset is not held in memory as pixels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from himed.data.prompts import build_prompt, rationale_from_labels
from himed.data.sections import DEFAULT_SECTIONS, reference_text, render_target


def _features(with_completion: bool):
    from datasets import Features, Image, List, Value

    message_part = {"type": Value("string"), "text": Value("string")}
    prompt = List({"role": Value("string"), "content": List(message_part)})
    columns = {"id": Value("string"), "prompt": prompt, "images": List(Image())}
    if with_completion:
        columns["completion"] = List({"role": Value("string"), "content": Value("string")})
    else:
        for name in ("reference", "findings", "impression", "labels"):
            columns[name] = Value("string")
    return Features(columns)


def _prompt_parts(messages: list[dict]) -> list[dict]:
    """Every message's content as a list of {type, text} parts, so that the Arrow schema is one struct type."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        parts = [{"type": part["type"], "text": part.get("text")} for part in content]
        out.append({"role": message["role"], "content": parts})
    return out


def target_completion(row: dict, sections: Sequence[str] = DEFAULT_SECTIONS, think: str = "labels") -> str:
    """The tagged target a supervised stage trains on (DESIGN.md section 2)."""
    think_text = rationale_from_labels(row.get("labels") or {}) if think == "labels" and "think" in sections else ""
    impression = row.get("impression", "") if "impression" in sections else ""
    return render_target(row["findings"], impression, think=think_text, sections=sections)


def _prompt_record(row: dict, sections, include_indication: bool, include_prior: bool) -> dict:
    messages = build_prompt(row, sections=sections, include_indication=include_indication, include_prior=include_prior)
    return {"id": str(row["id"]), "prompt": _prompt_parts(messages), "images": list(row["images"])}


def grpo_dataset(
    rows: Sequence[dict],
    *,
    sections: Sequence[str] = DEFAULT_SECTIONS,
    include_indication: bool = True,
    include_prior: bool = True,
):
    """A ``datasets.Dataset`` of GRPO prompts with the reward columns."""
    from datasets import Dataset

    records = [
        {
            **_prompt_record(row, sections, include_indication, include_prior),
            "reference": reference_text(row["findings"], row.get("impression", "")),
            "findings": row["findings"],
            "impression": row.get("impression", "") or "",
            "labels": json.dumps(row.get("labels") or {}, sort_keys=True),
        }
        for row in rows
    ]
    return Dataset.from_list(records, features=_features(with_completion=False))


def sft_dataset(
    rows: Sequence[dict],
    *,
    sections: Sequence[str] = DEFAULT_SECTIONS,
    think: str = "labels",
    include_indication: bool = True,
    include_prior: bool = True,
):
    """A ``datasets.Dataset`` of prompt/completion pairs (completion-only loss in TRL's SFTTrainer)."""
    from datasets import Dataset

    records = [
        {
            **_prompt_record(row, sections, include_indication, include_prior),
            "completion": [{"role": "assistant", "content": target_completion(row, sections, think)}],
        }
        for row in rows
    ]
    return Dataset.from_list(records, features=_features(with_completion=True))
