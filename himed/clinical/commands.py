"""``himed label``: label report texts in a JSONL file with a clinical labeler (docs/scoring.md).

Input: one JSON object per line with the text in ``--field``. Without ``--field`` the text is the first of: ``text``,
``report``, or the reference text ``findings + " " + impression`` (just findings when the impression is empty).
Blank lines are skipped. Output: one line per input row, ``{"id": ..., "labels": {...}}`` with CheXpert-style labels
(1 positive, 0 negative, -1 uncertain, for mentioned observations; No Finding when nothing but devices is found);
``id`` is the row's ``id``, or its 1-based line number when the row has none. Every input line is checked before any
labelling starts, and errors name ``file:line``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Labelled and written this many rows at a time, so a large file never holds all its labels in memory twice.
CHUNK_ROWS = 1024


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "label",
        help="label report texts in a JSONL file (rules or CheXbert)",
        # The module docstring's second paragraph is the user-facing description (one source, no drift).
        description=" ".join(__doc__.split("\n\n")[1].replace("``", "").split()),
    )
    parser.add_argument("--input", required=True, help="input JSONL file, one object per line")
    parser.add_argument("--output", required=True, help="output JSONL file: {'id': ..., 'labels': {...}} per line")
    parser.add_argument(
        "--labeler",
        default="rules",
        help="labeler name from himed.clinical.labelers: rules (default, no weights) or chexbert",
    )
    parser.add_argument(
        "--field",
        default=None,
        help="the field holding the text (default: text, else report, else findings + impression)",
    )
    parser.add_argument("--chexbert-checkpoint", default=None, help="chexbert only: path to CheXbert's chexbert.pth")
    parser.add_argument(
        "--chexbert-tokenizer", default=None, help="chexbert only: local bert-base-uncased tokenizer folder"
    )
    parser.add_argument(
        "--chexbert-config",
        default=None,
        help="chexbert only: a BertConfig config.json when the checkpoint is not bert-base shaped (default bert-base)",
    )
    parser.add_argument("--device", default="cpu", help="chexbert only: torch device (default cpu)")
    parser.add_argument("--batch-size", type=int, default=32, help="chexbert only: reports per forward pass")
    parser.set_defaults(handler=run_label)


def _labeler_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    chexbert_flags = {
        "--chexbert-checkpoint": args.chexbert_checkpoint,
        "--chexbert-tokenizer": args.chexbert_tokenizer,
        "--chexbert-config": args.chexbert_config,
    }
    if args.labeler != "chexbert":
        given = [flag for flag, value in chexbert_flags.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply to --labeler chexbert")
        return {}
    missing = [flag for flag in ("--chexbert-checkpoint", "--chexbert-tokenizer") if chexbert_flags[flag] is None]
    if missing:
        raise ValueError(
            f"--labeler chexbert needs {' and '.join(missing)}: CheXbert's chexbert.pth (non-commercial licence, from "
            "https://github.com/stanfordmlgroup/CheXbert) and a local bert-base-uncased tokenizer folder"
        )
    kwargs: dict[str, Any] = {
        "checkpoint": args.chexbert_checkpoint,
        "tokenizer": args.chexbert_tokenizer,
        "device": args.device,
        "batch_size": args.batch_size,
    }
    if args.chexbert_config is not None:
        kwargs["config"] = args.chexbert_config
    return kwargs


def row_text(row: dict[str, Any], field: str | None, where: str) -> str:
    """The text to label in ``row`` (see the module docstring); ValueError naming ``where`` when there is none."""
    if field is not None:
        candidates = [field]
    elif "text" in row:
        candidates = ["text"]
    elif "report" in row:
        candidates = ["report"]
    elif "findings" in row:
        findings, impression = row["findings"], row.get("impression") or ""
        for name, value in (("findings", findings), ("impression", impression)):
            if not isinstance(value, str):
                raise ValueError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
        return f"{findings} {impression}".strip() if impression.strip() else findings
    else:
        raise ValueError(f"{where}: no text field: expected 'text', 'report' or 'findings' (or pass --field)")
    name = candidates[0]
    if name not in row:
        raise ValueError(f"{where}: missing field {name!r}")
    value = row[name]
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    return value


def read_rows(path: Path, field: str | None) -> Iterator[tuple[Any, str]]:
    """``(id, text)`` per non-blank line of a JSONL file; ValueError naming ``path:line`` for a bad line."""
    from himed.data.jsonl import read_jsonl

    for number, row in read_jsonl(path):
        yield row.get("id", number), row_text(row, field, f"{path}:{number}")


def run_label(args: argparse.Namespace) -> int:
    from himed.clinical.labelers import get_labeler

    source = Path(args.input)
    if not source.is_file():
        raise FileNotFoundError(f"input file not found: {source}")
    # Validate every line before loading a model or writing anything.
    rows = list(read_rows(source, args.field))
    labeler = get_labeler(args.labeler, **_labeler_kwargs(args))
    target = Path(args.output)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8") as out:
        for begin in range(0, len(rows), CHUNK_ROWS):
            chunk = rows[begin : begin + CHUNK_ROWS]
            for (row_id, _), labels in zip(chunk, labeler.label([text for _, text in chunk]), strict=True):
                out.write(json.dumps({"id": row_id, "labels": labels}, ensure_ascii=False) + "\n")
    print(f"labelled {len(rows)} reports with {args.labeler} -> {target}")
    return 0
