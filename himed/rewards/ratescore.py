"""RaTEScore as a reward: entity-aware similarity of the completion to the reference (``himed.metrics.ratescore``).

HiMed-RL reports RaTEScore as its headline semantic metric; as a reward it scores each lenient completion text
against the reference in [0, 1] (0.5 when either report has no entity, as RaTEScore defines it). The two models are
the user's local folders, loaded strictly and once per process, never downloaded:

    - {name: ratescore, kwargs: {ner_model: /models/RaTE-NER-Deberta, embedding_model: /models/BioLORD-2023-C}}

Both may also come from the environment variables ``HIMED_RATESCORE_NER`` and ``HIMED_RATESCORE_EMBEDDING``. An
empty completion scores RaTEScore's empty-report value without running the models. A failure inside a batch turns
the batch into None (``Reward.score_completions``), never 0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from himed.data.sections import DEFAULT_SECTIONS, extract_lenient
from himed.rewards.base import Reward
from himed.rewards.registry import register_reward

NER_VARIABLE = "HIMED_RATESCORE_NER"
EMBEDDING_VARIABLE = "HIMED_RATESCORE_EMBEDDING"


@register_reward("ratescore", level="high", weight=1.0)
class RaTEScoreReward(Reward):
    """RaTEScore of the lenient completion text against the reference (entity matching with negation weights)."""

    name = "ratescore"
    level = "high"
    weight = 1.0

    def __init__(
        self,
        ner_model: str | None = None,
        embedding_model: str | None = None,
        affinity: str = "long",
        device: str = "cpu",
        batch_size: int = 16,
        sections: Sequence[str] = DEFAULT_SECTIONS,
    ):
        super().__init__(sections)
        from himed.metrics.ratescore import Affinity

        self.ner_model = ner_model or os.environ.get(NER_VARIABLE)
        self.embedding_model = embedding_model or os.environ.get(EMBEDDING_VARIABLE)
        missing = [
            name
            for name, value in (("ner_model", self.ner_model), ("embedding_model", self.embedding_model))
            if not value
        ]
        if missing:
            raise ValueError(
                f"the ratescore reward needs {' and '.join(missing)}: local model folders (RaTE-NER-Deberta and "
                f"BioLORD-2023-C), or ${NER_VARIABLE} / ${EMBEDDING_VARIABLE}; nothing is downloaded"
            )
        Affinity.named(affinity)  # a bad matrix is a config error now, not a None on every batch later
        self.options = {"affinity": affinity, "device": device, "batch_size": batch_size}

    def _scorer(self):
        from himed.metrics.ratescore import get_ratescorer

        return get_ratescorer(self.ner_model, self.embedding_model, **self.options)

    def score(self, texts: list[str], references: list[str], **columns: Any) -> list[dict[str, float | None]]:
        from himed.metrics.ratescore import EMPTY_SCORE

        candidates = [extract_lenient(text, self.sections) for text in texts]
        to_score = [i for i, candidate in enumerate(candidates) if candidate.strip()]
        values: dict[int, float] = dict.fromkeys(range(len(texts)), EMPTY_SCORE)
        if to_score:
            scores = self._scorer().score([candidates[i] for i in to_score], [references[i] for i in to_score])
            values.update(zip(to_score, scores, strict=True))
        return [{"value": values[i]} for i in range(len(texts))]

    def describe(self) -> dict[str, Any]:
        return {"ratescore_ner": self.ner_model, "ratescore_embedding": self.embedding_model, **self.options}
