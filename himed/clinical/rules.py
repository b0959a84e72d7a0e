"""A weights-free CheXpert-style labeler: mention phrases, negation and uncertainty cues, report aggregation.

Variant implemented: the three stages of the CheXpert labeler (Irvin et al. 2019) - *mention extraction*,
*mention classification* (uncertain / negative / positive) and *aggregation* - written by us from the published
description. Where it departs from the original:

- The original classifies mentions with NegBio-style rules over a universal dependency parse (Bllip parser +
  Stanford converter). We use no parser: a mention is classified by the **nearest cue** before it in its clause
  and by a few **post-mention patterns** ("effusion is not seen", "pneumonia cannot be excluded"). This is far
  faster (no model, < 0.2 ms per report) and handles the phrasing of chest X-ray reports well, but it can misjudge
  unusual syntax (e.g. "No large effusion is seen or pneumothorax" labels pneumothorax positive).
- Our phrase lists are our own, following the CheXpert observation definitions, not copies of its files.
- "Normal" phrases for the heart and mediastinum ("heart size is normal", "normal cardiomediastinal silhouette")
  are mentions with value 0, as CheXpert's labels for such reports are negative.
- "Lungs are clear" is *not* a mention of any observation (as in CheXpert): a report saying only that is labelled
  No Finding.

Mention classification, per mention (precedence of the original: pre-negation uncertainty, then negation, then
uncertainty):

1. The clause: the mention's sentence, cut at clause breakers (";", "but", "however", "although", "which",
   "except", "aside from", "and there", ...), so a cue in one clause never reaches a mention in another.
2. The nearest cue between the clause start and the mention's end decides: a *pseudo* cue ("no change in",
   "no interval change") means positive; an *uncertainty* cue ("possible", "may", "cannot exclude", "suspicious
   for", "versus", "?") means -1; a *negation* cue ("no", "not", "without", "no evidence of", "free of",
   "negative for", "resolved", "removal of") means 0, unless a verb ("is", "are", "has", ...) stands between the cue
   and the mention's end: then the negation belongs to an earlier clause ("no pneumothorax, heart is enlarged").
3. When no pre-cue decides, patterns just after the mention: "is not seen", "has resolved", "was removed",
   "are absent" give 0; "cannot be excluded", "is possible", "versus", "?" give -1.

Aggregation per report (CheXpert's rule): any positive mention -> 1; else any uncertain -> -1; else 0.
Unmentioned observations are absent. No Finding follows DESIGN.md section 2 (``with_no_finding``): 1 when no
observation other than Support Devices is positive or uncertain. An empty report is therefore ``{"No Finding": 1}``
(CheXpert also labels an empty report No Finding).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass

from himed.clinical.observations import NEGATIVE, POSITIVE, UNCERTAIN, with_no_finding

# ---------------------------------------------------------------------------------------------------------------
# Mention phrases. Each observation has phrases of a base value: POSITIVE phrases are classified by the cues;
# NEGATIVE ("normal") phrases are 0; UNCERTAIN phrases ("top normal heart size") are -1 unless negated.
# Phrases are regular expressions over lowercased text; word boundaries are added around each alternation.
# NEGATIVE phrases are always 0: a cue before them belongs to another finding ("no effusion, normal heart size").
# ---------------------------------------------------------------------------------------------------------------

_HEART = r"(?:heart|cardiac (?:silhouette|shadow|contours?|size)|heart size)"
_CM_SILHOUETTE = r"(?:cardiomediastinal|cardio-mediastinal|mediastinal) (?:silhouettes?|contours?|borders?|size)"
_NORMAL = r"(?:normal|within normal limits|unremarkable)"
_BE = r"(?:is|are|appears?|remains?|was|were|seems?)"

MENTION_PHRASES: dict[str, dict[int, tuple[str, ...]]] = {
    "Enlarged Cardiomediastinum": {
        POSITIVE: (
            r"(?:widened|widening of the|enlarged|enlargement of the) (?:superior )?(?:cardio-?)?mediastin\w*",
            r"(?:cardio-?)?mediastinal (?:widening|enlargement)",
            rf"{_CM_SILHOUETTE} {_BE}(?: \w+)? (?:enlarged|widened|prominent)",
            r"enlarged cardiomediastinal silhouette",
            r"mediastinum (?:is|appears) (?:\w+ )?widened",
        ),
        NEGATIVE: (
            rf"{_CM_SILHOUETTE} {_BE}(?: otherwise)?(?: grossly)? {_NORMAL}",
            rf"{_CM_SILHOUETTE} {_BE} (?:\w+ )?(?:and|,) {_NORMAL}",
            r"normal (?:cardiomediastinal|mediastinal|heart and mediastinal) (?:silhouettes?|contours?|size)",
            r"mediastinum (?:is|appears) (?:normal|unremarkable)",
        ),
        UNCERTAIN: (),
    },
    "Cardiomegaly": {
        POSITIVE: (
            r"cardiomegaly",
            r"cardiac (?:enlargement|prominence)",
            r"(?:enlarged|enlargement of the|prominent|large|globular) (?:heart|cardiac silhouette|cardiac shadow)",
            rf"{_HEART} {_BE}(?: \w+){{0,2}} (?:enlarged|large|prominent)",
            r"heart size (?:is |remains )?(?:\w+ )?(?:enlarged|increased)",
        ),
        NEGATIVE: (
            rf"{_HEART} {_BE}(?: otherwise)?(?: grossly)? (?:normal|within normal limits|normal in size|unremarkable)",
            r"normal (?:heart|cardiac) (?:size|silhouette|contours?)",
            r"(?:heart|cardiac) size (?:is )?(?:within normal limits|normal)",
            r"(?:heart|cardiac silhouette) (?:is |appears )?normal in size",
        ),
        UNCERTAIN: (
            rf"{_HEART} {_BE}? ?(?:at the )?(?:top[- ]normal|upper limits? of normal|borderline(?: \w+)?)",
            r"(?:top[- ]normal|borderline(?: enlarged)?) (?:heart|cardiac) (?:size|silhouette)",
        ),
    },
    "Lung Opacity": {
        POSITIVE: (
            r"opacit(?:y|ies)",
            r"opacification",
            r"opacified",
            r"infiltrat(?:e|es|ion|ive)",
            r"air-?space (?:disease|process|opacit(?:y|ies))",
            r"hazy|haziness",
            r"ground[- ]glass",
            r"(?:interstitial|reticular|reticulonodular) (?:markings|prominence|opacit(?:y|ies)|pattern|abnormality|"
            r"disease|thickening|changes)",
            r"densit(?:y|ies)",
            r"increased (?:lung |pulmonary |interstitial )?markings",
        ),
        NEGATIVE: (),
        UNCERTAIN: (),
    },
    "Lung Lesion": {
        POSITIVE: (
            r"mass(?:es)?",
            r"nodules?",
            r"nodular (?:opacit(?:y|ies)|densit(?:y|ies)|lesions?)",
            r"(?:lung|pulmonary|cavitary|cavitating|spiculated|parenchymal) lesions?",
            r"tumou?rs?",
            r"neoplasms?",
            r"carcinoma",
            r"malignancy",
            r"metasta(?:sis|ses|tic disease)",
        ),
        NEGATIVE: (),
        UNCERTAIN: (),
    },
    "Edema": {
        POSITIVE: (
            r"edema",
            r"oedema",
            r"(?:pulmonary )?vascular congestion",
            r"pulmonary congestion",
            r"(?:pulmonary )?vascular engorgement",
            r"congestive heart failure",
            r"heart failure",
            r"chf",
            r"kerley b lines",
            r"cephalization",
            r"fluid overload",
        ),
        NEGATIVE: (),
        UNCERTAIN: (),
    },
    "Consolidation": {
        POSITIVE: (r"consolidat(?:ion|ions|ive|ed)",),
        NEGATIVE: (),
        UNCERTAIN: (),
    },
    "Pneumonia": {
        POSITIVE: (
            r"pneumonias?",
            r"bronchopneumonia",
            r"pneumonitis",
            r"infection",
            r"infectious (?:process|etiology)",
        ),
        NEGATIVE: (),
        UNCERTAIN: (),
    },
    "Atelectasis": {
        POSITIVE: (
            r"atelecta(?:sis|ses|tic)",
            r"(?:lobar |lobe |lung |segmental |subsegmental )?collapse(?:d)?",
        ),
        NEGATIVE: (),
        UNCERTAIN: (),
    },
    "Pneumothorax": {
        POSITIVE: (r"(?:hydro|hemo)?pneumothora(?:x|ces)", r"ptx"),
        NEGATIVE: (),
        UNCERTAIN: (),
    },
    "Pleural Effusion": {
        POSITIVE: (
            # Lookbehinds at the end keep the first-character scan fast; pericardial and joint effusions are not
            # pleural.
            r"effusions?(?<!pericardial effusion)(?<!pericardial effusions)(?<!joint effusion)(?<!joint effusions)",
            r"hydropneumothora(?:x|ces)",
            r"hydrothorax",
            r"pleural fluid",
            r"fluid in the (?:\w+ )?pleural",
            r"blunting of the (?:\w+ )?costophrenic",
            r"(?:blunted|blunting of) (?:the )?(?:\w+ )?(?:costophrenic|cp) angles?",
            r"costophrenic (?:angle )?blunting",
            r"layering fluid",
        ),
        NEGATIVE: (),
        UNCERTAIN: (),
    },
    "Pleural Other": {
        POSITIVE: (
            r"pleural (?:thickening|plaques?|scarring|scar|calcifications?|abnormalit(?:y|ies))",
            r"pleural-?parenchymal (?:scarring|thickening)",
            r"pleuroparenchymal (?:scarring|thickening)",
            r"thickening of the pleura",
            r"fibrothorax",
            r"apical (?:pleural )?(?:cap|capping|thickening)",
        ),
        NEGATIVE: (),
        UNCERTAIN: (),
    },
    "Fracture": {
        POSITIVE: (r"fractur(?:e|es|ed)", r"fx"),
        NEGATIVE: (),
        UNCERTAIN: (),
    },
    "Support Devices": {
        POSITIVE: (
            r"(?:endotracheal|et|tracheostomy|trach|chest|nasogastric|ng|og|orogastric|feeding|enteric|"
            r"dobhoff|gastric|mediastinal|pleural|thoracostomy|drainage) tubes?",
            r"ett",
            r"(?:picc|central|central venous|venous|arterial|jugular|subclavian|ij|swan[- ]ganz|dialysis|midline|"
            r"pulmonary artery|hemodialysis) (?:lines?|catheters?)",
            r"piccs?",
            r"catheters?",
            r"(?:lines and tubes|tubes and lines|support (?:lines|devices)|monitoring devices)",
            r"pacemakers?",
            r"pacer(?: wires?| leads?)?",
            r"(?:pacemaker|pacer|cardiac|transvenous) (?:leads?|wires?|device)",
            r"(?:aicd|icd|defibrillator|loop recorder|cardiac device)",
            r"(?:sternotomy|sternal|epicardial) wires?",
            r"(?:surgical )?clips",
            r"stents?",
            r"port(?:-a-cath)?",
            r"(?:chest wall|right chest|left chest|power) port",
            r"(?:drains?|pigtail)",
            r"(?:intra-?aortic )?balloon pump",
            r"lvad",
            r"(?:valve replacement|prosthetic valve|annuloplasty ring)",
            r"(?:orthopedic |spinal |surgical )?hardware",
            r"(?:coils?|filters?)",
            r"tubes?",
        ),
        NEGATIVE: (),
        UNCERTAIN: (),
    },
}

# ---------------------------------------------------------------------------------------------------------------
# Cues. Alternatives are tried left to right at each position, so longer and pseudo cues come first.
# ---------------------------------------------------------------------------------------------------------------

_PSEUDO_CUES = (
    r"no (?:\w+ ){0,2}change",
    r"not (?:significantly )?changed",
    r"no (?:\w+ )?(?:increase|worsening|progression)",
    r"not only",
    r"no other",
    r"without (?:\w+ )?change",
)
_UNCERTAIN_CUES = (
    r"(?:cannot|can not|could not|can't) (?:be )?(?:excluded|exclude|ruled? out)",
    r"(?:not|cannot|can not) (?:be )?(?:entirely |completely |definitely )?(?:excluded|ruled out)",
    r"difficult to (?:exclude|rule out|assess)",
    r"(?:to )?rule out",
    r"r/o",
    r"(?:evaluate|evaluation|assess|assessment|eval) for",
    r"question of",
    r"questionable",
    r"questionably",
    r"possib(?:le|ly|ility of)",
    r"probabl(?:e|y)",
    r"likely",
    r"unlikely",
    r"may|might|could",
    r"suspect(?:ed)?",
    r"suspicious (?:for|of)",
    r"suspicion (?:for|of)",
    r"suggest(?:s|ed|ive of|ing)?",
    r"concern(?:ing)? (?:for|of)",
    r"worrisome for",
    r"versus|vs\.?",
    r"differential (?:diagnosis )?(?:includes|including|would include)",
    r"(?:cannot|can not) (?:be )?(?:differentiated|distinguished)",
    r"equivocal",
    r"indeterminate",
    r"borderline",
    r"uncertain",
    r"unclear",
    r"presumed",
    r"(?:compatible|could be consistent) with",
)
_NEGATION_CUES = (
    r"no (?:\w+ )?(?:evidence|signs?|findings?|radiographic evidence|definite evidence) (?:of|for|to suggest)",
    r"(?:negative|clear|free) (?:of|for)",
    r"without(?: (?:\w+ )?evidence of)?",
    r"absence of",
    r"(?:interval )?(?:resolution|removal) of",
    r"resolved",
    r"removed",
    r"no longer",
    r"rather than",
    r"(?:has|have) been excluded",
    r"ruled out",
    r"not|no|nor|neither|never",
)
_CUE_RE = re.compile(
    "|".join(
        [
            rf"(?P<pseudo>\b(?:{'|'.join(_PSEUDO_CUES)})\b)",
            # A "?" has no word boundaries, so it is matched bare ("? pneumonia").
            rf"(?P<uncertain>\b(?:{'|'.join(_UNCERTAIN_CUES)})\b|\?)",
            rf"(?P<negation>\b(?:{'|'.join(_NEGATION_CUES)})\b)",
        ]
    )
)
# A verb between a negation cue and the mention means the cue negated something in an earlier clause.
_VERB_RE = re.compile(r"\b(?:is|are|was|were|has|have|had|appears?|seems?|remains?|demonstrates?|shows?)\b")
# Post-mention patterns, matched right after the mention within its clause.
_POST_NEGATION_RE = re.compile(
    r"(?:[\s,]+[\w-]+){0,4}?\s+(?:(?:is|are|was|were|has|have|had)\s+(?:been\s+)?(?:not|no longer)\b|"
    r"(?:has|have)\s+(?:\w+\s+)?(?:resolved|cleared|been removed|been excluded)\b|"
    r"(?:was|were|is|are)\s+(?:\w+\s+)?(?:removed|absent|excluded|resolved)\b|"
    r"(?:resolved|removed)\b)"
)
_POST_UNCERTAIN_RE = re.compile(
    r"(?:[\s,]+[\w-]+){0,4}?(?:\s*\?|\s+(?:(?:cannot|can not|could not|can't)\s+be\s+(?:entirely\s+|completely\s+)?"
    r"(?:excluded|ruled out)|(?:is|are|was|were)\s+(?:also\s+|more\s+|less\s+)?(?:possible|likely|probable|"
    r"suspected|questioned|not excluded|not ruled out|a possibility|considered|in the differential)\b|"
    r"(?:versus|vs\.?)\s|(?:may|might|could)\s+(?:be|also be)\s+(?:present|seen)\b|"
    r"is\s+not\s+(?:entirely\s+)?(?:excluded|ruled out)\b))"
)
# Clause breakers inside a sentence: cues never reach across them.
_CLAUSE_BREAK_RE = re.compile(
    r";|\b(?:but|however|although|though|whereas|which|except|aside from|apart from|other than|with the exception of|"
    r"and (?:there|the|this|it|these)|otherwise|in addition|additionally|also)\b"
)
# Sentence ends: ".!?" followed by whitespace or the end (so "1.5 cm" is one sentence), and line breaks.
_SENTENCE_END_RE = re.compile(r"[.!?]+(?=\s|$)|\n")


def _phrase_regex(phrases: Sequence[str]) -> re.Pattern[str] | None:
    if not phrases:
        return None
    # No leading \b: it disables the regex engine's first-character scan (8x slower); ``_find_words`` checks the
    # boundary before a match instead.
    return re.compile(rf"(?:{'|'.join(phrases)})\b")


def _find_words(pattern: re.Pattern[str], text: str) -> list[tuple[int, int]]:
    """Spans of ``pattern`` matches that start at a word boundary (the leftmost valid match at each step)."""
    spans = []
    pos = 0
    while (match := pattern.search(text, pos)) is not None:
        start, end = match.span()
        if start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
            pos = start + 1
            continue
        spans.append((start, end))
        pos = end if end > start else start + 1
    return spans


# One combined alternation per (observation, base value), compiled once at import.
_MENTION_RES: tuple[tuple[str, int, re.Pattern[str]], ...] = tuple(
    (observation, base, pattern)
    for observation, by_value in MENTION_PHRASES.items()
    for base, phrases in by_value.items()
    if (pattern := _phrase_regex(phrases)) is not None
)


@dataclass(frozen=True)
class Mention:
    """One mention of an observation: its value (1, 0, -1), sentence index and character span in the input."""

    observation: str
    value: int
    sentence_index: int
    start: int
    end: int


def _lower_same_length(text: str) -> str:
    """Lowercase without changing the length, so offsets found in the lowered text index the original."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    # A few characters ("İ") lower to two code points: keep those as they are.
    return "".join(ch if len(low := ch.lower()) != 1 else low for ch in text)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of ``text``, whitespace stripped, empty ones dropped.

    A sentence ends at ".", "!" or "?" followed by whitespace or the end of the text, or at a line break; the
    terminator is part of the sentence (so a trailing "?" is seen by the uncertainty patterns).
    """
    spans = []
    start = 0
    for match in _SENTENCE_END_RE.finditer(text):
        spans.append((start, match.end()))
        start = match.end()
    spans.append((start, len(text)))
    out = []
    for begin, end in spans:
        while begin < end and text[begin].isspace():
            begin += 1
        while end > begin and text[end - 1].isspace():
            end -= 1
        if begin < end:
            out.append((begin, end))
    return out


class ChexpertRuleLabeler:
    """CheXpert-style rule labeler (see the module docstring); stateless and safe to share between threads."""

    name = "rules"

    def label(self, texts: Sequence[str]) -> list[dict[str, int]]:
        """Labels for each report: ``{observation: 1|0|-1}`` for mentioned observations, plus No Finding."""
        return [self.label_one(text) for text in texts]

    def label_one(self, text: str) -> dict[str, int]:
        """Labels of one report (aggregation: positive beats uncertain beats negative)."""
        labels: dict[str, int] = {}
        for mention in self.mentions(text):
            previous = labels.get(mention.observation)
            if previous is None or _RANK[mention.value] > _RANK[previous]:
                labels[mention.observation] = mention.value
        return with_no_finding(labels)

    def mentions(self, text: str) -> list[Mention]:
        """Every mention in ``text`` with its classified value, ordered by position then observation."""
        if not isinstance(text, str):
            text = "" if text is None else str(text)
        if not text:
            return []
        lowered = _lower_same_length(text)
        sentences = split_sentences(lowered)
        if not sentences:
            return []
        sentence_starts = [start for start, _ in sentences]
        out = []
        for observation, base, pattern in _MENTION_RES:
            for start, end in _find_words(pattern, lowered):
                index = bisect.bisect_right(sentence_starts, start) - 1
                if index < 0:
                    continue
                sentence_start, sentence_end = sentences[index]
                value = _classify(lowered, start, end, sentence_start, sentence_end, base)
                out.append(Mention(observation, value, index, start, end))
        out.sort(key=lambda m: (m.start, m.end, m.observation))
        return out


_RANK = {NEGATIVE: 0, UNCERTAIN: 1, POSITIVE: 2}


def _clause_bounds(text: str, start: int, end: int, sentence_start: int, sentence_end: int) -> tuple[int, int]:
    """The clause around ``text[start:end]``: the sentence cut at the nearest clause breakers on each side."""
    clause_start = sentence_start
    for match in _CLAUSE_BREAK_RE.finditer(text, sentence_start, start):
        clause_start = match.end()
    following = _CLAUSE_BREAK_RE.search(text, end, sentence_end)
    clause_end = following.start() if following else sentence_end
    return clause_start, clause_end


def _classify(text: str, start: int, end: int, sentence_start: int, sentence_end: int, base: int) -> int:
    if base == NEGATIVE:
        # "Normal" phrases state their value themselves; a cue before them ("no effusion, normal heart size")
        # belongs to another finding, and a negated normal ("not normal") is too rare to risk that confusion.
        return NEGATIVE
    clause_start, clause_end = _clause_bounds(text, start, end, sentence_start, sentence_end)
    nearest = None
    for cue in _CUE_RE.finditer(text, clause_start, end):
        nearest = cue
    if nearest is not None:
        kind = nearest.lastgroup
        if kind == "pseudo":
            return base
        if kind == "uncertain":
            return UNCERTAIN
        if kind == "negation" and not _VERB_RE.search(text, nearest.end(), end):
            return NEGATIVE
    if _POST_UNCERTAIN_RE.match(text, end, clause_end):
        return UNCERTAIN
    if _POST_NEGATION_RE.match(text, end, clause_end):
        return NEGATIVE
    return base
