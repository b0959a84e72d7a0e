"""Reading a predictions JSONL for ``himed evaluate`` and choosing the texts each line is scored on.

Each line holds ``prediction`` (section tags allowed) and ``reference`` (or ``findings``/``impression``, joined as
docs/evaluation.md says), optionally ``id``. With ``--data``, references come from the dataset rows instead, matched
by ``id`` (:func:`attach_references`). Then, for ``--section`` (:func:`section_pairs`):

- ``report``: the prediction's lenient extraction (sections.py) against the reference;
- ``findings`` / ``impression``: the prediction's section from the strict parse (an empty text when the parse
  fails: a model that breaks the format scores 0 for that section rather than being left out) against the
  reference's ``findings`` / ``impression``. Lines whose reference has no such section are left out, counted in
  ``config.excluded``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from himed.data.sections import extract_lenient, parse_strict, reference_text, validate_sections

SECTION_CHOICES = ("report", "findings", "impression")
# The section tag in a completion that holds each reference section (sections.py names it "finding").
_SECTION_TAG = {"findings": "finding", "impression": "impression"}
# How many line numbers an error message lists before "and N more".
_MAX_LINES_SHOWN = 10


@dataclass(frozen=True)
class PredictionLine:
    """One prediction line: ``line`` is its 1-based line number in the file, for error messages."""

    line: int
    id: str | None
    prediction: str
    reference: str | None = None
    findings: str | None = None
    impression: str | None = None


class LineProblems:
    """Collects problems by kind, each with the line numbers it occurs on, and raises them as one ValueError."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._lines: dict[str, list[int]] = defaultdict(list)

    def add(self, problem: str, line: int) -> None:
        self._lines[problem].append(line)

    def raise_if_any(self) -> None:
        if not self._lines:
            return
        parts = []
        for problem, lines in self._lines.items():
            shown = ", ".join(str(n) for n in lines[:_MAX_LINES_SHOWN])
            more = f" and {len(lines) - _MAX_LINES_SHOWN} more" if len(lines) > _MAX_LINES_SHOWN else ""
            parts.append(f"line{'s' if len(lines) > 1 else ''} {shown}{more}: {problem}")
        raise ValueError(f"{self.source}: " + "; ".join(parts))


def _optional_text(record: Mapping, key: str, line: int, problems: LineProblems) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.add(f"{key!r} must be a string", line)
        return None
    return value


def json_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if line.strip():  # blank lines are not records
                yield number, line


def read_predictions(
    path: str | Path, *, allow_empty: bool = False, need_references: bool = True
) -> list[PredictionLine]:
    """Validated prediction lines; every problem in the file is reported at once, naming its lines.

    ``allow_empty``: an empty ``prediction`` is a real output (a model that generated nothing) rather than an
    error. ``need_references``: every line must carry ``reference`` or ``findings`` (False when the references
    come from ``--data``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions file not found")
    problems = LineProblems(str(path))
    out: list[PredictionLine] = []
    first_line_of_id: dict[str, int] = {}
    with_id, without_id = [], []
    for number, text in json_lines(path):
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            problems.add(f"not valid JSON ({error.msg})", number)
            continue
        if not isinstance(record, dict):
            problems.add("not a JSON object", number)
            continue
        prediction = record.get("prediction")
        if prediction is None:
            problems.add("no 'prediction' key", number)
            continue
        if not isinstance(prediction, str):
            problems.add("'prediction' must be a string", number)
            continue
        if not prediction.strip() and not allow_empty:
            problems.add(
                "'prediction' is empty (pass --allow-empty-predictions to score it as an empty report)", number
            )
        reference = _optional_text(record, "reference", number, problems)
        findings = _optional_text(record, "findings", number, problems)
        impression = _optional_text(record, "impression", number, problems)
        if need_references and not (reference or "").strip() and not (findings or "").strip():
            problems.add("no reference: 'reference' (or 'findings') is missing or empty", number)
        row_id = record.get("id")
        if row_id is not None:
            if isinstance(row_id, bool) or not isinstance(row_id, (str, int)):
                problems.add("'id' must be a string or an integer", number)
                continue
            row_id = str(row_id)
            if row_id in first_line_of_id:
                problems.add(f"duplicate id {row_id!r} (first on line {first_line_of_id[row_id]})", number)
            else:
                first_line_of_id[row_id] = number
            with_id.append(number)
        else:
            without_id.append(number)
        out.append(PredictionLine(number, row_id, prediction, reference, findings, impression))
    if with_id and without_id:
        for number in without_id:
            problems.add(f"no 'id' while {len(with_id)} other lines have one (give every line an id, or none)", number)
    problems.raise_if_any()
    if not out:
        raise ValueError(f"{path}: no prediction lines")
    return out


def attach_references(lines: Sequence[PredictionLine], rows: Sequence[Mapping], source: str) -> list[PredictionLine]:
    """Take each line's reference from the dataset row with the same id; ids must match one to one."""
    problems = LineProblems(source)
    by_id = {str(row["id"]): row for row in rows}
    out = []
    for line in lines:
        if line.id is None:
            problems.add("no 'id': references from --data are matched by id", line.line)
        elif line.id not in by_id:
            problems.add("id not in the dataset split (mismatched ids)", line.line)
        else:
            row = by_id[line.id]
            findings, impression = row.get("findings") or "", row.get("impression") or ""
            out.append(
                PredictionLine(
                    line.line,
                    line.id,
                    line.prediction,
                    reference_text(findings, impression),
                    findings or None,
                    impression or None,
                )
            )
    problems.raise_if_any()
    missing = sorted(set(by_id) - {line.id for line in lines})
    if missing:
        shown = ", ".join(repr(i) for i in missing[:_MAX_LINES_SHOWN])
        more = f" and {len(missing) - _MAX_LINES_SHOWN} more" if len(missing) > _MAX_LINES_SHOWN else ""
        raise ValueError(f"{source}: {len(missing)} studies of the dataset split have no prediction: {shown}{more}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Texts to score


def _line_reference(line: PredictionLine) -> str:
    if (line.reference or "").strip():
        return line.reference
    return reference_text(line.findings or "", line.impression or "")


def section_pairs(
    lines: Sequence[PredictionLine], section: str, sections: Sequence[str]
) -> tuple[list[PredictionLine], list[str], list[str], list[int]]:
    """(kept lines, prediction texts, reference texts, excluded line numbers) for ``section`` (module docstring)."""
    if section not in SECTION_CHOICES:
        raise ValueError(f"unknown section {section!r}; choose one of {', '.join(SECTION_CHOICES)}")
    sections = validate_sections(sections)
    kept, predictions, references, excluded = [], [], [], []
    if section == "report":
        for line in lines:
            kept.append(line)
            predictions.append(extract_lenient(line.prediction, sections))
            references.append(_line_reference(line))
        return kept, predictions, references, excluded
    tag = _SECTION_TAG[section]
    if tag not in sections:
        raise ValueError(f"--section {section} needs the completion sections to include {tag!r}: {list(sections)}")
    for line in lines:
        reference = getattr(line, section)
        if not (reference or "").strip():
            excluded.append(line.line)
            continue
        parsed = parse_strict(line.prediction, sections)
        kept.append(line)
        predictions.append(parsed[tag] if parsed is not None else "")
        references.append(reference)
    if not kept:
        raise ValueError(f"--section {section}: no line has a reference {section!r} key with text")
    return kept, predictions, references, excluded
