"""pyproject.toml's extras each install something (an empty extra promises a set-up it does not give)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_extra_installs_something():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras
    empty = sorted(name for name, requirements in extras.items() if not requirements)
    assert not empty, f"extras that install nothing: {empty}"
