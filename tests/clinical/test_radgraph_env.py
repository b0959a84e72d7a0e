"""End to end: the bridge runs the published ``radgraph`` 0.1.18 in its own environment with a random radgraph-xl.

Slow: it builds that environment (``python3.11 -m venv`` + pip: torch 2.13 CPU, ``transformers<5``, radgraph
0.1.18), unless ``HIMED_RADGRAPH_PYTHON`` names one already built. The model is a random-weight radgraph-xl in the
package's on-disk layout (tests/clinical/build_radgraph_model.py), so nothing is downloaded. The bridge's scores are
checked against ``radgraph.F1RadGraph(reward_level="all")`` run directly in that environment on the same model.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from himed.clinical.radgraph import RadGraphBridge, RadGraphScore

pytestmark = pytest.mark.slow

HERE = pathlib.Path(__file__).parent
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
HYPS = [
    "Small left pleural effusion. No pneumothorax.",
    "The heart is enlarged.",
    "",
    "Lungs are clear. Tube in place.",
    "Small left pleural effusion. No pneumothorax.",
]
REFS = [
    "Small left pleural effusion. No pneumothorax.",
    "Heart is not enlarged. Mild edema.",
    "No effusion.",
    "Right pleural effusion.",
    "No pneumothorax. Small left pleural effusion.",
]
F1RADGRAPH_SCRIPT = """
import json, sys
from radgraph import F1RadGraph
hyps, refs, cache = json.loads(sys.stdin.read())
f1 = F1RadGraph(reward_level="all", model_type="radgraph-xl", model_cache_dir=cache)
mean, rewards, _, _ = f1(hyps=hyps, refs=refs)
print("RESULT " + json.dumps({"mean": [float(x) for x in mean], "rewards": [[float(x) for x in r] for r in rewards]}))
"""


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")  # fmt: skip
    return result


@pytest.fixture(scope="module")
def radgraph_python(tmp_path_factory) -> str:
    given = os.environ.get("HIMED_RADGRAPH_PYTHON")
    if given:
        return given
    python311 = shutil.which("python3.11")
    if python311 is None:
        pytest.skip("python3.11 is needed to build the RadGraph environment (torch 2.13 CPU wheels)")
    venv = tmp_path_factory.mktemp("radgraph_venv")
    _run([python311, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    # torch first (pip finds the CPU wheel through its configured find-links), then radgraph with transformers < 5.
    _run([*pip, "torch==2.13.0"], timeout=1800)
    _run([*pip, "torch==2.13.0", "radgraph==0.1.18", "transformers<5"], timeout=1800)
    return str(venv / "bin" / "python")


@pytest.fixture(scope="module")
def model_cache(radgraph_python, tmp_path_factory) -> pathlib.Path:
    cache = tmp_path_factory.mktemp("radgraph_cache")
    env = {**os.environ, **OFFLINE}
    result = _run([radgraph_python, str(HERE / "build_radgraph_model.py"), str(cache)], env=env, timeout=600)
    built = json.loads(result.stdout.strip().splitlines()[-1])
    assert any(key.startswith("_embedder.token_embedder_bert.") for key in built["keys"])
    assert any(key.startswith("_ner._ner_scorers.radgraph-xl__ner_labels.") for key in built["keys"])
    assert any(key.startswith("_relation.") for key in built["keys"])
    for name in ("config.json", "weights.th", "vocabulary/non_padded_namespaces.txt"):
        assert (cache / "radgraph-xl" / name).is_file()
    return cache


def test_bridge_matches_f1radgraph(radgraph_python, model_cache):
    env = {**os.environ, **OFFLINE}
    direct = _run(
        [radgraph_python, "-c", F1RADGRAPH_SCRIPT],
        input=json.dumps([HYPS, REFS, str(model_cache)]),
        env=env,
        timeout=600,
    )
    expected = json.loads(next(line for line in direct.stdout.splitlines() if line.startswith("RESULT "))[7:])
    with RadGraphBridge(radgraph_python, model_cache_dir=model_cache, env=env, timeout=300) as bridge:
        info = bridge.start()
        assert info["radgraph_version"] == "0.1.18"
        mean, scores = bridge.f1(HYPS, REFS)
        again = bridge.score(HYPS[::-1], REFS[::-1])  # cached annotations, other order: same values
        annotations = bridge.annotate([HYPS[0]])
    # F1RadGraph(reward_level="all") returns its per-pair rewards as three lists: simple, partial, complete.
    simple, partial, complete = expected["rewards"]
    assert [score.simple for score in scores] == pytest.approx(simple)
    assert [score.partial for score in scores] == pytest.approx(partial)
    assert [score.complete for score in scores] == pytest.approx(complete)
    assert list(mean) == pytest.approx(expected["mean"])
    assert again == scores[::-1]
    assert scores[2] == RadGraphScore(0.0, 0.0, 0.0)  # empty hypothesis
    assert scores[0] == RadGraphScore(1.0, 1.0, 1.0)  # identical texts, and the biased model finds entities
    entities = annotations[0]["entities"]
    assert entities and all(
        {"tokens", "label", "start_ix", "end_ix", "relations"} <= set(entity) for entity in entities.values()
    )
    print(f"bridge scores {scores}", file=sys.stderr)
