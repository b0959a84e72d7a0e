"""A weights-free CheXpert-style labeler: mention phrases, negation and uncertainty cues, report aggregation.

Variant implemented: the three stages of the CheXpert labeler (Irvin et al. 2019) - *mention extraction*,
*mention classification* (uncertain / negative / positive) and *aggregation* - written by us from the published
description. Where it departs from the original:

- The original classifies mentions with NegBio-style rules over a universal dependency parse (Bllip parser +
  Stanford converter). We use no parser: a mention is classified by the **nearest cue** before it in its clause
  and by a few **post-mention patterns** ("effusion is not seen", "pneumonia cannot be excluded"). This is far
  faster (no model) and handles the phrasing of chest X-ray reports well, but it can misjudge
  unusual syntax (e.g. "No large effusion is seen or pneumothorax" labels pneumothorax positive).
- Our phrase lists are our own, following the CheXpert observation definitions, not copies of its files. They
  live in ``himed/clinical/data/rule_labeler_phrases.txt`` (mentions, stems, cues, clause breakers, verbs).
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
   and the mention's end: then the negation belongs to an earlier clause ("no pneumothorax, heart is enlarged"); so
   does a circumstance word ("following", "after", "with": "no pneumothorax with the chest tube in place").
3. When no pre-cue decides, patterns just after the mention: "is not seen", "has resolved", "was removed",
   "are absent" give 0; "cannot be excluded", "is possible", "versus", "?" give -1.

Speed: one combined alternation per observation and base value, compiled once; a sentence is searched only for
observations whose literal stems it contains; each sentence's mentions are cached by its lowercased text (GRPO
batches repeat sentences heavily). About 0.05 ms per ~110-word report when sentences repeat, 0.5 ms when every
sentence is new (2 busy cores; benchmark command in the labeler's report).

Aggregation per report (CheXpert's rule): any positive mention -> 1; else any uncertain -> -1; else 0.
Unmentioned observations are absent. No Finding follows docs/data.md (``with_no_finding``): 1 when no
observation other than Support Devices is positive or uncertain. An empty report is therefore ``{"No Finding": 1}``
(CheXpert also labels an empty report No Finding).

Why ~400 lines: the labeler's three stages (mentions, classification, aggregation) read top to bottom in one
place; its vocabulary is in the data file.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from himed.clinical.observations import CHEXBERT_OBSERVATIONS, NEGATIVE, POSITIVE, UNCERTAIN, with_no_finding

# ---------------------------------------------------------------------------------------------------------------
# Phrase tables: mention phrases and stems per observation, cues, clause breakers and verbs, read once from
# himed/clinical/data/rule_labeler_phrases.txt (its header documents the format).
# ---------------------------------------------------------------------------------------------------------------

PHRASE_FILE = "data/rule_labeler_phrases.txt"
_BASE_VALUES = {"positive": POSITIVE, "negative": NEGATIVE, "uncertain": UNCERTAIN}
_CONTEXT_LISTS = ("cues: pseudo", "cues: uncertain", "cues: negation", "clause breakers", "verbs")
_DEFINITION = re.compile(r"([A-Z][A-Z_]*) = (.+)")
_REFERENCE = re.compile(r"\{([A-Z][A-Z_]*)\}")


@dataclass(frozen=True)
class PhraseTables:
    """The labeler's vocabulary: ``mentions[observation][base value]`` phrases, ``stems[observation]``, and the
    context lists by section name (``cues: pseudo``, ``cues: uncertain``, ``cues: negation``, ``clause
    breakers``, ``verbs``)."""

    mentions: dict[str, dict[int, tuple[str, ...]]]
    stems: dict[str, tuple[str, ...]]
    context: dict[str, tuple[str, ...]]


def parse_phrase_tables(text: str, where: str = PHRASE_FILE) -> PhraseTables:
    """Read the phrase-table format; ValueError naming ``where:line`` for a line outside a section, an unknown
    section or an undefined ``{NAME}``."""
    definitions: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue

        def expand(match: re.Match, number: int = number) -> str:
            if match.group(1) not in definitions:
                raise ValueError(f"{where}:{number}: {{{match.group(1)}}} is not defined above")
            return definitions[match.group(1)]

        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip(), [])
        elif (definition := _DEFINITION.fullmatch(line)) is not None:
            definitions[definition.group(1)] = _REFERENCE.sub(expand, definition.group(2))
        elif current is None:
            raise ValueError(f"{where}:{number}: a phrase before any [section]")
        else:
            current.append(_REFERENCE.sub(expand, line))
    mentions: dict[str, dict[int, tuple[str, ...]]] = {}
    stems: dict[str, tuple[str, ...]] = {}
    context: dict[str, tuple[str, ...]] = {}
    for name, phrases in sections.items():
        if name in _CONTEXT_LISTS:
            context[name] = tuple(phrases)
            continue
        observation, _, kind = name.rpartition(": ")
        if observation not in CHEXBERT_OBSERVATIONS or kind not in (*_BASE_VALUES, "stems"):
            raise ValueError(f"{where}: unknown section [{name}]")
        if kind == "stems":
            stems[observation] = tuple(phrases)
        else:
            mentions.setdefault(observation, {})[_BASE_VALUES[kind]] = tuple(phrases)
    missing = [name for name in _CONTEXT_LISTS if name not in context]
    if missing:
        raise ValueError(f"{where}: missing section(s) {missing}")
    return PhraseTables(mentions, stems, context)


def load_phrase_tables() -> PhraseTables:
    return parse_phrase_tables(resources.files("himed.clinical").joinpath(PHRASE_FILE).read_text(encoding="utf-8"))


_TABLES = load_phrase_tables()
MENTION_PHRASES = _TABLES.mentions
# Literal stems that every phrase of an observation contains (at least one of them). A sentence is searched for an
# observation's phrases only when one of its stems occurs in it: one fast scan for all stems replaces a regex scan
# of the whole report per observation (5x faster). ``mentions(..., gated=False)`` skips the gate; a test checks the
# two agree, so a phrase added without its stem is caught.
MENTION_STEMS = _TABLES.stems
_PSEUDO_CUES = _TABLES.context["cues: pseudo"]
_UNCERTAIN_CUES = _TABLES.context["cues: uncertain"]
_NEGATION_CUES = _TABLES.context["cues: negation"]
# Clause breakers inside a sentence: cues never reach across them.
_CLAUSE_BREAKERS = _TABLES.context["clause breakers"]
# A verb between a negation cue and the mention means the cue negated something in an earlier clause; so does a
# word that starts a new circumstance ("no pneumothorax following placement of a chest tube").
_VERBS = _TABLES.context["verbs"]


# Word-level patterns start with ``_WORD_START``, a consumed non-word character, instead of ``\b``: a leading ``\b``
# disables the regex engine's first-character scan and made labelling ~4x slower. The labeler works on the text
# with one space prepended, so the character before any word exists; match starts are corrected by one.
_WORD_START = r"[^\w]"
# Post-mention patterns, matched right after the mention within its clause.
_POST_NEGATION_RE = re.compile(
    r"(?:[\s,]+[\w-]+){0,4}?\s+(?:(?:is|are|was|were|has|have|had)\s+(?:been\s+)?(?:not|no longer)\b|"
    r"(?:has|have)\s+(?:\w+\s+)?(?:resolved|cleared|been removed|been excluded)\b|"
    r"(?:was|were|is|are)\s+(?:\w+\s+)?(?:removed|absent|excluded|resolved)\b|"
    r"(?:resolved|removed|removal)\b)"
)
_HEDGE = (
    r"(?:(?:may|might|could)\s+(?:be\s+|represent\s+|reflect\s+)|likely\s+(?:represents?\s+|reflects?\s+)?|"
    r"probably\s+|possibly\s+|partly\s+|in part\s+)"
)
_EXPLAINED_BY = r"(?:due to|related to|secondary to|accentuated by|exaggerated by)"
_TECHNICAL = (
    r"(?:a\s+|an\s+|the\s+)?(?:\w+\s+)?(?:overlying|soft tissue|technique|positioning|rotation|artifact|overlap|"
    r"projection|low lung volumes|lordotic|portable|nipple shadows?|vessels? on end|vascular shadows?|summation)"
)
_POST_UNCERTAIN_RE = re.compile(
    r"(?:[\s,]+[\w-]+){0,4}?(?:\s*\?|\s+(?:(?:cannot|can not|could not|can't)\s+be\s+(?:entirely\s+|completely\s+)?"
    r"(?:excluded|ruled out)|(?:is|are|was|were)\s+(?:also\s+|more\s+|less\s+)?(?:possible|likely|probable|"
    r"suspected|questioned|not excluded|not ruled out|a possibility|considered|in the differential)\b|"
    r"(?:versus|vs\.?)\s|(?:may|might|could)\s+(?:be|also be)\s+(?:present|seen)\b|"
    r"is\s+not\s+(?:entirely\s+)?(?:excluded|ruled out)\b|"
    # "Opacity may be due to overlying soft tissue", "contours are widened, likely due to AP technique", "density
    # may represent a nipple shadow": the finding itself is in doubt (a technical explanation, not a disease one).
    rf"(?:{_HEDGE}(?:{_EXPLAINED_BY}\s+)?|{_EXPLAINED_BY}\s+){_TECHNICAL}))"
)
# Breakers, cues and verbs in one pattern, so a sentence is scanned once. Alternatives are tried in this order at
# each position: pseudo cues before negations ("no change"), uncertainty before negation ("not excluded").
_CONTEXT_RE = re.compile(
    rf"{_WORD_START}(?:(?P<breaker>(?:{'|'.join(_CLAUSE_BREAKERS)})\b)|(?P<pseudo>(?:{'|'.join(_PSEUDO_CUES)})\b)|"
    rf"(?P<uncertain>(?:{'|'.join(_UNCERTAIN_CUES)})\b)|(?P<negation>(?:{'|'.join(_NEGATION_CUES)})\b)|"
    rf"(?P<verb>(?:{'|'.join(_VERBS)})\b))"
    # ";" breaks a clause; a "?" has no word boundaries, so it is matched bare ("? pneumonia") and is uncertain.
    r"|(?P<semicolon>;)|(?P<question>\?)"
)
_BREAK_KINDS = frozenset({"breaker", "semicolon"})
_CUE_KINDS = frozenset({"pseudo", "uncertain", "negation", "question"})
# A sentence: from a non-space character up to ".!?" followed by whitespace or the end (so "1.5 cm" stays one
# sentence), a line break, or the end of the text.
_SENTENCE_RE = re.compile(r"\S(?:[^.!?\n]+|[.!?]+(?!\s|$))*[.!?]*")


def _phrase_regex(phrases: Sequence[str]) -> re.Pattern[str] | None:
    if not phrases:
        return None
    return re.compile(rf"{_WORD_START}(?:{'|'.join(phrases)})\b")


# One combined alternation per (observation, base value), compiled once at import.
_MENTION_RES: dict[str, tuple[tuple[int, re.Pattern[str]], ...]] = {
    observation: tuple(
        (base, pattern) for base, phrases in by_value.items() if (pattern := _phrase_regex(phrases)) is not None
    )
    for observation, by_value in MENTION_PHRASES.items()
}
_STEM_TO_OBSERVATIONS: dict[str, tuple[str, ...]] = {}
for _observation, _stems in MENTION_STEMS.items():
    for _stem in _stems:
        _STEM_TO_OBSERVATIONS[_stem] = (*_STEM_TO_OBSERVATIONS.get(_stem, ()), _observation)


def _trie_regex(words: Sequence[str]) -> str:
    """One regex matching any of ``words``, factored as a trie ("c(?:ardiac|atheter)").

    A flat alternation of ~60 stems makes the engine try each one at every position; the trie tries one branch per
    distinct next character, which is 3x faster here. Longer stems win over their prefixes (greedy ``(?:...)?``).
    """
    trie: dict = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict) -> str:
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
        return f"(?:{body})?" if "" in node else body

    return build(trie)


# No leading \b: that keeps the engine's first-character scan, and a stem inside a longer word only makes the gate
# looser, never stricter.
_STEM_RE = re.compile(_trie_regex(sorted(_STEM_TO_OBSERVATIONS)))


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
    out = []
    for match in _SENTENCE_RE.finditer(text):
        start, end = match.span()
        while text[end - 1].isspace():
            end -= 1
        out.append((start, end))
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
        rank = _RANK
        for lowered, start, end in _sentences_of(text):
            for observation, value, _, _ in _analyse_sentence(lowered[start:end]):
                previous = labels.get(observation)
                if previous is None or rank[value] > rank[previous]:
                    labels[observation] = value
        return with_no_finding(labels)

    def mentions(self, text: str, gated: bool = True) -> list[Mention]:
        """Every mention in ``text`` with its classified value, ordered by position then observation.

        ``sentence_index`` indexes ``split_sentences(text)``. ``gated=False`` searches every sentence for every
        observation, uncached (the reference the fast path is tested against); results are identical.
        """
        analyse = _analyse_sentence if gated else _analyse_sentence_ungated
        out = []
        for index, (lowered, start, end) in enumerate(_sentences_of(text)):
            for observation, value, mention_start, mention_end in analyse(lowered[start:end]):
                out.append(Mention(observation, value, index, start + mention_start, start + mention_end))
        out.sort(key=lambda m: (m.start, m.end, m.observation))
        return out


def _sentences_of(text: str) -> list[tuple[str, int, int]]:
    """``(lowered text, start, end)`` per sentence of ``text``; offsets index ``text`` itself."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    if not text:
        return []
    lowered = _lower_same_length(text)
    return [(lowered, start, end) for start, end in split_sentences(lowered)]


# Reports in RL are repetitive (8 completions per image, references repeated per group, models converging on
# templates), and a sentence's mentions depend on the sentence alone: cache them per lowered sentence text.
_SENTENCE_CACHE_SIZE = 1 << 16
_MAX_CACHED_SENTENCE = 2000


def _analyse_sentence(sentence: str) -> tuple[tuple[str, int, int, int], ...]:
    """``(observation, value, start, end)`` of each mention in one lowercased sentence (offsets in the sentence)."""
    if len(sentence) > _MAX_CACHED_SENTENCE:
        return _analyse_uncached(sentence, gated=True)
    return _analyse_cached(sentence)


@functools.lru_cache(maxsize=_SENTENCE_CACHE_SIZE)
def _analyse_cached(sentence: str) -> tuple[tuple[str, int, int, int], ...]:
    return _analyse_uncached(sentence, gated=True)


def _analyse_sentence_ungated(sentence: str) -> tuple[tuple[str, int, int, int], ...]:
    return _analyse_uncached(sentence, gated=False)


def _analyse_uncached(sentence: str, gated: bool) -> tuple[tuple[str, int, int, int], ...]:
    # One leading space: every word then has a character before it for ``_WORD_START`` to consume.
    padded = " " + sentence
    end = len(padded)
    if gated:
        observations = dict.fromkeys(
            observation for match in _STEM_RE.finditer(padded) for observation in _STEM_TO_OBSERVATIONS[match.group()]
        )
    else:
        observations = dict.fromkeys(_MENTION_RES)
    out = []
    context = None
    for observation in observations:
        for base, pattern in _MENTION_RES[observation]:
            for match in pattern.finditer(padded, 0, end):
                start, stop = match.start() + 1, match.end()
                if context is None:
                    context = _SentenceCues(padded, 1, end)
                value = context.classify(padded, start, stop, base)
                # Offsets into the sentence: drop the leading space.
                out.append((observation, value, start - 1, stop - 1))
    return tuple(out)


_RANK = {NEGATIVE: 0, UNCERTAIN: 1, POSITIVE: 2}


class _SentenceCues:
    """Clause breakers, cues and verbs of one sentence, found once and shared by all its mentions."""

    __slots__ = ("breaks", "cues", "verbs", "end")

    def __init__(self, text: str, start: int, end: int) -> None:
        self.end = end
        self.breaks: list[tuple[int, int]] = []
        self.cues: list[tuple[int, int, str]] = []
        self.verbs: list[tuple[int, int]] = []
        for match in _CONTEXT_RE.finditer(text, start - 1, end):
            kind = match.lastgroup
            if kind in _CUE_KINDS:
                self.cues.append((match.start(), match.end(), kind))
            elif kind in _BREAK_KINDS:
                self.breaks.append(match.span())
            else:
                self.verbs.append(match.span())

    def classify(self, text: str, start: int, end: int, base: int) -> int:
        """The value of the mention ``text[start:end]`` with base value ``base`` (see the module docstring)."""
        if base == NEGATIVE:
            # "Normal" phrases state their value themselves; a cue before them ("no effusion, normal heart size")
            # belongs to another finding, and a negated normal ("not normal") is too rare to risk that confusion.
            return NEGATIVE
        clause_start, clause_end = 0, self.end
        for break_start, break_end in self.breaks:
            if break_end <= start:
                clause_start = break_end
            elif break_start >= end:
                clause_end = break_start
                break
        nearest = None
        for cue in self.cues:
            # Cues inside the mention count ("heart is not enlarged"); a cue's match starts at the non-word
            # character before it, hence ">= clause_start - 1".
            if cue[1] > end:
                break
            if cue[0] >= clause_start - 1:
                nearest = cue
        if nearest is not None:
            kind = nearest[2]
            if kind == "pseudo":
                return base
            if kind in ("uncertain", "question"):
                return UNCERTAIN
            if not any(verb_start >= nearest[1] and verb_end <= end for verb_start, verb_end in self.verbs):
                return NEGATIVE
        if _POST_UNCERTAIN_RE.match(text, end, clause_end):
            return UNCERTAIN
        if _POST_NEGATION_RE.match(text, end, clause_end):
            return NEGATIVE
        return base
