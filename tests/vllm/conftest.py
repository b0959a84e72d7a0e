"""Fixtures for the vLLM tests (marker ``vllm``; they run in .venv-vllm, README "vLLM on CPU").

Every test module here sets ``pytestmark = pytest.mark.vllm`` so the default suite (which has no vLLM) skips it. Data: the demo
generator with one image per study, two (``lateral_rate=1``), or one image plus indication and prior-report text.
"""

import inspect
import json
import os
from pathlib import Path

import pytest

# Keep vLLM's CPU KV cache small: the machine is shared (.pth default is 1 GiB too; this makes the tests explicit).
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

PRIOR_RATE = 0.5


def add_indication_and_prior(out: Path, rate: float = PRIOR_RATE) -> None:
    """Give every study an indication and a fraction ``rate`` of them the previous study's report as prior_report.

    Used until the demo generator has its own ``prior_rate`` (see generate_demo's signature below); the keys are the
    ones the r2gen loader reads (himed/data/rows.py).
    """
    annotation_path = out / "annotation.json"
    annotation = json.loads(annotation_path.read_text())
    for split_rows in annotation.values():
        previous = None
        for index, row in enumerate(split_rows):
            row["indication"] = ["Shortness of breath.", "Cough and fever for three days, evaluate for pneumonia."][
                index % 2
            ]
            if previous is not None and (index % round(1 / rate)) == 0 and not row.get("prior_report"):
                row["prior_report"] = previous["report"]
            previous = row
    annotation_path.write_text(json.dumps(annotation))


def make_demo(out: Path, lateral_rate: float, with_text: bool) -> Path:
    from himed.data.demo import generate_demo

    options = {"n": 20, "seed": 0, "lateral_rate": lateral_rate}
    if with_text and "prior_rate" in inspect.signature(generate_demo).parameters:
        options["prior_rate"] = PRIOR_RATE
    generate_demo(out, **options)
    if with_text:
        add_indication_and_prior(out)
    return out


@pytest.fixture(scope="session")
def demo_variants(tmp_path_factory) -> dict[str, Path]:
    """Three small demo sets: one image per study, two per study, one image with indication + prior report."""
    return {
        "one_image": make_demo(tmp_path_factory.mktemp("demo_one"), lateral_rate=0.0, with_text=False),
        "two_images": make_demo(tmp_path_factory.mktemp("demo_two"), lateral_rate=1.0, with_text=False),
        "with_text": make_demo(tmp_path_factory.mktemp("demo_text"), lateral_rate=0.0, with_text=True),
    }
