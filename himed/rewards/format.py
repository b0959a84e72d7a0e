"""The format reward of HiMed-RL (eq. 7): +1 when the completion parses strictly into the recipe's sections, else -1.

Strict parse (docs/data.md, ``himed.data.sections.parse_strict``): exactly one of each configured tag, in
order, only whitespace outside them, finding and impression non-empty. The reference is not used, so this reward
scores rows without a reference column too; it never returns None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from himed.data.sections import DEFAULT_SECTIONS, completion_text, parse_strict, validate_sections
from himed.rewards.base import Reward
from himed.rewards.registry import register_reward

FORMAT_PASS, FORMAT_FAIL = 1.0, -1.0  # HiMed-RL eq. 7


@register_reward
class FormatReward(Reward):
    """+1 when the completion parses strictly into the sections, -1 otherwise (HiMed-RL eq. 7).

    ``sections``: the recipe's completion sections.
    """

    name = "format"
    level = "low"
    weight = 1.0
    parts = ()

    def __init__(self, sections: Sequence[str] = DEFAULT_SECTIONS):
        super().__init__(sections=validate_sections(sections))

    def score(self, texts: list[str], references: list[str], **columns: Any) -> list[dict[str, float | None]]:
        return [
            {"value": FORMAT_PASS if parse_strict(text, self.sections) is not None else FORMAT_FAIL} for text in texts
        ]

    def score_completions(self, completions: Sequence, **columns: Any) -> list[dict[str, float | None]]:
        # No reference needed: skip the base class's reference lookup so that a row without one is still scored.
        texts = [completion_text(c) for c in completions]
        try:
            return self.score(texts, [], **columns)
        except Exception:  # the base class's promise: never crash a step
            return super().score_completions(completions, **columns)
