"""The study row (DESIGN.md section 2): validation, report splitting and the bad-row policy.

A study row is a plain dict::

    {"id": str, "images": [abs path str | PIL.Image, ...], "views": ["PA", "LATERAL", ...],
     "findings": str (non-empty), "impression": str (may be ""), "indication": str | None,
     "prior_report": str | None, "labels": {observation: 1 | 0 | -1}}

Choices this module makes (and every loader inherits):

- ``views`` is parallel to ``images``; a view is upper-cased with inner whitespace collapsed ("ap axial" ->
  "AP AXIAL"); a missing or empty view is ``UNKNOWN_VIEW`` ("UNKNOWN"). Prompts omit the view for UNKNOWN.
- Report text has whitespace runs (line wrapping in MIMIC-CXR reports) collapsed to single spaces.
- ``findings`` must be non-empty: the completion's ``finding`` section must be non-empty (sections.py), so an
  impression-only study cannot be a training or evaluation target. An empty findings AND impression is the
  "empty reference" data error of DESIGN.md section 3; an impression-only study is rejected with its own reason.
- When a row has no ``findings``/``impression`` (absent or null) but a ``report``, the report is split by its
  section headers (``split_report``, which also yields an ``INDICATION:`` section); a report without headers is
  all findings (R2Gen's annotation reports are findings only).
- ``labels`` absent or None means "not known" and becomes ``{}``; a given mapping is validated by
  ``normalize_labels`` and gets No Finding by the DESIGN.md rule (``with_no_finding``), so row labels and labeler
  output follow one convention.
- Keys outside the contract are not carried into the validated row.

Bad rows raise ``BadRowError`` (naming the source file, the row and the field); ``RowSkips`` turns them into
counted skips with a logged summary when the caller asks for ``on_bad="skip"``. Nothing is dropped silently.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

from PIL import Image

from himed.clinical.observations import normalize_labels, with_no_finding

logger = logging.getLogger(__name__)

UNKNOWN_VIEW = "UNKNOWN"
ON_BAD_CHOICES = ("error", "skip")
OnBad = Literal["error", "skip"]

# Reasons a row is bad; they key the skip counts in the logged summary.
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
EMPTY_REPORT = "empty_report"
EMPTY_FINDINGS = "empty_findings"
MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
BAD_LABELS = "bad_labels"
DUPLICATE_ID = "duplicate_id"
MISSING_REPORT = "missing_report"
UNREADABLE_ROW = "unreadable_row"

_WHITESPACE = re.compile(r"\s+")


class BadRowError(ValueError):
    """A study row that cannot be used; the message names where (file and row), the field and what is wrong."""

    def __init__(self, where: str, field: str, reason: str, detail: str) -> None:
        self.where, self.field, self.reason, self.detail = where, field, reason, detail
        super().__init__(f"{where}: field {field!r}: {detail}")


# --- report sections -------------------------------------------------------------------------------------------


class ReportSections(NamedTuple):
    findings: str
    impression: str
    indication: str | None


# Headers of free-text radiology reports (MIMIC-CXR, IU-Xray XML exports). Only these names split a report, so an
# ordinary sentence containing a colon never does.
# A combined "FINDINGS AND IMPRESSION:" section is findings (the longer name wins over "IMPRESSION" inside it).
_FINDINGS_HEADERS = ("FINDINGS", "FINDING", "FINDINGS AND IMPRESSION")
_IMPRESSION_HEADERS = ("IMPRESSION", "IMPRESSIONS", "CONCLUSION")
_INDICATION_HEADERS = ("INDICATION", "INDICATIONS", "CLINICAL HISTORY", "HISTORY", "REASON FOR EXAMINATION")
_OTHER_HEADERS = (
    "COMPARISON",
    "COMPARISONS",
    "TECHNIQUE",
    "EXAMINATION",
    "EXAM",
    "FINAL REPORT",
    "NOTIFICATION",
    "RECOMMENDATION",
    "RECOMMENDATIONS",
    "RECOMMENDATION(S)",
)
_ALL_HEADERS = sorted(
    _FINDINGS_HEADERS + _IMPRESSION_HEADERS + _INDICATION_HEADERS + _OTHER_HEADERS, key=len, reverse=True
)
_HEADER_NAMES = "|".join(re.escape(name) for name in _ALL_HEADERS)
# Upper-case headers anywhere after whitespace ("... FINDINGS: ..."), any case at the start of a line.
_UPPER_HEADER = re.compile(rf"(?:^|(?<=\s))(?P<name>{_HEADER_NAMES})\s*:")
_LINE_HEADER = re.compile(rf"^[ \t]*(?P<name>{_HEADER_NAMES})[ \t]*:", re.IGNORECASE | re.MULTILINE)
# "FINAL REPORT" is written without a colon in MIMIC-CXR reports.
_FINAL_REPORT = re.compile(r"^\s*FINAL REPORT\b", re.MULTILINE)


def collapse_whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def split_report(report: str) -> ReportSections:
    """Split a free-text report into findings, impression and indication by its section headers.

    ``FINDINGS:`` and ``IMPRESSION:`` (or ``CONCLUSION:``) headers give the two sections; ``INDICATION:`` /
    ``HISTORY:`` give the indication; other known headers (COMPARISON, TECHNIQUE, ...) end the section before them
    and are dropped. Without a findings header, the text before the first header is the findings. A report with no
    known header is all findings.
    """
    text = _FINAL_REPORT.sub(" ", report)
    matches = {m.start(): m for m in _UPPER_HEADER.finditer(text)}
    matches.update({m.start("name"): m for m in _LINE_HEADER.finditer(text)})
    if not matches:
        return ReportSections(collapse_whitespace(text), "", None)
    ordered = [matches[start] for start in sorted(matches)]
    sections: dict[str, list[str]] = {}
    preamble = text[: ordered[0].start("name")]
    for i, match in enumerate(ordered):
        end = ordered[i + 1].start("name") if i + 1 < len(ordered) else len(text)
        name = match.group("name").upper()
        sections.setdefault(name, []).append(text[match.end() : end])

    def joined(names: Iterable[str]) -> str:
        return collapse_whitespace(" ".join(part for name in names for part in sections.get(name, [])))

    findings = joined(_FINDINGS_HEADERS)
    if not any(name in sections for name in _FINDINGS_HEADERS):
        findings = collapse_whitespace(preamble)
    indication = joined(_INDICATION_HEADERS) or None
    return ReportSections(findings, joined(_IMPRESSION_HEADERS), indication)


# --- images ----------------------------------------------------------------------------------------------------


# How thoroughly an image file is checked while loading, cheapest first. ``verify`` is what ``check_images: true``
# always meant; ``decode`` is the only level that catches a truncated JPEG body (verify passes it).
IMAGE_CHECK_LEVELS = ("none", "open", "verify", "decode")


def image_check_level(value: Any) -> str:
    """The check level named by ``value``: a level name, or a bool (True = ``verify``, False = ``none``)."""
    if isinstance(value, bool):
        return "verify" if value else "none"
    text = str(value).strip().lower()
    text = {"true": "verify", "yes": "verify", "1": "verify", "false": "none", "no": "none", "0": "none"}.get(
        text, text
    )
    if text not in IMAGE_CHECK_LEVELS:
        raise ValueError(f"check_images must be one of {', '.join(IMAGE_CHECK_LEVELS)} (or true/false), got {value!r}")
    return text


def decode_image_file(path: str) -> None:
    """Decode every pixel of ``path`` (raises what PIL raises). JPEGs decode at 1/8 scale (``draft``): all of the
    entropy-coded data is still read, so a truncated or corrupt body fails the same way, at about half the cost."""
    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()


def image_file_problem(path: str, level: str = "verify") -> tuple[str, str] | None:
    """``(reason, message)`` when ``path`` fails the ``level`` check, else None (``none`` checks nothing)."""
    if level == "none":
        return None
    if not os.path.isfile(path):
        return MISSING_IMAGE, f"image file not found: {path}"
    try:
        if level == "decode":
            decode_image_file(path)
        else:
            with Image.open(path) as image:
                if level == "verify":
                    image.verify()
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, struct.error, ...) for bad files
        return CORRUPT_IMAGE, f"image file {path} is unreadable ({level}): {error}"
    return None


def check_image_file(path: str, *, where: str, field: str = "images", level: str | bool = "verify") -> None:
    """Raise BadRowError unless ``path`` passes the ``level`` check (``IMAGE_CHECK_LEVELS``).

    ``verify`` checks the header and, for PNG, every chunk's CRC, without decoding pixels (cheap enough for
    whole datasets). A truncated JPEG body passes it; only ``decode`` catches that before training.
    """
    problem = image_file_problem(path, image_check_level(level))
    if problem is not None:
        raise BadRowError(where, field, *problem)


def normalize_view(view: Any) -> str:
    """Upper-case with whitespace collapsed; None or blank is ``UNKNOWN_VIEW``."""
    if view is None:
        return UNKNOWN_VIEW
    return _normalize_view_text(str(view))


@functools.lru_cache(maxsize=256)  # a dataset has a handful of distinct views and millions of images
def _normalize_view_text(view: str) -> str:
    return collapse_whitespace(view).upper() or UNKNOWN_VIEW


# --- row validation ---------------------------------------------------------------------------------------------


def _optional_text(row: Mapping, key: str, where: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRowError(where, key, WRONG_TYPE, f"expected a string or null, got {type(value).__name__}")
    return collapse_whitespace(value) or None


def _required_text(row: Mapping, key: str, where: str, *, default: str | None = None) -> str:
    if key not in row or row[key] is None:
        if default is not None:
            return default
        raise BadRowError(where, key, MISSING_FIELD, "missing")
    value = row[key]
    if not isinstance(value, str):
        raise BadRowError(where, key, WRONG_TYPE, f"expected a string, got {type(value).__name__}")
    return collapse_whitespace(value)


def _row_id(row: Mapping, where: str) -> str:
    if "id" not in row or row["id"] is None:
        raise BadRowError(where, "id", MISSING_FIELD, "missing")
    value = row["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRowError(where, "id", WRONG_TYPE, f"expected a string or integer, got {type(value).__name__}")
    value = str(value).strip()
    if not value:
        raise BadRowError(where, "id", MISSING_FIELD, "empty")
    return value


def _images(
    row: Mapping, where: str, image_root: str | Path | None, check_images: str | bool, check_paths: bool = True
) -> list:
    if "images" not in row or row["images"] is None:
        raise BadRowError(where, "images", MISSING_FIELD, "missing")
    images = row["images"]
    if not isinstance(images, (list, tuple)):
        raise BadRowError(
            where, "images", WRONG_TYPE, f"expected a list of paths or images, got {type(images).__name__}"
        )
    if not images:
        raise BadRowError(where, "images", MISSING_FIELD, "no images")
    level = image_check_level(check_images)
    out: list = []
    for i, image in enumerate(images):
        field = f"images[{i}]"
        if isinstance(image, Image.Image):
            if level != "none":
                # Lazily opened images (datasets decodes on access) only fail when their pixels are read.
                try:
                    image.load()
                except Exception as error:  # PIL raises many types for truncated or corrupt data
                    raise BadRowError(where, field, CORRUPT_IMAGE, f"image is unreadable: {error}") from None
            out.append(image)
            continue
        if isinstance(image, os.PathLike):
            image = os.fspath(image)
        if not isinstance(image, str) or not image.strip():
            raise BadRowError(where, field, WRONG_TYPE, f"expected a path or a PIL image, got {image!r:.80}")
        path = image if os.path.isabs(image) or image_root is None else os.path.join(image_root, image)
        path = os.path.abspath(path)
        if level != "none" and check_paths:
            check_image_file(path, where=where, field=field, level=level)
        out.append(path)
    return out


def _views(row: Mapping, where: str, n_images: int) -> list[str]:
    views = row.get("views")
    if views is None:
        return [UNKNOWN_VIEW] * n_images
    if not isinstance(views, (list, tuple)):
        raise BadRowError(where, "views", WRONG_TYPE, f"expected a list parallel to images, got {type(views).__name__}")
    if len(views) != n_images:
        raise BadRowError(where, "views", WRONG_TYPE, f"has {len(views)} entries for {n_images} images")
    for i, view in enumerate(views):
        if view is not None and not isinstance(view, str):
            raise BadRowError(where, f"views[{i}]", WRONG_TYPE, f"expected a string, got {type(view).__name__}")
    return [normalize_view(view) for view in views]


def _labels(row: Mapping, where: str) -> dict[str, int]:
    labels = row.get("labels")
    if labels is None or (isinstance(labels, str) and not labels.strip()):
        return {}
    try:
        normalized = normalize_labels(labels, where="labels")
    except ValueError as error:
        reason = BAD_LABELS if isinstance(labels, (Mapping, str)) else WRONG_TYPE
        raise BadRowError(where, "labels", reason, str(error).removeprefix("labels: ")) from None
    return with_no_finding(normalized)


def validate_row(
    row: Mapping,
    *,
    where: str,
    check_images: str | bool = True,
    image_root: str | Path | None = None,
    check_paths: bool = True,
) -> dict:
    """Validate one study row and return it in the normalized form of the module docstring.

    ``where`` names the source and the row (e.g. ``"data/annotation.json: train[3] (id 'CXR1')"``); every error
    message starts with it. Relative image paths are resolved against ``image_root`` (or the working directory).
    ``check_images`` is a level of ``IMAGE_CHECK_LEVELS`` (True = ``verify``: each image file must exist and pass
    PIL's ``verify``; False = ``none``). ``check_paths=False`` leaves image files to the caller (``RowSkips``
    checks them all at once, in parallel) and checks only in-memory PIL images.
    """
    if not isinstance(row, Mapping):
        raise BadRowError(where, "<row>", WRONG_TYPE, f"expected an object, got {type(row).__name__}")
    row_id = _row_id(row, where)
    # Arrow columns give every row every key, so a null findings/impression means "not given here".
    if row.get("findings") is not None or row.get("impression") is not None:
        findings = _required_text(row, "findings", where)
        impression = _required_text(row, "impression", where, default="")
        indication = _optional_text(row, "indication", where)
    elif row.get("report") is not None:
        report = _required_text(row, "report", where)
        findings, impression, indication = split_report(report)
        indication = _optional_text(row, "indication", where) or indication
    else:
        raise BadRowError(where, "findings", MISSING_FIELD, "missing (and no 'report' to split)")
    if not findings and not impression:
        raise BadRowError(where, "findings", EMPTY_REPORT, "the report is empty (findings and impression)")
    if not findings:
        raise BadRowError(
            where, "findings", EMPTY_FINDINGS, "findings is empty (impression-only studies cannot be targets)"
        )
    images = _images(row, where, image_root, check_images, check_paths)
    return {
        "id": row_id,
        "images": images,
        "views": _views(row, where, len(images)),
        "findings": findings,
        "impression": impression,
        "indication": indication,
        "prior_report": _optional_text(row, "prior_report", where),
        "labels": _labels(row, where),
    }


# --- the bad-row policy -----------------------------------------------------------------------------------------


class RowSkips:
    """The ``on_bad`` policy of one load: ``"error"`` re-raises a bad row, ``"skip"`` counts it by reason.

    Call ``log_summary()`` at the end of the load: with skips it logs one warning with the counts and the first
    few messages. Duplicate ids within one load are bad rows too (``check_duplicate``).
    """

    def __init__(self, on_bad: OnBad = "error", *, source: str, max_examples: int = 3) -> None:
        if on_bad not in ON_BAD_CHOICES:
            raise ValueError(f"on_bad must be one of {', '.join(ON_BAD_CHOICES)}, got {on_bad!r}")
        self.on_bad = on_bad
        self.source = source
        self.max_examples = max_examples
        self.counts: Counter[str] = Counter()
        self.examples: list[str] = []
        self._seen_ids: set[str] = set()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def bad(self, error: BadRowError) -> None:
        """Raise ``error`` under ``on_bad="error"``; otherwise count it."""
        if self.on_bad == "error":
            raise error
        self.counts[error.reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(str(error))

    def validate(self, row: Mapping, *, where: str, **options: Any) -> dict | None:
        """``validate_row`` plus the duplicate-id check; None for a skipped row."""
        try:
            valid = validate_row(row, where=where, **options)
            self.check_duplicate(valid["id"], where=where)
        except BadRowError as error:
            self.bad(error)
            return None
        return valid

    def check_duplicate(self, row_id: str, *, where: str) -> None:
        if row_id in self._seen_ids:
            raise BadRowError(where, "id", DUPLICATE_ID, f"id {row_id!r} appears more than once")
        self._seen_ids.add(row_id)

    def collect(
        self,
        items: Iterable[tuple[str, Any]],
        *,
        convert: Callable[[Any, str], Any] | None = None,
        **options: Any,
    ) -> list[dict]:
        """Validate ``(where, raw row)`` pairs, keep the good rows and log the summary.

        ``convert(raw, where)`` maps a format's record to the study-row vocabulary first; a raw item that is
        already a ``BadRowError`` (a loader found the problem, e.g. unparsable JSON) goes straight to the policy.
        Image files are checked after the rows, all at once (``image_checks.check_image_files``: parallel, with a
        progress bar, cached per ``source``); a row with a bad file then goes to the policy like any bad row.
        """
        level = image_check_level(options.pop("check_images", True))
        checked: list[tuple[str, dict]] = []
        first_error: BadRowError | None = None
        for where, raw in items:
            try:
                if isinstance(raw, BadRowError):
                    raise raw
                row = convert(raw, where) if convert is not None else raw
                valid = validate_row(row, where=where, check_images=level, check_paths=False, **options)
                self.check_duplicate(valid["id"], where=where)
            except BadRowError as error:
                if self.on_bad == "error":  # raised after the image files of the rows before it are checked
                    first_error = error
                    break
                self.bad(error)
                continue
            checked.append((where, valid))
        rows = self._drop_bad_image_files(checked, level)
        if first_error is not None:
            raise first_error
        self.log_summary()
        return rows

    def _drop_bad_image_files(self, checked: list[tuple[str, dict]], level: str) -> list[dict]:
        from himed.data.image_checks import check_image_files

        paths = [image for _, row in checked for image in row["images"] if isinstance(image, str)]
        problems = check_image_files(paths, level, cache_key=self.source)
        rows = []
        for where, row in checked:
            bad = [
                (i, problems[image])
                for i, image in enumerate(row["images"])
                if isinstance(image, str) and image in problems
            ]
            if bad:
                i, (reason, message) = bad[0]
                self.bad(BadRowError(where, f"images[{i}]", reason, message))
                continue
            rows.append(row)
        return rows

    def summary(self) -> str:
        counts = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.counts.items()))
        examples = "; ".join(self.examples)
        return f"{self.source}: skipped {self.total} bad rows ({counts}); first: {examples}"

    def log_summary(self) -> None:
        if self.total:
            logger.warning(self.summary())
