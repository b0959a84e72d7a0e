"""GREEN as a reward: matched findings / (matched + clinically significant errors), judged by an LLM server.

The judge is ``himed.verifiers.green.GreenJudge`` on any OpenAI-compatible endpoint (GREEN-RadLlama2-7b served by
vLLM, or another model); ``judge`` takes its keys (``base_url``, ``model``, ``concurrency``, ``timeout``,
``max_retries``, ``cache_path``, ...):

    - name: green
      kwargs: {judge: {base_url: "http://127.0.0.1:8002/v1", model: StanfordAIMI/GREEN-RadLlama2-7b}}

Parts: ``green/matched``, ``green/significant_errors`` and one ``green/significant/<category>`` per error category.
An empty completion scores 0 without a request (GREEN of an empty report has nothing matched, which the package
scores 0). A pair whose answer stays unusable after the retries is None (imputed by the composite), never 0; a missing
API key is raised, as for the semantic reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from himed.data.sections import DEFAULT_SECTIONS, extract_lenient
from himed.rewards.base import Reward
from himed.rewards.registry import register_reward
from himed.verifiers.base import JudgeConfigError


@register_reward("green", level="high", weight=1.0)
class GreenReward(Reward):
    """GREEN of the lenient completion text against the reference: matched / (matched + significant errors)."""

    name = "green"
    level = "high"
    weight = 1.0
    raised_errors = (JudgeConfigError,)  # a judge set-up error (no API key) stops the run
    # himed.verifiers.green.ERROR_NAMES, spelled out here so listing the catalogue does not import the judge client.
    parts = (
        "matched",
        "significant_errors",
        *(
            f"significant/{name}"
            for name in (
                "false_finding",
                "missing_finding",
                "location",
                "severity",
                "false_comparison",
                "missing_comparison",
            )
        ),
    )

    def __init__(self, judge: dict[str, Any] | None = None, sections: Sequence[str] = DEFAULT_SECTIONS):
        super().__init__(sections)
        from himed.verifiers.green import GreenJudge

        if not isinstance(judge, dict) or "base_url" not in judge or "model" not in judge:
            raise ValueError("the green reward needs judge: {base_url: http://HOST:PORT/v1, model: NAME, ...}")
        self.judge = GreenJudge(**judge)

    def score(self, texts: list[str], references: list[str], **columns: Any) -> list[dict[str, float | None]]:
        from himed.verifiers.green import ERROR_NAMES

        candidates = [extract_lenient(text, self.sections) for text in texts]
        to_judge = [i for i, candidate in enumerate(candidates) if candidate.strip() and references[i].strip()]
        analyses = self.judge.score_batch_sync([(candidates[i], references[i]) for i in to_judge]) if to_judge else []
        judged = dict(zip(to_judge, analyses, strict=True))
        empty_parts = {"matched": None, "significant_errors": None, **{f"significant/{n}": None for n in ERROR_NAMES}}
        results: list[dict[str, float | None]] = []
        for i, candidate in enumerate(candidates):
            if not references[i].strip():
                results.append({"value": None, **empty_parts})
            elif not candidate.strip():
                results.append({"value": 0.0, "matched": 0.0, "significant_errors": 0.0})
            elif judged[i] is None:
                results.append({"value": None, **empty_parts})
            else:
                analysis = judged[i]
                parts = analysis.parts()
                parts.pop("insignificant_errors")
                results.append({"value": analysis.score, **parts})
        return results

    def metrics(self) -> dict[str, float]:
        return self.judge.metrics()

    def describe(self) -> dict[str, Any]:
        return self.judge.describe()

    def close(self) -> None:
        self.judge.close()
