"""R2Gen's report text normalisation for IU-Xray and MIMIC-CXR (Chen et al. 2020, ``modules/tokenizers.py``).

Report-generation papers after R2Gen score BLEU/METEOR/ROUGE/CIDEr on text cleaned by R2Gen's
``clean_report_iu_xray`` / ``clean_report_mimic_cxr``; evaluation uses the same rules to be comparable. The rules,
as published, in order:

1. A chain of plain string replacements (each one a full pass of ``str.replace``, so e.g. three ``..`` -> ``.``
   passes shrink at most eight dots to one). MIMIC-CXR first turns newlines into spaces and shrinks ``__`` and
   double spaces; both styles then shrink ``..``, delete ``1. `` anywhere (also inside ``11. ``), and turn the list
   markers ``. 2. `` ... ``. 5. `` and `` 2. `` ... `` 5. `` into sentence ends.
2. Strip, lower-case, split into sentences on ``". "``.
3. In each sentence delete ``" / \\ '``, strip, lower-case, then delete every character of the regex class
   ``[.,?;*!%^&_+():-\\[\\]{}]``. Quirk kept on purpose: ``:-\\[`` in that class is a *range* (U+003A..U+005B), so
   ``: ; < = > ? @ [`` and A-Z are deleted, while ``-`` itself is kept ("left-sided" survives).
4. Join the sentences with ``" . "`` and append ``" ."``. Empty sentences are kept (R2Gen's filter compares a
   string with ``[]``, which is never equal), so ``"a. . b"`` gives ``"a . . b ."``.

Where we depart, only in whitespace and one METEOR hazard:

- Whitespace runs (including newlines IU-Xray text keeps) are collapsed to one space. R2Gen scores the text its
  tokenizer decodes, i.e. the whitespace-split tokens joined by single spaces, so this is the text R2Gen scored.
- Runs of three or more ``|`` become a space: ``|||`` is METEOR 1.5's field separator and hangs its process
  (see notes/ENVIRONMENT.md); R2Gen's class does not delete ``|``.

Study rows (rows.py) already have whitespace runs collapsed. On such text the IU-Xray rule sees a line break after
a period as ``". "`` (a sentence end), where R2Gen on the raw text would not split there; R2Gen's IU-Xray
annotation reports are single lines, so scores on them are unaffected.

R2Gen's evaluation also truncates references to ``max_seq_length`` tokens and maps rare words to ``<unk>``; we do
neither (DESIGN.md section 4: no reference truncation).
"""

from __future__ import annotations

import re
from typing import Literal

CleanStyle = Literal["mimic_cxr", "iu_xray", "none"]
CLEAN_STYLES = ("mimic_cxr", "iu_xray", "none")
DEFAULT_CLEAN_STYLE = "mimic_cxr"  # R2Gen's MIMIC-CXR rule: what report-generation papers score on

# Step 1, shared tail: R2Gen's list-marker rules, in its order.
_LIST_MARKERS = (
    ("1. ", ""),
    (". 2. ", ". "),
    (". 3. ", ". "),
    (". 4. ", ". "),
    (". 5. ", ". "),
    (" 2. ", ". "),
    (" 3. ", ". "),
    (" 4. ", ". "),
    (" 5. ", ". "),
)
_IU_XRAY_REPLACEMENTS = (("..", "."),) * 3 + _LIST_MARKERS
_MIMIC_CXR_REPLACEMENTS = (("\n", " "),) + (("__", "_"),) * 7 + (("  ", " "),) * 6 + (("..", "."),) * 8 + _LIST_MARKERS

# Step 3: the characters R2Gen's class deletes, written out: the listed punctuation plus the range ":".."[".
_SENTENCE_JUNK = re.compile(r"[.,?;*!%^&_+()\]{}\x3a-\x5b]")
_QUOTES_AND_SLASHES = str.maketrans("", "", "\"/\\'")
_WHITESPACE = re.compile(r"\s+")
_METEOR_SEPARATOR = re.compile(r"\|{3,}")


def _clean_sentence(sentence: str) -> str:
    return _SENTENCE_JUNK.sub("", sentence.translate(_QUOTES_AND_SLASHES).strip().lower())


def _r2gen_clean(text: str, replacements: tuple[tuple[str, str], ...]) -> str:
    for old, new in replacements:
        text = text.replace(old, new)
    sentences = text.strip().lower().split(". ")
    cleaned = " . ".join(_clean_sentence(sentence) for sentence in sentences) + " ."
    return make_meteor_safe(cleaned)


def make_meteor_safe(text: str) -> str:
    """Collapse whitespace (no newlines survive) and break up ``|||`` runs, which hang METEOR 1.5."""
    return _WHITESPACE.sub(" ", _METEOR_SEPARATOR.sub(" ", text)).strip()


def clean_report_iu_xray(text: str) -> str:
    """R2Gen's IU-Xray rule (module docstring), whitespace-collapsed."""
    return _r2gen_clean(text, _IU_XRAY_REPLACEMENTS)


def clean_report_mimic_cxr(text: str) -> str:
    """R2Gen's MIMIC-CXR rule (module docstring), whitespace-collapsed."""
    return _r2gen_clean(text, _MIMIC_CXR_REPLACEMENTS)


def clean_report(text: str, style: str = DEFAULT_CLEAN_STYLE) -> str:
    """Clean ``text`` by ``style``: ``mimic_cxr``, ``iu_xray`` (R2Gen's rules) or ``none`` (METEOR-safe only)."""
    if style == "mimic_cxr":
        return clean_report_mimic_cxr(text)
    if style == "iu_xray":
        return clean_report_iu_xray(text)
    if style == "none":
        return make_meteor_safe(text)
    raise ValueError(f"unknown clean style {style!r}; valid styles: {', '.join(CLEAN_STYLES)}")
