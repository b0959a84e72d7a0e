"""Report sections in a completion: the strict parser, the lenient extractor and the target renderer.

A completion is expected to look like (docs/data.md)::

    <think>short rationale</think>
    <finding>The heart is enlarged. ...</finding>
    <impression>Cardiomegaly.</impression>

with the recipe's ``sections`` (default ``think, finding, impression``; ``think, finding`` for findings-only data).

- Strict parse (the format reward, HiMed-RL eq. 7): exactly one of each configured tag, in the configured order,
  only whitespace outside them, ``finding`` and ``impression`` non-empty. No section tag of any known name may
  appear anywhere else.
- Lenient extraction (what token/concept/clinical rewards compare): when the strict parse succeeds, the section
  texts joined by a space (think excluded); otherwise the completion with every ``<think>...</think>`` block (or an
  unclosed ``<think>`` to the end) removed and every remaining section tag deleted, so tag names never leak into
  the tokens that rewards count.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

KNOWN_SECTIONS = ("think", "finding", "impression")
DEFAULT_SECTIONS = ("think", "finding", "impression")
FINDINGS_ONLY_SECTIONS = ("think", "finding")
# Sections whose text must be non-empty for a strict parse; think may be empty (a cold start may not teach it).
REQUIRED_NONEMPTY = frozenset({"finding", "impression"})

_ANY_TAG = re.compile(r"</?\s*(?:think|finding|impression)\s*>", re.IGNORECASE)
_THINK_BLOCK = re.compile(r"<\s*think\s*>.*?(?:<\s*/\s*think\s*>|\Z)", re.IGNORECASE | re.DOTALL)
_WHITESPACE = re.compile(r"\s+")


def validate_sections(sections: Sequence[str]) -> tuple[str, ...]:
    """Check a recipe's ``sections`` list and return it as a tuple; raises ValueError naming the bad entry."""
    sections = tuple(sections)
    if not sections:
        raise ValueError("sections must name at least one of think, finding, impression")
    for name in sections:
        if name not in KNOWN_SECTIONS:
            raise ValueError(f"unknown section {name!r}; known sections: {', '.join(KNOWN_SECTIONS)}")
    if len(set(sections)) != len(sections):
        raise ValueError(f"sections must not repeat a name: {list(sections)}")
    if "finding" not in sections:
        raise ValueError(f"sections must include 'finding': {list(sections)}")
    order = [KNOWN_SECTIONS.index(name) for name in sections]
    if order != sorted(order):
        raise ValueError(f"sections must keep the order think, finding, impression: {list(sections)}")
    return sections


def completion_text(completion: str | Sequence[Mapping] | Mapping) -> str:
    """The text of a completion given as a string or as TRL conversational messages.

    Conversational completions are lists of ``{"role": ..., "content": ...}``; content is a string or a list of
    parts ``{"type": "text", "text": ...}``. Assistant messages are joined; anything else is ignored.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    texts = []
    for message in completion:
        if not isinstance(message, Mapping) or message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content", "")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, Sequence):
            texts.extend(
                part.get("text", "") for part in content if isinstance(part, Mapping) and part.get("type") == "text"
            )
    return "".join(texts)


def _strict_pattern(sections: tuple[str, ...]) -> re.Pattern:
    body = r"\s*".join(rf"<{name}>(.*?)</{name}>" for name in sections)
    return re.compile(rf"\A\s*{body}\s*\Z", re.DOTALL)


_STRICT_PATTERNS: dict[tuple[str, ...], re.Pattern] = {}


def parse_strict(text: str, sections: Sequence[str] = DEFAULT_SECTIONS) -> dict[str, str] | None:
    """Section texts (stripped) when ``text`` is in the exact tagged format, else None."""
    sections = tuple(sections)
    pattern = _STRICT_PATTERNS.get(sections)
    if pattern is None:
        pattern = _STRICT_PATTERNS[sections] = _strict_pattern(validate_sections(sections))
    match = pattern.match(text)
    if match is None:
        return None
    # Exactly the configured tags and nothing else: no extra or stray tag of any known name inside a section.
    if len(_ANY_TAG.findall(text)) != 2 * len(sections):
        return None
    parsed = {name: match.group(i + 1).strip() for i, name in enumerate(sections)}
    if any(not parsed[name] for name in sections if name in REQUIRED_NONEMPTY):
        return None
    return parsed


def extract_lenient(text: str, sections: Sequence[str] = DEFAULT_SECTIONS) -> str:
    """The report text a reward should compare: see the module docstring. Whitespace is collapsed."""
    parsed = parse_strict(text, sections)
    if parsed is not None:
        joined = " ".join(parsed[name] for name in sections if name != "think" and parsed[name])
    else:
        joined = _ANY_TAG.sub(" ", _THINK_BLOCK.sub(" ", text))
    return _WHITESPACE.sub(" ", joined).strip()


def render_target(
    findings: str,
    impression: str = "",
    think: str = "",
    sections: Sequence[str] = DEFAULT_SECTIONS,
) -> str:
    """The tagged completion a supervised stage trains on; it always passes ``parse_strict`` for ``sections``."""
    sections = validate_sections(sections)
    texts = {"think": think.strip(), "finding": findings.strip(), "impression": impression.strip()}
    for name in sections:
        if name in REQUIRED_NONEMPTY and not texts[name]:
            raise ValueError(
                f"cannot render a target with an empty {name!r} section; use sections {list(FINDINGS_ONLY_SECTIONS)} "
                "for findings-only data"
            )
        if _ANY_TAG.search(texts[name]):
            raise ValueError(f"the {name!r} text contains a section tag: {texts[name][:80]!r}")
    return "\n".join(f"<{name}>{texts[name]}</{name}>" for name in sections)


def reference_text(findings: str, impression: str = "") -> str:
    """Reference text for rewards and evaluation: findings + " " + impression (just findings when it is empty)."""
    findings, impression = (findings or "").strip(), (impression or "").strip()
    return f"{findings} {impression}" if impression else findings
