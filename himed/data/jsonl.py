"""Reading JSONL files: one JSON value per line, blank lines skipped, every problem named ``path:line``; and
reading a whole JSON file (:func:`read_json`), a bad one named by its path.

The one reader behind the loaders' ``jsonl`` format, ``himed label``, ``himed score``, the predictions files of
``himed evaluate`` (scored and resumed), ``himed compare``'s samples.jsonl and the pipeline's reward summary. A caller that stops at the
first bad line lets ``read_jsonl`` raise; one that counts or collects bad lines (the loaders' ``on_bad: skip``) asks
for the error in the value's place (``errors="yield"``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal


def read_json(path: str | Path) -> Any:
    """The JSON value of the file at ``path``; a file that is not valid JSON is a ValueError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from None


class JsonlLineError(ValueError):
    """A line of a JSONL file that is not valid JSON (or not an object where one is needed): ``path:line: problem``."""

    def __init__(self, path: str | Path, number: int, problem: str, kind: str | None = None):
        self.path, self.number, self.problem = str(path), number, problem
        # The problem without its position in the line, so that a caller reporting many bad lines can group them.
        self.kind = kind or problem
        super().__init__(f"{self.where}: {problem}")

    @property
    def where(self) -> str:
        return f"{self.path}:{self.number}"


def read_jsonl(
    path: str | Path, *, objects: bool = True, errors: Literal["raise", "yield"] = "raise"
) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line of ``path`` (1-based numbers, as editors show them).

    A line that is not valid JSON, or with ``objects`` not a JSON object, raises :class:`JsonlLineError`; with
    ``errors="yield"`` the error is yielded in place of the value and reading goes on.
    """
    if errors not in ("raise", "yield"):
        raise ValueError(f"errors must be 'raise' or 'yield', got {errors!r}")
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                problem = JsonlLineError(
                    path,
                    number,
                    f"not valid JSON ({error.msg} at column {error.colno})",
                    kind=f"not valid JSON ({error.msg})",
                )
            else:
                if not objects or isinstance(value, dict):
                    yield number, value
                    continue
                problem = JsonlLineError(path, number, f"expected a JSON object, got {type(value).__name__}")
            if errors == "raise":
                raise problem
            yield number, problem
