"""``himed compare``: runs side by side (e.g. base -> SFT -> RL, as HiMed-RL's fig. 4), as a Markdown table.

Columns are runs in the order given, named by their directories or ``--names``; rows are metrics (the first run's
order, then any metric only later runs have); after each later run, its change against the first run. A metric a
run lacks shows as ``-``. Settings that change what a number means (cleaning, section, METEOR variant, labeler,
uncertain policy) are compared too, and any difference is printed under the table: such runs are not comparable.

Paired tests: when runs share study ids, each run's samples.jsonl (written by ``himed evaluate`` beside its
metrics.json) gives a paired bootstrap p-value per metric for each later run against the first, over the shared
studies (``himed.metrics.bootstrap.paired_p_values``: the same resamples applied to both runs, corpus metrics
recomputed, two-sided). A run without samples.jsonl, without ids, or sharing no id with the first gets no p-values,
and a note under the table says why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from himed.data.jsonl import read_json, read_jsonl

# Config keys that must agree for two runs' numbers to be comparable.
COMPARABILITY_KEYS = ("clean", "section", "meteor", "labeler", "uncertain")


def load_run(path: str | Path) -> dict[str, Any]:
    """A metrics.json (or a directory holding one), checked to have the ``metrics`` mapping of numbers."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (himed evaluate writes DIR/metrics.json)")
    result = read_json(path)
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


def read_samples(run: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The samples.jsonl records beside a run's metrics.json, or None when there is no such file."""
    path = Path(run["path"]).parent / run["config"].get("samples", "samples.jsonl")
    if not path.is_file():
        return None
    records = []
    for number, record in read_jsonl(path):
        if not isinstance(record.get("scores"), dict):
            raise ValueError(f"{path}:{number}: not a samples.jsonl record (no 'scores' object)")
        records.append(record)
    return records


def _shared_families(first: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, list[str]]:
    """Metrics both runs computed with the same family (family -> names, in the first run's order)."""

    def by_metric(run: Mapping[str, Any]) -> dict[str, str]:
        families = run["config"].get("metric_families", {})
        return {name: family for family, names in families.items() for name in names}

    ours, theirs = by_metric(first), by_metric(other)
    out: dict[str, list[str]] = {}
    for name, family in ours.items():
        if theirs.get(name) == family:
            out.setdefault(family, []).append(name)
    return out


def paired_tests(
    runs: Sequence[Mapping[str, Any]], *, resamples: int = 1000, seed: int = 0
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Paired bootstrap p-values of each later run against the first (run name -> metric -> p), and notes saying
    which runs could not be paired and why."""
    from himed.metrics.bootstrap import paired_p_values

    notes: list[str] = []
    out: dict[str, dict[str, float]] = {}
    if len(runs) < 2 or resamples < 1:
        return out, notes
    first = runs[0]
    first_samples = read_samples(first)
    if first_samples is None:
        return out, [f"No paired p-values: {first['name']} has no samples.jsonl beside its metrics.json."]
    first_ids = [record.get("id") for record in first_samples]
    # The first run's recomputed values, per set of shared studies: computed once for all runs sharing them.
    first_values: dict[tuple, dict] = {}
    if any(i is None for i in first_ids):
        return out, [f"No paired p-values: {first['name']}'s predictions have no ids to pair studies by."]
    for run in runs[1:]:
        samples = read_samples(run)
        if samples is None:
            notes.append(f"No paired p-values for {run['name']}: no samples.jsonl beside its metrics.json.")
            continue
        by_id = {record.get("id"): record for record in samples}
        shared = [i for i in first_ids if i in by_id]
        if not shared:
            notes.append(f"No paired p-values for {run['name']}: it shares no study id with {first['name']}.")
            continue
        if len(shared) < max(len(first_ids), len(samples)):
            notes.append(
                f"{run['name']} shares {len(shared)} study ids with {first['name']} ({len(samples)} and "
                f"{len(first_ids)} studies): its p-values are over the shared ones."
            )
        first_by_id = dict(zip(first_ids, first_samples, strict=True))
        families = _shared_families(first, run)
        if not families:
            notes.append(
                f"No paired p-values for {run['name']}: no metric computed the same way in both runs "
                "(config.metric_families; a metrics.json from before samples.jsonl has none)."
            )
            continue
        out[run["name"]] = paired_p_values(
            [first_by_id[i] for i in shared],
            [by_id[i] for i in shared],
            families,
            resamples=resamples,
            seed=seed,
            first_values=first_values.setdefault(tuple(shared), {}),
        )
    if out:
        notes.append(
            f"p: two-sided paired bootstrap p-value against {first['name']} ({resamples} resamples of the shared "
            f"studies, seed {seed}; the same resamples for both runs, corpus metrics recomputed on each; "
            "p = (1 + #{|d_b - d| >= |d|}) / (B + 1), d the observed difference)."
        )
    return out, notes


def _p_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


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


def compare_table(
    runs: Sequence[Mapping[str, Any]],
    deltas: bool = True,
    p_values: Mapping[str, Mapping[str, float]] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The Markdown table of the module docstring, with comparability notes under it.

    ``p_values`` (run name -> metric -> p, from :func:`paired_tests`) adds a ``p`` column after each later run
    that has them; ``notes`` are printed under the table.
    """
    if not runs:
        raise ValueError("nothing to compare: give at least one metrics.json")
    p_values = p_values or {}
    names: list[str] = []
    for run in runs:
        names += [name for name in run["metrics"] if name not in names]
    header = ["metric", runs[0]["name"]]
    for run in runs[1:]:
        header.append(run["name"])
        if deltas:
            header.append(f"Δ {run['name']}")
        if run["name"] in p_values:
            header.append(f"p {run['name']}")
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    n_row = ["n", str(runs[0].get("n"))]
    for run in runs[1:]:
        n_row.append(str(run.get("n")))
        if deltas:
            n_row.append("")
        if run["name"] in p_values:
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
            if run["name"] in p_values:
                row.append(_p_cell(p_values[run["name"]].get(name)))
        lines.append("| " + " | ".join(row) + " |")
    notes = [*comparability_notes(runs), *notes]
    return "\n".join(lines + ([""] + notes if notes else []))
