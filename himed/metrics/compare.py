"""``himed compare``: runs side by side (e.g. base -> SFT -> RL, as HiMed-RL's fig. 4), as a Markdown table.

Columns are runs in the order given, named by their directories or ``--names``; rows are metrics (the first run's
order, then any metric only later runs have); after each later run, its change against the first run. A metric a
run lacks shows as ``-``. Settings that change what a number means (cleaning, section, METEOR variant, labeler,
uncertain policy) are compared too, and any difference is printed under the table: such runs are not comparable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Config keys that must agree for two runs' numbers to be comparable.
COMPARABILITY_KEYS = ("clean", "section", "meteor", "labeler", "uncertain")


def load_run(path: str | Path) -> dict[str, Any]:
    """A metrics.json (or a directory holding one), checked to have the ``metrics`` mapping of numbers."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (himed evaluate writes DIR/metrics.json)")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from None
    metrics = result.get("metrics") if isinstance(result, dict) else None
    if not isinstance(metrics, dict):
        raise ValueError(f"{path}: no 'metrics' object; is this a metrics.json written by himed evaluate?")
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path}: metric {name!r} is not a number: {value!r}")
    return {"path": path, "metrics": metrics, "config": result.get("config", {}), "n": result.get("n")}


def load_runs(paths: Sequence[str | Path], names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Runs with a ``name`` each: ``names`` in order, else the directory holding each metrics.json."""
    runs = [load_run(path) for path in paths]
    if names is not None:
        if len(names) != len(runs):
            raise ValueError(f"--names gives {len(names)} names for {len(runs)} runs")
    else:
        names = [run["path"].resolve().parent.name for run in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"runs need distinct names, got {list(names)}; pass --names")
    for run, name in zip(runs, names, strict=True):
        run["name"] = name
    return runs


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _delta(value: float | None, first: float | None) -> str:
    return "-" if value is None or first is None else f"{value - first:+.4f}"


def comparability_notes(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per setting that differs between runs."""
    notes = []
    for key in COMPARABILITY_KEYS:
        values = [run["config"].get(key) for run in runs]
        if len({json.dumps(v, sort_keys=True) for v in values}) > 1:
            shown = ", ".join(f"{run['name']}={value}" for run, value in zip(runs, values, strict=True))
            notes.append(f"Not comparable: runs differ in {key} ({shown}).")
    return notes


def compare_table(runs: Sequence[Mapping[str, Any]], deltas: bool = True) -> str:
    """The Markdown table of the module docstring, with comparability notes under it."""
    if not runs:
        raise ValueError("nothing to compare: give at least one metrics.json")
    names: list[str] = []
    for run in runs:
        names += [name for name in run["metrics"] if name not in names]
    header = ["metric", runs[0]["name"]]
    for run in runs[1:]:
        header.append(run["name"])
        if deltas:
            header.append(f"Δ {run['name']}")
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    n_row = ["n", str(runs[0].get("n"))]
    for run in runs[1:]:
        n_row.append(str(run.get("n")))
        if deltas:
            n_row.append("")
    lines.append("| " + " | ".join(n_row) + " |")
    for name in names:
        first = runs[0]["metrics"].get(name)
        row = [name, _cell(first)]
        for run in runs[1:]:
            value = run["metrics"].get(name)
            row.append(_cell(value))
            if deltas:
                row.append(_delta(value, first))
        lines.append("| " + " | ".join(row) + " |")
    notes = comparability_notes(runs)
    return "\n".join(lines + ([""] + notes if notes else []))
