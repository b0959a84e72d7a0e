"""``himed score``: score completions in a JSONL file with the same reward composite the GRPO trainer uses.

    himed score (--config FILE | --rewards a,b,c) --input IN.jsonl --output OUT.jsonl [--step N]
                [--impute group_mean|zero|none]

Input lines (``docs/scoring.md``): ``completion`` (a string or conversational messages) and ``reference`` (or
``findings`` and optionally ``impression``), optional ``id``; every other key (``labels``, ...) reaches the rewards
as a column, as dataset columns do in TRL. Blank lines are skipped. Errors name ``file:line``.

Output lines: ``id`` when given; one key per entry name with the raw reward (null when it could not score); parts
as ``name/part`` (every key of the reward's per-completion dict except ``value``); ``total`` at step N (HiMed-RL
eq. 8-9 with the schedule's weights at N, default 0), computed after imputing failed values with the whole file as
one group (``--impute`` overrides the config's ``impute``; with ``none`` the total is null where a value it needs is
null). At the end a summary goes to stderr: the count, and per reward its mean, failure rate and whatever its
``describe()`` returns (the optional protocol of ``himed.rewards.composite.CompositeReward``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def add_commands(subparsers) -> None:
    from himed.rewards.config import IMPUTE_CHOICES  # light: no reward module is imported

    parser = subparsers.add_parser(
        "score",
        help="score completions in a JSONL file with the reward composite",
        description=__doc__.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--config", help="YAML file with the reward block: schedule, rewards, impute (see docs/rewards.md)"
    )
    source.add_argument(
        "--rewards", help="comma-separated reward names with default settings, e.g. token,concept,format"
    )
    parser.add_argument("--input", required=True, help="JSONL with completion + reference (or findings/impression)")
    parser.add_argument("--output", required=True, help="JSONL to write: id, one key per reward, name/part, total")
    parser.add_argument(
        "--step", type=int, default=0, help="training step t at which the schedule weighs total (default 0)"
    )
    parser.add_argument(
        "--impute",
        choices=IMPUTE_CHOICES,
        default=None,
        help="fill failed values before total: group_mean or zero (the file is one group), or none; default: the "
        "config's impute (group_mean)",
    )
    parser.set_defaults(handler=run_score)


def _json_number(value: Any) -> Any:
    """A JSON-safe value: non-finite floats become null (they are failures, not scores)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _json_number(value.item())
    return value


def read_score_input(path: Path) -> tuple[list[Any], list[Any], dict[str, list[Any]]]:
    """(ids, completions, columns) from a JSONL file; raises ValueError naming ``path:line`` for a bad line."""
    from himed.data.sections import reference_text

    if not path.is_file():
        raise FileNotFoundError(f"--input {path} does not exist")
    ids, completions, rows = [], [], []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            where = f"{path}:{line_number}"
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
            if "completion" not in row:
                raise ValueError(f"{where}: missing 'completion'")
            completion = row.pop("completion")
            if not isinstance(completion, str | list | dict):
                raise ValueError(f"{where}: 'completion' must be a string or a list of messages, got {completion!r}")
            reference = row.get("reference")
            if reference is None:
                if row.get("findings") is None:
                    raise ValueError(f"{where}: missing 'reference' (or 'findings' and optionally 'impression')")
                findings, impression = row["findings"], row.get("impression") or ""
                if not isinstance(findings, str) or not isinstance(impression, str):
                    raise ValueError(f"{where}: 'findings' and 'impression' must be strings")
                reference = reference_text(findings, impression)
            if not isinstance(reference, str):
                raise ValueError(f"{where}: 'reference' must be a string, got {type(reference).__name__}")
            if not reference.strip():
                raise ValueError(f"{where}: empty reference (a reference report is needed to score against)")
            row["reference"] = reference
            ids.append(row.pop("id", None))
            completions.append(completion)
            rows.append(row)
    keys = list(dict.fromkeys(key for row in rows for key in row))
    columns = {key: [row.get(key) for row in rows] for key in keys}
    return ids, completions, columns


def run_score(args: argparse.Namespace) -> int:
    import numpy as np

    from himed.rewards.composite import CompositeReward
    from himed.rewards.config import RewardsConfig

    if args.step < 0:
        raise ValueError(f"--step must be >= 0 (a training step), got {args.step}")
    input_path, output_path = Path(args.input), Path(args.output)
    if input_path.resolve() == output_path.resolve():
        raise ValueError("--output must differ from --input")
    if args.config:
        config = RewardsConfig.from_yaml(args.config)
    else:
        config = RewardsConfig.from_names(args.rewards.split(","))
    reward = CompositeReward.from_config(config, impute=args.impute)
    ids, completions, columns = read_score_input(input_path)
    results, values = reward.score(completions, **columns)

    n = len(completions)
    filled = reward.impute(values, group_size=n) if n else values  # the whole file is one group
    totals = reward.totals(filled, args.step) if n else np.zeros(0)

    output_path.parent.mkdir(parents=True, exist_ok=True)
    partial = output_path.with_name(output_path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for i in range(n):
            out: dict[str, Any] = {}
            if ids[i] is not None:
                out["id"] = ids[i]
            for j, name in enumerate(reward.names):
                row = results[j][i]
                out[name] = _json_number(row.get("value"))
                for part, value in row.items():
                    if part != "value":
                        out[f"{name}/{part}"] = _json_number(value)
            out["total"] = _json_number(float(totals[i]))
            handle.write(json.dumps(out, ensure_ascii=False, allow_nan=False) + "\n")
    partial.replace(output_path)
    print_summary(reward, values, totals, args.step, f"{input_path} -> {output_path}")
    return 0


def print_summary(reward, values, totals, step: int, what: str) -> None:
    """Count, and per reward its mean, failure rate, weight at ``step`` and ``describe()``, to stderr."""
    import numpy as np

    n = len(values)
    rates = reward.failure_rates(values)
    weights = reward.weights(step)
    described = reward.describe()
    print(f"himed score: {n} completions from {what} (step {step}, impute {reward.impute_mode})", file=sys.stderr)
    width = max([len(name) for name in reward.names] + [len("total")])
    for j, name in enumerate(reward.names):
        scored = values[:, j][np.isfinite(values[:, j])]
        mean = f"{scored.mean():.4f}" if scored.size else "n/a"
        line = f"  {name:<{width}}  mean {mean:>7}  failure_rate {rates[name]:.3f}  weight {weights[j]:.3f}"
        if name in described:
            line += "  " + json.dumps(described[name], default=str, sort_keys=True)
        print(line, file=sys.stderr)
    finite_totals = totals[np.isfinite(totals)]
    mean_total = f"{finite_totals.mean():.4f}" if finite_totals.size else "n/a"
    print(f"  {'total':<{width}}  mean {mean_total:>7}  null {n - finite_totals.size}", file=sys.stderr)
