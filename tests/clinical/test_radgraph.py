"""The RadGraph bridge and its real worker, run against a stand-in ``radgraph`` package that speaks the same API.

The stand-in replaces only the model: ``RadGraph(...)(texts)`` returns annotation dicts in the package's format and
``radgraph.rewards.compute_reward`` a simple token F1. The worker script, the process protocol, stdout isolation,
caching, failures and restarts are the real ones. The end-to-end test with the published package is in
test_radgraph_env.py (slow).
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from himed.clinical.radgraph import (
    RadGraphBridge,
    RadGraphError,
    RadGraphScore,
    RadGraphSetupError,
    get_radgraph_bridge,
)

FAKE_PACKAGE = """
import os, sys, time
CALLS = [0]

class RadGraph:
    def __init__(self, batch_size=1, cuda=None, model_type=None, model_cache_dir=None, **kwargs):
        print("Using device: cpu")  # the real package prints to stdout too; the worker must keep it off the protocol
        sys.stdout.flush()
        if not os.path.isfile(os.path.join(model_cache_dir or "", model_type, "config.json")):
            raise Exception("Cannot download the file radgraph-xl.tar.gz")
        self.model_type = model_type

    def __call__(self, texts):
        CALLS[0] += 1
        out = {}
        for index, text in enumerate(texts):
            if "CRASH" in text:
                os._exit(7)
            if "SLEEP" in text:
                time.sleep(60)
            if "DROP" in text:
                continue
            words = text.lower().replace(".", " ").split() or ["none"]
            entities = {str(i + 1): {"tokens": w, "label": "Observation::definitely present", "start_ix": i,
                                     "end_ix": i, "relations": []} for i, w in enumerate(words)}
            out[str(index)] = {"text": text, "entities": entities, "call": CALLS[0]}
        return out
"""
FAKE_REWARDS = """
def compute_reward(hyp, ref, reward_level):
    h = {e["tokens"] for e in hyp["entities"].values()}
    r = {e["tokens"] for e in ref["entities"].values()}
    both = len(h & r)
    f1 = 0.0 if not both else 2 * both / (len(h) + len(r))
    return (f1, f1 / 2, f1 / 4) if reward_level == "all" else f1
"""


def _token_f1(hyp: str, ref: str) -> float:
    h, r = set(hyp.lower().replace(".", " ").split()), set(ref.lower().replace(".", " ").split())
    return 2 * len(h & r) / (len(h) + len(r)) if h & r else 0.0


@pytest.fixture(scope="module")
def fake_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake_radgraph")
    package = root / "site" / "radgraph"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from .core import RadGraph\n")
    (package / "core.py").write_text(textwrap.dedent(FAKE_PACKAGE))
    (package / "rewards.py").write_text(textwrap.dedent(FAKE_REWARDS))
    info = root / "site" / "radgraph-0.1.18.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: radgraph\nVersion: 0.1.18\n")
    cache = root / "cache"
    (cache / "radgraph-xl").mkdir(parents=True)
    (cache / "radgraph-xl" / "config.json").write_text("{}")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root / "site")}
    return {"env": env, "cache": cache}


@pytest.fixture
def bridge(fake_env):
    with RadGraphBridge(sys.executable, model_cache_dir=fake_env["cache"], env=fake_env["env"], timeout=20) as bridge:
        yield bridge


def test_scores_pairs_in_order(bridge):
    hyps = ["Small left effusion.", "", "No pneumothorax.", "heart enlarged"]
    refs = ["Left effusion is small.", "Cardiomegaly.", "No pneumothorax.", "lungs clear"]
    scores = bridge.score(hyps, refs)
    assert bridge.info["radgraph_version"] == "0.1.18" and bridge.info["model_type"] == "radgraph-xl"
    assert scores[1] == RadGraphScore(0.0, 0.0, 0.0)  # an empty text scores 0, as F1RadGraph does
    for hyp, ref, score in zip(hyps, refs, scores, strict=True):
        if hyp:
            f1 = _token_f1(hyp, ref)
            assert score == pytest.approx(RadGraphScore(f1, f1 / 2, f1 / 4))
    assert scores[2].simple == 1.0 and scores[3].simple == 0.0
    mean, per_pair = bridge.f1(hyps, refs)
    assert per_pair == scores
    assert mean.simple == pytest.approx(sum(s.simple for s in scores) / 4)


def test_large_requests_are_sent_in_chunks(fake_env):
    hyps = [f"effusion {i}" for i in range(23)]
    refs = ["effusion"] * 23
    with RadGraphBridge(sys.executable, model_cache_dir=fake_env["cache"], env=fake_env["env"], chunk_size=5) as bridge:
        scores = bridge.score(hyps, refs)
        calls = [annotation["call"] for annotation in bridge.annotate(hyps)]
        assert bridge._next_id == 5 + 5  # 23 pairs in chunks of 5, twice
    assert [score.simple for score in scores] == pytest.approx(
        [_token_f1(h, r) for h, r in zip(hyps, refs, strict=True)]
    )
    assert len(set(calls)) == 5  # each chunk of hypotheses was annotated by its own model call, then cached
    with pytest.raises(ValueError, match="chunk_size"):
        RadGraphBridge(sys.executable, chunk_size=0)


def test_annotations_are_cached_per_text(bridge):
    first = bridge.annotate(["effusion", "pneumothorax"])
    second = bridge.annotate(["pneumothorax", "effusion", "edema"])
    assert first[0]["entities"]["1"]["tokens"] == "effusion"
    assert second[1]["call"] == first[0]["call"] and second[0]["call"] == first[1]["call"]
    assert second[2]["call"] == first[0]["call"] + 1  # only the new text went to the model
    assert bridge.score([], []) == [] and bridge.annotate([]) == []


def test_dropped_annotation_gives_none_for_that_pair_only(bridge):
    scores = bridge.score(["DROP this", "effusion"], ["effusion", "effusion"])
    assert scores[0] is None and scores[1] == RadGraphScore(1.0, 0.5, 0.25)


def test_worker_crash_is_an_error_and_the_next_call_restarts(bridge):
    with pytest.raises(RadGraphError, match=r"exited \(code 7\)"):
        bridge.score(["CRASH"], ["effusion"])
    assert bridge.score(["effusion"], ["effusion"]) == [RadGraphScore(1.0, 0.5, 0.25)]


def test_timeout_kills_the_worker(fake_env):
    with RadGraphBridge(sys.executable, model_cache_dir=fake_env["cache"], env=fake_env["env"], timeout=3) as bridge:
        bridge.start()
        with pytest.raises(RadGraphError, match="timed out after 3 s"):
            bridge.score(["SLEEP"], ["x"])
        assert bridge._process is None
        assert bridge.score(["a b"], ["a"])[0].simple == pytest.approx(2 / 3)


def test_bad_requests(bridge):
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        bridge.score(["a", "b"], ["a"])
    with pytest.raises(ValueError, match=r"refs\[0\] must be a string"):
        bridge.score(["a"], [None])  # type: ignore[list-item]
    with pytest.raises(RadGraphError, match="unknown op"):
        bridge._request({"op": "explode"})
    assert bridge.score(["a"], ["a"])[0].simple == 1.0  # the worker keeps serving


def test_missing_python_explains_the_setup(tmp_path):
    with pytest.raises(RadGraphSetupError, match=r'pip install "radgraph==0.1.18" "transformers<5" torch'):
        RadGraphBridge(None)
    with pytest.raises(RadGraphSetupError, match="not an executable file"):
        RadGraphBridge(tmp_path / "no" / "python")
    with pytest.raises(ValueError, match="unknown RadGraph model_type"):
        RadGraphBridge(sys.executable, model_type="radgraph-xxl")


def test_python_without_radgraph_explains_the_setup(tmp_path):
    # himed's own environment has no radgraph package: exactly the mistake a user can make.
    bridge = RadGraphBridge(sys.executable, env={"PATH": "/usr/bin:/bin"}, startup_timeout=60)
    with pytest.raises(RadGraphSetupError, match=r"radgraph is not importable in .*ModuleNotFoundError.*venv"):
        bridge.score(["a"], ["a"])


def test_missing_model_explains_where_to_put_it(fake_env, tmp_path):
    bridge = RadGraphBridge(sys.executable, model_cache_dir=tmp_path, env=fake_env["env"], startup_timeout=60)
    with pytest.raises(RadGraphSetupError, match=r"could not load model 'radgraph-xl'.*config.json, vocabulary/"):
        bridge.start()


def test_shared_bridge_per_configuration(fake_env):
    first = get_radgraph_bridge(sys.executable, model_cache_dir=fake_env["cache"], env=None)
    assert get_radgraph_bridge(sys.executable, model_cache_dir=fake_env["cache"], env=None) is first
    assert get_radgraph_bridge(sys.executable, model_cache_dir=fake_env["cache"], timeout=5) is not first
