"""Loaders from on-disk datasets to validated study rows (DESIGN.md section 2).

Formats, each reached through ``load_rows(format, path, split, **options)``:

- ``r2gen``: the ``annotation.json`` + ``images/`` folder of R2Gen (Chen et al. 2020), for IU-Xray (two image paths
  per study, ids like ``CXR2384_IM-0942``) and MIMIC-CXR (one path per entry, ``p10/p10000032/s50414267/<dicom>.jpg``,
  plus ``study_id``/``subject_id``). ``findings``/``impression`` keys are used when present (the demo data writes
  them), else ``report`` is split by its section headers (R2Gen's reports have none: all findings).
- ``mimic_cxr_jpg``: MIMIC-CXR-JPG 2.x as published: ``mimic-cxr-2.0.0-split.csv[.gz]``,
  ``mimic-cxr-2.0.0-metadata.csv[.gz]``, ``files/pXX/pSUBJECT/sSTUDY/DICOM.jpg``, optional
  ``mimic-cxr-2.0.0-chexpert.csv[.gz]`` labels, and the sectioned report CSV written by MIMIC-CXR's
  ``create_section_files.py`` (``mimic_cxr_sectioned.csv``: study, impression, findings, last_paragraph,
  comparison). Images are grouped by study; one row per study.
- ``jsonl``: one study row per line; image paths relative to the file's folder unless absolute.
- ``hf_disk``: a ``datasets`` Dataset or DatasetDict saved with ``save_to_disk``; images may be PIL images.

Every loader validates through ``rows.RowSkips``: a bad row is an error naming the file and the row, or with
``on_bad="skip"`` a counted skip logged at the end. Studies a filter leaves out on purpose (MIMIC-CXR view filter)
are counted and logged too.
"""

from __future__ import annotations

import csv
import gzip
import inspect
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from himed.clinical.observations import CHEXBERT_OBSERVATIONS
from himed.data.rows import (
    BAD_LABELS,
    MISSING_FIELD,
    MISSING_REPORT,
    UNREADABLE_ROW,
    WRONG_TYPE,
    BadRowError,
    OnBad,
    RowSkips,
    collapse_whitespace,
    normalize_view,
)
from himed.data.sections import reference_text

logger = logging.getLogger(__name__)

# Other names the same split goes by: R2Gen says "val", MIMIC-CXR "validate", Hugging Face "validation".
_SPLIT_ALIASES = (("train", "training"), ("val", "validate", "validation", "valid", "dev"), ("test", "testing"))


def resolve_split(split: str, available: Iterable[str], *, source: str) -> str:
    """The name ``split`` has in ``available`` (exactly, or through an alias); ValueError listing what exists."""
    available = list(available)
    if split in available:
        return split
    for group in _SPLIT_ALIASES:
        if split in group:
            for name in group:
                if name in available:
                    return name
    raise ValueError(f"{source}: no split {split!r}; available: {', '.join(map(str, available)) or 'none'}")


def _log_loaded(source: str | Path, split: str | None, rows: list[dict]) -> None:
    logger.info("%s: loaded %d rows for split %r", source, len(rows), split)


# --- R2Gen annotation.json ---------------------------------------------------------------------------------------


def _r2gen_row(entry: Any, where: str) -> Mapping:
    """An R2Gen entry in the study-row vocabulary: ``image_path`` becomes ``images`` (validated by rows.py)."""
    if not isinstance(entry, Mapping):
        raise BadRowError(where, "<row>", WRONG_TYPE, f"expected an object, got {type(entry).__name__}")
    if "image_path" not in entry:
        raise BadRowError(where, "image_path", MISSING_FIELD, "missing")
    if not isinstance(entry["image_path"], list):
        raise BadRowError(where, "image_path", WRONG_TYPE, f"expected a list, got {type(entry['image_path']).__name__}")
    row = {key: value for key, value in entry.items() if key != "image_path"}
    row["images"] = entry["image_path"]
    return row


def load_r2gen(root: str | Path, split: str, *, on_bad: OnBad = "error", check_images: str | bool = True) -> list[dict]:
    """Rows of one split of an R2Gen dataset folder (``annotation.json`` and ``images/``)."""
    root = Path(root)
    annotation = root / "annotation.json"
    if not annotation.is_file():
        raise FileNotFoundError(f"{annotation}: not found (an R2Gen dataset folder holds annotation.json and images/)")
    with annotation.open(encoding="utf-8") as file:
        try:
            data = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"{annotation}: not valid JSON: {error}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{annotation}: expected an object of splits (train, val, test), got {type(data).__name__}")
    key = resolve_split(split, data.keys(), source=str(annotation))
    entries = data[key]
    if not isinstance(entries, list):
        raise ValueError(f"{annotation}: split {key!r} must be a list of entries, got {type(entries).__name__}")

    def items() -> Iterator[tuple[str, Any]]:
        for i, entry in enumerate(entries):
            entry_id = entry.get("id") if isinstance(entry, Mapping) else None
            yield f"{annotation}: {key}[{i}]" + (f" (id {entry_id!r})" if entry_id is not None else ""), entry

    skips = RowSkips(on_bad, source=str(annotation))
    rows = skips.collect(items(), convert=_r2gen_row, check_images=check_images, image_root=root / "images")
    _log_loaded(annotation, key, rows)
    return rows


# --- MIMIC-CXR-JPG -----------------------------------------------------------------------------------------------

MIMIC_SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
MIMIC_METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
MIMIC_CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv"
MIMIC_SECTIONED_CSV = "mimic_cxr_sectioned.csv"
DEFAULT_MIMIC_VIEWS = ("PA", "AP")


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def read_csv_records(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, record)`` for each data record of a CSV (plain or .gz); ValueError naming missing columns.

    ``line`` is the physical line where the record ends (a quoted report may span lines).
    """
    with _open_text(path) as file:
        reader = csv.DictReader(file)
        columns = reader.fieldnames or []
        missing = [name for name in required if name not in columns]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; found {columns}")
        for record in reader:
            yield reader.line_num, record


def _find_csv(root: Path, name: str, *, required: bool) -> Path | None:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    if required:
        raise FileNotFoundError(f"{root}: neither {name} nor {name}.gz found")
    return None


def _chexpert_labels(path: Path) -> dict[str, tuple[int, dict[str, int] | BadRowError]]:
    """study id -> (line, labels) from a CheXpert/NegBio label CSV (1.0, 0.0, -1.0, blank = not mentioned).

    A bad value is kept as the error for that study, so it only costs that study under ``on_bad="skip"``.
    """
    with _open_text(path) as file:
        columns = next(csv.reader(file), [])
    unknown = [name for name in columns if name not in ("subject_id", "study_id", *CHEXBERT_OBSERVATIONS)]
    if unknown:
        raise ValueError(f"{path}: unknown label columns {unknown}; known: {', '.join(CHEXBERT_OBSERVATIONS)}")
    observations = [name for name in columns if name in CHEXBERT_OBSERVATIONS]
    out: dict[str, tuple[int, dict[str, int] | BadRowError]] = {}
    for line, record in read_csv_records(path, ("subject_id", "study_id")):
        labels: dict[str, int] | BadRowError = {}
        for name in observations:
            text = (record.get(name) or "").strip()
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                value = float("nan")
            if value not in (1.0, 0.0, -1.0):
                labels = BadRowError(
                    f"{path}:{line} (study s{record['study_id'].strip()})",
                    "labels",
                    BAD_LABELS,
                    f"{name!r} must be 1.0, 0.0, -1.0 or blank, got {text!r}",
                )
                break
            labels[name] = int(value)
        out[record["study_id"].strip()] = (line, labels)
    return out


def _sectioned_reports(path: Path) -> dict[str, tuple[int, str, str]]:
    """``s<study>`` -> (line, findings, impression) from MIMIC-CXR's ``mimic_cxr_sectioned.csv``."""
    return {
        record["study"].strip(): (line, record["findings"] or "", record["impression"] or "")
        for line, record in read_csv_records(path, ("study", "findings", "impression"))
    }


def load_mimic_cxr_jpg(
    root: str | Path,
    split: str,
    *,
    reports_csv: str | Path | None = None,
    labels_csv: str | Path | None = None,
    on_bad: OnBad = "error",
    check_images: str | bool = True,
    views: Sequence[str] | None = DEFAULT_MIMIC_VIEWS,
    max_images: int | None = None,
    prior_report: bool = False,
) -> list[dict]:
    """One row per study of a MIMIC-CXR-JPG split.

    ``reports_csv`` defaults to ``<root>/mimic_cxr_sectioned.csv[.gz]``; ``labels_csv`` to the CheXpert label CSV
    in ``root`` when it exists (rows then carry ``labels``). ``views`` keeps images whose ViewPosition is listed, in
    that order of preference (None keeps every image); studies left with no image are counted and logged.
    ``max_images`` caps images per study. ``prior_report`` adds the subject's previous study's report (by
    StudyDate/StudyTime in the metadata) as ``prior_report``.
    """
    root = Path(root)
    split_csv = _find_csv(root, MIMIC_SPLIT_CSV, required=True)
    metadata_csv = _find_csv(root, MIMIC_METADATA_CSV, required=True)
    reports_path = Path(reports_csv) if reports_csv is not None else _find_csv(root, MIMIC_SECTIONED_CSV, required=True)
    labels_path = Path(labels_csv) if labels_csv is not None else _find_csv(root, MIMIC_CHEXPERT_CSV, required=False)
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be at least 1, got {max_images}")
    allowed = [normalize_view(view) for view in views] if views is not None else None

    split_records = list(read_csv_records(split_csv, ("dicom_id", "study_id", "subject_id", "split")))
    split_name = resolve_split(split, {record["split"] for _, record in split_records}, source=str(split_csv))
    # study id -> (first line, subject id, [dicom ids]) in file order
    studies: dict[str, tuple[int, str, list[str]]] = {}
    for line, record in split_records:
        if record["split"] != split_name:
            continue
        study_id = record["study_id"].strip()
        _, subject_id, dicoms = studies.setdefault(study_id, (line, record["subject_id"].strip(), []))
        dicoms.append(record["dicom_id"].strip())

    view_of: dict[str, str] = {}
    when_of: dict[str, tuple[str, str]] = {}  # study -> earliest (StudyDate, StudyTime), for prior reports
    subject_studies: dict[str, set[str]] = {}
    for _, record in read_csv_records(metadata_csv, ("dicom_id", "study_id", "subject_id", "ViewPosition")):
        view_of[record["dicom_id"].strip()] = normalize_view(record["ViewPosition"])
        if prior_report:
            study_id = record["study_id"].strip()
            when = ((record.get("StudyDate") or "").strip(), (record.get("StudyTime") or "").strip().zfill(6))
            when_of[study_id] = min(when_of.get(study_id, when), when)
            subject_studies.setdefault(record["subject_id"].strip(), set()).add(study_id)
    if prior_report and not any(date for date, _ in when_of.values()):
        raise ValueError(f"{metadata_csv}: prior_report needs the StudyDate column, which is missing or empty")

    reports = _sectioned_reports(reports_path)
    labels = _chexpert_labels(labels_path) if labels_path is not None else {}

    def prior_of(study_id: str, subject_id: str) -> str | None:
        if study_id not in when_of:  # no metadata for this study: its date is unknown
            return None
        earlier = [s for s in subject_studies.get(subject_id, ()) if when_of[s] < when_of[study_id]]
        if not earlier:
            return None
        _, findings, impression = reports.get(f"s{max(earlier, key=when_of.__getitem__)}", (0, "", ""))
        return collapse_whitespace(reference_text(findings, impression)) or None

    filtered = 0
    files = os.path.abspath(root / "files")

    def items() -> Iterator[tuple[str, Mapping]]:
        nonlocal filtered
        for study_id, (line, subject_id, dicoms) in studies.items():
            where = f"{split_csv}:{line} (study s{study_id})"
            images = [(dicom, view_of.get(dicom, normalize_view(None))) for dicom in dicoms]
            if allowed is not None:
                images = sorted((i for i in images if i[1] in allowed), key=lambda i: allowed.index(i[1]))
            if max_images is not None:
                images = images[:max_images]
            if not images:
                filtered += 1
                continue
            row: dict[str, Any] = {
                "id": f"s{study_id}",
                # f-strings, not pathlib: this runs for every image of MIMIC-CXR (pathlib was most of the load time).
                "images": [f"{files}/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom}.jpg" for dicom, _ in images],
                "views": [view for _, view in images],
            }
            if f"s{study_id}" not in reports:
                yield where, BadRowError(where, "findings", MISSING_REPORT, f"study s{study_id} not in {reports_path}")
                continue
            report_line, row["findings"], row["impression"] = reports[f"s{study_id}"]
            where = f"{where}, {reports_path}:{report_line}"
            if study_id in labels:
                _, study_labels = labels[study_id]
                if isinstance(study_labels, BadRowError):
                    yield where, study_labels
                    continue
                row["labels"] = study_labels
            if prior_report:
                row["prior_report"] = prior_of(study_id, subject_id)
            yield where, row

    skips = RowSkips(on_bad, source=str(root))
    rows = skips.collect(items(), check_images=check_images)
    if filtered:
        logger.info(
            "%s: %d studies of split %r have no image with view in %s; not loaded", root, filtered, split_name, allowed
        )
    _log_loaded(root, split_name, rows)
    return rows


# --- JSONL -------------------------------------------------------------------------------------------------------


def load_jsonl(
    path: str | Path,
    *,
    on_bad: OnBad = "error",
    check_images: str | bool = True,
    image_root: str | Path | None = None,
) -> list[dict]:
    """Rows of a JSONL file, one study row per line (blank lines are not rows); errors name ``file:line``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    root = Path(image_root) if image_root is not None else path.parent

    def items() -> Iterator[tuple[str, Any]]:
        with path.open(encoding="utf-8") as file:
            for line_number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                where = f"{path}:{line_number}"
                try:
                    yield where, json.loads(line)
                except json.JSONDecodeError as error:
                    yield where, BadRowError(where, "<line>", WRONG_TYPE, f"not valid JSON: {error}")

    skips = RowSkips(on_bad, source=str(path))
    rows = skips.collect(items(), convert=_single_image, check_images=check_images, image_root=root)
    _log_loaded(path, None, rows)
    return rows


def _single_image(row: Any, where: str) -> Any:
    if isinstance(row, Mapping) and "images" not in row and "image" in row:
        row = dict(row)
        image = row.pop("image")
        row["images"] = None if image is None else [image]
    return row


# --- Hugging Face datasets saved to disk -------------------------------------------------------------------------


def load_hf_disk(
    path: str | Path,
    split: str | None = None,
    *,
    on_bad: OnBad = "error",
    check_images: str | bool = True,
    image_root: str | Path | None = None,
) -> list[dict]:
    """Rows of a ``datasets`` Dataset/DatasetDict saved with ``save_to_disk``.

    A DatasetDict needs ``split``; a single Dataset is used whole (logged when a split was asked for). Images may be
    an ``Image``/``Sequence(Image)`` column (PIL images) or path strings (relative to ``image_root``, default
    ``path``). A row whose images fail to decode is a bad row.
    """
    import datasets  # heavy import: only when this format is used

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found")
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split is None:
            raise ValueError(f"{path}: a DatasetDict; name a split ({', '.join(loaded.keys())})")
        split = resolve_split(split, loaded.keys(), source=str(path))
        dataset = loaded[split]
    else:
        dataset = loaded
        if split is not None:
            logger.info("%s: a single Dataset without splits; all of it is used for split %r", path, split)
    root = Path(image_root) if image_root is not None else path
    part = split if isinstance(loaded, datasets.DatasetDict) else "dataset"  # how error messages name the rows

    def items() -> Iterator[tuple[str, Any]]:
        for i in range(len(dataset)):
            where = f"{path}: {part}[{i}]"
            try:
                yield where, dataset[i]
            except Exception as error:  # decoding a stored image can raise anything PIL raises
                yield where, BadRowError(where, "<row>", UNREADABLE_ROW, f"could not be decoded: {error}")

    skips = RowSkips(on_bad, source=str(path))
    rows = skips.collect(items(), convert=_single_image, check_images=check_images, image_root=root)
    _log_loaded(path, split, rows)
    return rows


# --- one entry point ---------------------------------------------------------------------------------------------


def _jsonl_split(
    path: str | Path,
    split: str | None,
    *,
    on_bad: OnBad = "error",
    check_images: str | bool = True,
    image_root: str | Path | None = None,
) -> list[dict]:
    """A folder holds ``<split>.jsonl``; a file is itself one split."""
    path = Path(path)
    options = {"on_bad": on_bad, "check_images": check_images, "image_root": image_root}
    if path.is_dir():
        if split is None:
            raise ValueError(f"{path}: a folder of JSONL files; name a split")
        candidates = sorted(p.stem for p in path.glob("*.jsonl"))
        return load_jsonl(path / f"{resolve_split(split, candidates, source=str(path))}.jsonl", **options)
    if split is not None:
        logger.info("%s: a single JSONL file; all of it is used for split %r", path, split)
    return load_jsonl(path, **options)


LOADERS: dict[str, Callable[..., list[dict]]] = {
    "r2gen": load_r2gen,
    "mimic_cxr_jpg": load_mimic_cxr_jpg,
    "jsonl": _jsonl_split,
    "hf_disk": load_hf_disk,
}


def load_rows(format: str, path: str | Path, split: str | None = "train", **options: Any) -> list[dict]:
    """Load one split of a dataset in ``format`` (one of ``LOADERS``); options go to that format's loader.

    An option the format's loader does not take is a ValueError listing the ones it does (recipes pass options
    from YAML, where a misspelt key must not pass silently).
    """
    if format not in LOADERS:
        raise ValueError(f"unknown data format {format!r}; valid formats: {', '.join(LOADERS)}")
    loader = LOADERS[format]
    accepted = loader_options(format)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for data format {format!r}; valid: {', '.join(accepted)}")
    return loader(path, split, **options)


def loader_options(format: str) -> list[str]:
    """The keyword options the loader of ``format`` takes (its keyword-only parameters)."""
    parameters = inspect.signature(LOADERS[format]).parameters.values()
    return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
