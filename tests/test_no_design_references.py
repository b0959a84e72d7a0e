"""No file under himed/ cites DESIGN.md: a clone has no such file; docstrings cite docs/ pages, errors and help give
plain advice. (Passes once every branch that removes the mentions is merged.)"""

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "himed"


def test_no_file_under_himed_mentions_design_md():
    hits = []
    for path in sorted(PACKAGE.rglob("*")):
        if not path.is_file() or path.suffix in (".pyc", ".so"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if "DESIGN.md" in line:
                hits.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not hits, "cite a docs/ page instead of DESIGN.md:\n" + "\n".join(hits)
