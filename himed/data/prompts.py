"""Prompts for report generation in TRL's conversational format, and the think text of the SFT cold start.

``build_prompt(row)`` returns messages with structured content (lists of parts), which TRL passes to the
processor's chat template unchanged and whose ``{"type": "image"}`` slots it fills from the row's ``images`` in
order::

    [{"role": "system", "content": [{"type": "text", "text": <system_prompt(sections)>}]},
     {"role": "user", "content": [
         {"type": "text", "text": "Image 1 (PA view):"}, {"type": "image"},
         {"type": "text", "text": "\\nImage 2 (LATERAL view):"}, {"type": "image"},
         {"type": "text", "text": "\\nIndication: ..."},        # when the row has one and it is asked for
         {"type": "text", "text": "\\nPrior report: ..."},      # likewise
         {"type": "text", "text": "\\nWrite the report."}]}]

Every prompt token costs time for the tiny CPU models, so the texts are short. Chat templates join parts with
nothing between them, so each text part after the first starts with a line break. A view of ``UNKNOWN`` is not named
("Image 1:"). Without a system message (``system=False``, for chat templates without a system role) the format
request moves into the user's instruction, so the model is always told the tagged format of sections.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from himed.clinical.observations import (
    CHEXBERT_OBSERVATIONS,
    NEGATIVE,
    NO_FINDING,
    POSITIVE,
    SUPPORT_DEVICES,
    UNCERTAIN,
)
from himed.data.rows import UNKNOWN_VIEW
from himed.data.sections import DEFAULT_SECTIONS, validate_sections

# What each section tag should hold, as shown to the model.
SECTION_PLACEHOLDERS = {"think": "brief reasoning", "finding": "findings", "impression": "impression"}
SYSTEM_PROMPT_TEMPLATE = "You are a radiologist. Write the chest X-ray report in this format: {format}"
INSTRUCTION = "Write the report."


def tagged_format(sections: Sequence[str] = DEFAULT_SECTIONS) -> str:
    """The tag skeleton for ``sections``, e.g. ``<think>brief reasoning</think><finding>findings</finding>...``."""
    return "".join(f"<{name}>{SECTION_PLACEHOLDERS[name]}</{name}>" for name in validate_sections(sections))


def system_prompt(sections: Sequence[str] = DEFAULT_SECTIONS) -> str:
    """The system prompt asking for the tagged format of ``sections``."""
    return SYSTEM_PROMPT_TEMPLATE.format(format=tagged_format(sections))


def _text(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


def image_label(index: int, view: str) -> str:
    """``Image 1 (PA view):``, or ``Image 1:`` when the view is unknown."""
    if not view or view == UNKNOWN_VIEW:
        return f"Image {index}:"
    return f"Image {index} ({view} view):"


def build_prompt(
    row: Mapping,
    *,
    sections: Sequence[str] = DEFAULT_SECTIONS,
    include_indication: bool = True,
    include_prior: bool = True,
    system: bool = True,
    instruction: str | None = None,
) -> list[dict]:
    """The conversational prompt for one study row (module docstring); one image slot per image, in order.

    ``instruction`` replaces the report request with another task (the observation stage's "Describe the pleural
    effusion."); its answer is plain sentences, so the prompt then carries no system message and no format request.
    """
    images = row.get("images")
    if not isinstance(images, Sequence) or isinstance(images, str) or not images:
        raise ValueError(f"row {row.get('id')!r}: 'images' must be a non-empty list to build a prompt")
    views = row.get("views") or [UNKNOWN_VIEW] * len(images)
    if len(views) != len(images):
        raise ValueError(f"row {row.get('id')!r}: {len(views)} views for {len(images)} images")
    lines = []
    for index, view in enumerate(views, 1):
        lines += [image_label(index, view), None]  # None: the image slot after its label
    if include_indication and row.get("indication"):
        lines.append(f"Indication: {row['indication']}")
    if include_prior and row.get("prior_report"):
        lines.append(f"Prior report: {row['prior_report']}")
    if instruction is not None:
        lines.append(instruction)
        system = False
    else:
        lines.append(INSTRUCTION if system else f"{INSTRUCTION} Use this format: {tagged_format(sections)}")
    # Chat templates (Qwen-VL's among them) concatenate parts with nothing between them, so each text part after
    # the first starts with its own line break; otherwise "Cough.Write the report." would run together.
    content = [
        {"type": "image"} if line is None else _text(line if i == 0 else f"\n{line}") for i, line in enumerate(lines)
    ]
    user = {"role": "user", "content": content}
    if system:
        return [{"role": "system", "content": [_text(system_prompt(sections))]}, user]
    return [user]


def rationale_from_labels(labels: Mapping[str, int], *, include_negative: bool = True) -> str:
    """A short think text from a row's labels, for the SFT cold start's ``<think>`` section.

    E.g. ``"Positive: cardiomegaly, pleural effusion. Uncertain: edema. Negative: pneumothorax."``, or
    ``"No acute findings."`` first when nothing but support devices is positive or uncertain (the No Finding rule
    of docs/data.md). No Finding itself is not listed. ``include_negative=False`` drops the negatives (fewer
    tokens for tiny models). Empty labels (not known) give ``""``: a rationale would be invented.
    """
    if not labels:
        return ""
    by_value: dict[int, list[str]] = {POSITIVE: [], UNCERTAIN: [], NEGATIVE: []}
    for name in CHEXBERT_OBSERVATIONS:  # a fixed order, so equal labels give equal text
        if name != NO_FINDING and labels.get(name) in by_value:
            by_value[labels[name]].append(name.lower())
    sentences = []
    acute = [name for name in by_value[POSITIVE] + by_value[UNCERTAIN] if name != SUPPORT_DEVICES.lower()]
    if not acute:
        sentences.append("No acute findings.")
    for value, title in ((POSITIVE, "Positive"), (UNCERTAIN, "Uncertain"), (NEGATIVE, "Negative")):
        if by_value[value] and (include_negative or value != NEGATIVE):
            sentences.append(f"{title}: {', '.join(by_value[value])}.")
    return " ".join(sentences)


# Hi-MrGn's hierarchical generation: the findings first, then the impression conditioned on the images and findings.
FINDINGS_INSTRUCTION = "Write the findings. Use this format: {format}"
IMPRESSION_INSTRUCTION = "Write the impression. Use this format: {format}"


def hierarchical_sections(sections: Sequence[str] = DEFAULT_SECTIONS) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The sections of the findings turn and of the impression turn; ``sections`` must include the impression."""
    sections = validate_sections(sections)
    if "impression" not in sections:
        raise ValueError(f"hierarchical generation needs an impression section, got {list(sections)}")
    return tuple(name for name in sections if name != "impression"), ("impression",)


def findings_prompt(
    row: Mapping,
    *,
    sections: Sequence[str] = DEFAULT_SECTIONS,
    include_indication: bool = True,
    include_prior: bool = True,
) -> list[dict]:
    """The first turn of hierarchical generation: the report prompt asking for the findings (and think) only."""
    first, _ = hierarchical_sections(sections)
    instruction = FINDINGS_INSTRUCTION.format(format=tagged_format(first))
    return build_prompt(
        row,
        sections=sections,
        include_indication=include_indication,
        include_prior=include_prior,
        instruction=instruction,
    )


def impression_prompt(first_prompt: Sequence[dict], findings_answer: str) -> list[dict]:
    """The second turn: the first prompt, the findings answer as the assistant's turn, then the impression request.

    Joining ``findings_answer`` and the impression answer with a line break gives the full tagged completion.
    """
    request = IMPRESSION_INSTRUCTION.format(format=f"<impression>{SECTION_PLACEHOLDERS['impression']}</impression>")
    return [
        *first_prompt,
        {"role": "assistant", "content": [_text(findings_answer)]},
        {"role": "user", "content": [_text(request)]},
    ]
