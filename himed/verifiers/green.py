"""GREEN (Ostmeier et al. 2024, "GREEN: Generative Radiology Report Evaluation and Error Notation") through an
OpenAI-compatible server, on the judge service layer.

What is the published method (github Stanford-AIMI/GREEN, ``green_score/utils.py`` ``make_prompt`` and
``green_score/green.py`` ``parse_error_counts`` / ``compute_green``):

- One prompt per (reference, candidate) pair, ``green_prompt``: the package's text word for word, each report cut to
  its first 300 whitespace-separated words. The model (GREEN-RadLlama2-7b, or any other) answers in the sections
  ``[Explanation]``, ``[Clinically Significant Errors]``, ``[Clinically Insignificant Errors]``, ``[Matched Findings]``.
- The six error categories ``ERROR_CATEGORIES`` (a)-(f); each line ``(x) <Error Type>: <count>. ...`` gives a count.
- GREEN = matched / (matched + sum of the six clinically significant error counts) (GREEN paper eq. 1); when the
  matched count is 0 the package returns 0 (whatever the error counts; so 0 matched and 0 errors is 0).

How it is served: ``GreenJudge`` is an ``OpenAIJudge`` (same client, concurrency bound, per-request timeout, batch
deadline, retries with backoff and Retry-After, de-duplication, cache, counters) that sends the GREEN prompt as the
single user message, asks for no structured output (GREEN's answer is free text), and parses the answer with
``parse_green``. The server applies the model's chat template; GREEN's own (``GREEN_CHAT_TEMPLATE``, set by the
package on the tokenizer) can be given to vLLM with ``--chat-template``. Greedy decoding (``temperature: 0``), as the
package's ``generate(do_sample=False)``.

Where it departs from the package:

- An answer without a ``[Clinically Significant Errors]`` or ``[Matched Findings]`` section, or whose matched section
  neither starts with "No" nor gives a count, is unusable: retried, then None (never 0). The package scores such an
  answer 0 (its ``for_reward=False`` path counts a missing section as zero errors and zero matches).
- A ``<think>...</think>`` block (reasoning models) is dropped before parsing.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from himed.verifiers.openai_judge import OpenAIJudge, _answer_text
from himed.verifiers.prompt import JudgementError
from himed.verifiers.service import JudgeCache

ERROR_CATEGORIES = (
    "(a) False report of a finding in the candidate",
    "(b) Missing a finding present in the reference",
    "(c) Misidentification of a finding's anatomic location/position",
    "(d) Misassessment of the severity of a finding",
    "(e) Mentioning a comparison that isn't in the reference",
    "(f) Omitting a comparison detailing a change from a prior study",
)
# Short names for parts and counters, in ERROR_CATEGORIES order.
ERROR_NAMES = ("false_finding", "missing_finding", "location", "severity", "false_comparison", "missing_comparison")
SIGNIFICANT = "Clinically Significant Errors"
INSIGNIFICANT = "Clinically Insignificant Errors"
MATCHED = "Matched Findings"
MAX_WORDS = 300  # make_prompt(max_len=300)
# green_score/green.py: the chat template the package sets on GREEN-RadLlama2's tokenizer (for vLLM --chat-template).
GREEN_CHAT_TEMPLATE = (
    "{% for message in messages %}\n{% if message['from'] == 'human' %}\n{{ '<|user|>\n' + message['value'] + "
    "eos_token }}\n{% elif message['from'] == 'system' %}\n{{ '<|system|>\n' + message['value'] + eos_token }}\n"
    "{% elif message['from'] == 'gpt' %}\n{{ '<|assistant|>\n'  + message['value'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)

# green_score/utils.py make_prompt, verbatim (the reference is text1, the candidate text2).
_PROMPT = (
    "Objective: Evaluate the accuracy of a candidate radiology report in comparison to a reference radiology report "
    "composed by expert radiologists.\n\n    Process Overview: You will be presented with:\n\n    1. The criteria for "
    "making a judgment.\n    2. The reference radiology report.\n    3. The candidate radiology report.\n    4. The "
    "desired format for your assessment.\n\n    1. Criteria for Judgment:\n\n    For each candidate report, "
    "determine:\n\n    The count of clinically significant errors.\n    The count of clinically insignificant errors."
    "\n\n    Errors can fall into one of these categories:\n\n    a) False report of a finding in the candidate.\n    "
    "b) Missing a finding present in the reference.\n    c) Misidentification of a finding's anatomic location/"
    "position.\n    d) Misassessment of the severity of a finding.\n    e) Mentioning a comparison that isn't in the "
    "reference.\n    f) Omitting a comparison detailing a change from a prior study.\n    Note: Concentrate on the "
    "clinical findings rather than the report's writing style. Evaluate only the findings that appear in both "
    "reports.\n\n    2. Reference Report:\n    {reference}\n\n    3. Candidate Report:\n    {candidate}\n\n    4. "
    "Reporting Your Assessment:\n\n    Follow this specific format for your output, even if no errors are found:\n"
    "    ```\n    [Explanation]:\n    <Explanation>\n\n    [Clinically Significant Errors]:\n    (a) <Error Type>: "
    "<The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n    ....\n    (f) <Error Type>: <The number of "
    "errors>. <Error 1>; <Error 2>; ...; <Error n>\n\n    [Clinically Insignificant Errors]:\n    (a) <Error Type>: "
    "<The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n    ....\n    (f) <Error Type>: <The number of "
    "errors>. <Error 1>; <Error 2>; ...; <Error n>\n\n    [Matched Findings]:\n    <The number of matched findings>. "
    "<Finding 1>; <Finding 2>; ...; <Finding n>\n    ```\n"
)
GREEN_PROMPT_HASH = hashlib.sha256(_PROMPT.encode("utf-8")).hexdigest()[:16]
_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)


def green_prompt(reference: str, candidate: str, max_words: int = MAX_WORDS) -> str:
    """GREEN's prompt for one pair (``make_prompt``): each report cut to ``max_words`` words."""
    reference = " ".join((reference or "").split()[:max_words])
    candidate = " ".join((candidate or "").split()[:max_words])
    return _PROMPT.replace("{reference}", reference, 1).replace("{candidate}", candidate, 1)


@dataclass(frozen=True)
class GreenAnalysis:
    """One parsed GREEN answer: matched findings and the six significant (and insignificant) error counts."""

    matched: int
    significant: tuple[int, ...]
    insignificant: tuple[int, ...]

    @property
    def score(self) -> float:
        """GREEN paper eq. 1 as ``compute_green`` computes it: 0 when nothing matched."""
        if self.matched == 0:
            return 0.0
        return self.matched / (self.matched + sum(self.significant))

    def parts(self) -> dict[str, float]:
        out = {"matched": float(self.matched), "significant_errors": float(sum(self.significant))}
        out.update({f"significant/{name}": float(count) for name, count in zip(ERROR_NAMES, self.significant)})  # noqa: B905
        out["insignificant_errors"] = float(sum(self.insignificant))
        return out

    def to_json(self) -> str:
        return json.dumps([self.matched, list(self.significant), list(self.insignificant)])

    @classmethod
    def from_json(cls, text: str) -> GreenAnalysis:
        matched, significant, insignificant = json.loads(text)
        return cls(int(matched), tuple(significant), tuple(insignificant))


def _section(text: str, category: str) -> str | None:
    match = re.search(rf"\[{category}\]:\s*(.*?)(?:\n\s*\n|\Z)", text, re.DOTALL)
    return match.group(1) if match else None


def _error_counts(section: str) -> tuple[int, ...]:
    """The six counts of an error section, as ``parse_error_counts`` reads them (absent lines count 0)."""
    counts = [0] * len(ERROR_CATEGORIES)
    if section.startswith("No"):
        return tuple(counts)
    prefixes = [category.split(" ", 1)[0] + " " for category in ERROR_CATEGORIES]
    lines = sorted(re.findall(r"\([a-f]\) .*", section))
    if not lines:  # the package also accepts (1)-(6)
        lines = sorted(re.findall(r"\([1-6]\) .*", section))
        prefixes = [f"({i}) " for i in range(1, len(ERROR_CATEGORIES) + 1)]
    for position, prefix in enumerate(prefixes):
        for line in lines:
            if line.startswith(prefix):
                found = re.findall(r"(?<=: )\b\d+\b(?=\.)", line)
                if found:
                    counts[position] = int(found[0])
    return tuple(counts)


def parse_green(text: str | None) -> GreenAnalysis:
    """A GREEN answer's counts; ``JudgementError("parse", ...)`` when it cannot be used (module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise JudgementError("parse", "empty answer")
    text = _THINK.sub("", text)
    significant = _section(text, SIGNIFICANT)
    matched_text = _section(text, MATCHED)
    if significant is None or matched_text is None:
        missing = [name for name, part in ((SIGNIFICANT, significant), (MATCHED, matched_text)) if part is None]
        raise JudgementError("parse", f"no [{'] or ['.join(missing)}] section in the answer: {text[:120]!r}")
    if matched_text.startswith("No"):
        matched = 0
    else:
        counts = re.findall(r"^\b\d+\b(?=\.)", matched_text)
        if not counts:
            raise JudgementError("parse", f"no count in the [{MATCHED}] section: {matched_text[:80]!r}")
        matched = int(counts[0])
    insignificant = _section(text, INSIGNIFICANT)
    return GreenAnalysis(
        matched=matched,
        significant=_error_counts(significant),
        insignificant=_error_counts(insignificant) if insignificant is not None else (0,) * len(ERROR_CATEGORIES),
    )


class GreenCache(JudgeCache):
    """``JudgeCache`` for ``GreenAnalysis`` values: the same LRU and SQLite file rules, its own table."""

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS green (key TEXT PRIMARY KEY, analysis TEXT, created REAL)")
            self._db = db
        return self._db

    def get(self, key: str) -> GreenAnalysis | None:
        with self._lock:
            value = self._memory.get(key)
            if value is not None:
                self._memory.move_to_end(key)
                return value
            if self.path is None:
                return None
            row = self._connection().execute("SELECT analysis FROM green WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            value = GreenAnalysis.from_json(row[0])
            self._remember(key, value)
            return value

    def put(self, key: str, value: GreenAnalysis) -> None:
        with self._lock:
            self._remember(key, value)
            if self.path is not None:
                self._connection().execute(
                    "INSERT OR IGNORE INTO green VALUES (?, ?, ?)", (key, value.to_json(), time.time())
                )


class GreenJudge(OpenAIJudge):
    """GREEN on any OpenAI-compatible endpoint; ``score_batch`` gives a ``GreenAnalysis`` or None per pair.

    Takes every ``OpenAIJudge`` argument (``base_url``, ``model``, ``concurrency``, ``timeout``, ``max_retries``,
    ``cache_path``, ...) except ``response_format`` and ``max_report_chars``; ``max_words`` cuts each report as the
    package does. ``max_tokens`` defaults to 1024: GREEN's answer lists every error and match.
    """

    backend = "green"

    def __init__(self, base_url: str, model: str, *, max_tokens: int = 1024, max_words: int = MAX_WORDS, **kwargs):
        for key in ("response_format", "max_report_chars"):
            if key in kwargs:
                raise ValueError(f"the GREEN judge does not take {key!r}: its prompt and answer format are fixed")
        super().__init__(base_url, model, max_tokens=max_tokens, response_format="none", **kwargs)
        if int(max_words) < 1:
            raise ValueError(f"max_words must be >= 1, got {max_words}")
        self.max_words = int(max_words)
        self.prompt_hash = f"green-{GREEN_PROMPT_HASH}-w{self.max_words}"
        self.cache = GreenCache(kwargs.get("cache_path"), max_entries=int(kwargs.get("cache_size", 200_000)))

    def _request(self, pair, level: str) -> dict[str, Any]:
        candidate, reference = pair
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": green_prompt(reference, candidate, self.max_words)}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.extra_body:
            request.update(self.extra_body)
        return request

    def _parse_answer(self, answer: Any) -> GreenAnalysis:
        return parse_green(_answer_text(answer))

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described.pop("judge/response_format", None)
        return {
            **described,
            "judge/backend": "green",
            "judge/prompt_version": "green-v1",
            "judge/max_words": self.max_words,
        }


def green(
    predictions: list[str], references: list[str], **judge_options: Any
) -> tuple[dict[str, float], list[GreenAnalysis | None], dict[str, Any]]:
    """Corpus GREEN (the mean over the pairs the judge could score, as the package's ``np.mean``), the per-pair
    analyses (None where unusable after retries) and what to record in ``config``.

    ``judge_options``: ``GreenJudge`` arguments (``base_url``, ``model``, ...). With no pair scored, the corpus dict
    is empty: the metric is undefined, never 0.
    """
    judge = GreenJudge(**judge_options)
    try:
        analyses = judge.score_batch_sync(list(zip(predictions, references, strict=True)))
    finally:
        judge.close()
    scored = [analysis for analysis in analyses if analysis is not None]
    corpus: dict[str, float] = {}
    if scored:
        corpus["green"] = sum(analysis.score for analysis in scored) / len(scored)
        for position, name in enumerate(ERROR_NAMES):
            corpus[f"green_errors_{name}"] = sum(a.significant[position] for a in scored) / len(scored)
    info = {
        "model": judge.model,
        "prompt_hash": judge.prompt_hash,
        "unscored_pairs": len(analyses) - len(scored),
        "failures": {k: v for k, v in judge.metrics().items() if k.startswith("judge/failures")},
    }
    return corpus, analyses, info
