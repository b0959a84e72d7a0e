"""Study rows -> the datasets that TRL's trainers read.

- GRPO rows: ``prompt`` (conversational messages with one image slot per image), ``images``, and the columns that
  rewards read as kwargs: ``reference`` (findings + " " + impression), ``findings``, ``impression``, ``labels``
  (JSON text: Arrow would otherwise turn the per-row label dicts into a struct with every key, None where unmentioned)
  and ``id``.
- SFT rows: ``prompt`` + ``completion`` (the tagged target, so TRL computes a completion-only loss) + ``images``;
  with ``weighted=True`` also ``weighted_spans``: the character spans of the target that the LLM-RG4 token-weighted
  loss up-weights (``weighted_spans``).

Images stay paths (or PIL images from a saved HF dataset) in an Arrow ``Image`` column, decoded lazily by
``datasets`` when a batch is drawn, so a large dataset is not held in memory as pixels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from himed.clinical.observations import POSITIVE, UNCERTAIN
from himed.data.prompts import (
    build_prompt,
    findings_prompt,
    hierarchical_sections,
    impression_prompt,
    rationale_from_labels,
)
from himed.data.sections import DEFAULT_SECTIONS, reference_text, render_target

# Report sections whose sentences the weighted loss may up-weight; <think> is a rationale, not report text.
WEIGHTED_SECTIONS = ("finding", "impression")


def _features(with_completion: bool, weighted: bool = False):
    from datasets import Features, Image, List, Value

    message_part = {"type": Value("string"), "text": Value("string")}
    prompt = List({"role": Value("string"), "content": List(message_part)})
    columns = {"id": Value("string"), "prompt": prompt, "images": List(Image())}
    if with_completion:
        columns["completion"] = List({"role": Value("string"), "content": Value("string")})
        if weighted:
            columns["weighted_spans"] = List(List(Value("int64")))
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
    """The tagged target a supervised stage trains on (docs/data.md)."""
    think_text = rationale_from_labels(row.get("labels") or {}) if think == "labels" and "think" in sections else ""
    impression = row.get("impression", "") if "impression" in sections else ""
    return render_target(row["findings"], impression, think=think_text, sections=sections)


def weighted_spans(target: str, sections: Sequence[str] = DEFAULT_SECTIONS, labeler=None) -> list[list[int]]:
    """Character spans ``[start, end)`` of ``target`` (a tagged completion) that the LLM-RG4 weighted loss up-weights.

    A span is a sentence of the finding or impression section in which the rule labeler finds a positive or
    uncertain mention; sentences with only negative mentions, the <think> rationale and the tags are not weighted.
    Offsets index ``target`` itself, in order, without overlaps.
    """
    from himed.clinical.rules import ChexpertRuleLabeler, split_sentences

    labeler = labeler or ChexpertRuleLabeler()
    spans = []
    for name in sections:
        if name not in WEIGHTED_SECTIONS:
            continue
        open_tag, close_tag = f"<{name}>", f"</{name}>"
        start = target.find(open_tag)
        if start < 0:
            continue
        start += len(open_tag)
        text = target[start : target.index(close_tag, start)]
        sentences = split_sentences(text)
        flagged = sorted({m.sentence_index for m in labeler.mentions(text) if m.value in (POSITIVE, UNCERTAIN)})
        spans += [[start + sentences[i][0], start + sentences[i][1]] for i in flagged]
    return spans


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
    weighted: bool = False,
):
    """A ``datasets.Dataset`` of prompt/completion pairs (completion-only loss in TRL's SFTTrainer).

    ``weighted=True`` adds the ``weighted_spans`` column of each target (``weighted_spans``).
    """
    from datasets import Dataset

    records = []
    for row in rows:
        target = target_completion(row, sections, think)
        record = {
            **_prompt_record(row, sections, include_indication, include_prior),
            "completion": [{"role": "assistant", "content": target}],
        }
        if weighted:
            record["weighted_spans"] = weighted_spans(target, sections)
        records.append(record)
    return Dataset.from_list(records, features=_features(with_completion=True, weighted=weighted))


def observation_dataset(
    rows: Sequence[dict],
    *,
    observations: Sequence[str] | None = None,
    include_indication: bool = True,
    include_prior: bool = True,
):
    """A ``datasets.Dataset`` of DCRRG observation examples (``himed.data.observations``) as prompt/completion pairs.

    ``observations`` defaults to the five observations (docs/data.md); the completion is the plain target sentences.
    """
    from datasets import Dataset

    from himed.clinical.observations import FIVE_OBSERVATIONS
    from himed.data.observations import observation_examples

    records = [
        {
            "id": example["id"],
            "prompt": _prompt_parts(example["prompt"]),
            "images": list(row["images"]),
            "completion": [{"role": "assistant", "content": example["target"]}],
        }
        for row in rows
        for example in observation_examples(
            row,
            observations or FIVE_OBSERVATIONS,
            include_indication=include_indication,
            include_prior=include_prior,
        )
    ]
    if not records:
        raise ValueError("no row has a report sentence or negative label for any of the requested observations")
    return Dataset.from_list(records, features=_features(with_completion=True))


def hierarchical_examples(
    row: dict,
    *,
    sections: Sequence[str] = DEFAULT_SECTIONS,
    think: str = "labels",
    include_indication: bool = True,
    include_prior: bool = True,
) -> list[dict]:
    """Hi-MrGn's two turns of one study as ``{prompt, target}`` pairs: findings first, then the impression.

    The second prompt holds the first turn with its target as the assistant's answer, so the impression is learned
    conditioned on the images and the findings. The two targets joined by a line break are ``target_completion``.
    A row without an impression gives only the findings turn.
    """
    first_sections, _ = hierarchical_sections(sections)
    think_text = rationale_from_labels(row.get("labels") or {}) if think == "labels" and "think" in sections else ""
    findings_target = render_target(row["findings"], think=think_text, sections=first_sections)
    prompt = findings_prompt(row, sections=sections, include_indication=include_indication, include_prior=include_prior)
    turns = [{"prompt": prompt, "target": findings_target}]
    impression = (row.get("impression") or "").strip()
    if impression:
        turns.append(
            {"prompt": impression_prompt(prompt, findings_target), "target": f"<impression>{impression}</impression>"}
        )
    return turns


def hierarchical_dataset(
    rows: Sequence[dict],
    *,
    sections: Sequence[str] = DEFAULT_SECTIONS,
    think: str = "labels",
    include_indication: bool = True,
    include_prior: bool = True,
):
    """A ``datasets.Dataset`` of the two hierarchical turns of every row (``hierarchical_examples``)."""
    from datasets import Dataset

    options = {
        "sections": sections,
        "think": think,
        "include_indication": include_indication,
        "include_prior": include_prior,
    }
    records = [
        {
            "id": f"{row['id']}/{turn}",
            "prompt": _prompt_parts(example["prompt"]),
            "images": list(row["images"]),
            "completion": [{"role": "assistant", "content": example["target"]}],
        }
        for row in rows
        for turn, example in zip(("findings", "impression"), hierarchical_examples(row, **options), strict=False)
    ]
    return Dataset.from_list(records, features=_features(with_completion=True))
