"""samples.jsonl statistics and the bootstrap: every corpus metric recomputed from per-sample statistics equals the
reported number on the full set and its scorer's number on a resample with duplicates; intervals; reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from himed.cli import main
from himed.clinical.severity import pearson, spearman
from himed.metrics import nlg
from himed.metrics.bootstrap import confidence_intervals, corpus_values, resample_counts
from himed.metrics.clinical_efficacy import clinical_efficacy
from himed.metrics.evaluate import evaluate_predictions_file
from himed.metrics.families import FamilyResult, corpus_family
from himed.metrics.nlg_statistics import SparseProduct
from himed.metrics.scoring import score_samples


@pytest.fixture(scope="module")
def scored(synthetic_lines):
    """One evaluation of 40 studies, METEOR from the jar when Java is there (else nltk's fallback)."""
    return score_samples(synthetic_lines(40, seed=1), meteor="auto")


def test_recomputed_on_the_full_set_equals_every_reported_metric(scored) -> None:
    expected = {f"bleu_{k}" for k in range(1, 5)} | {"rouge_l", "cider", "ce_micro_f1_14", "ce_micro_f1_14_uneg"}
    expected.add("meteor" if nlg.java_available() else "meteor_nltk")
    assert expected <= set(scored.metrics)
    recomputed = corpus_values(scored.samples, scored.families, np.ones((1, scored.n)))
    assert set(recomputed) == set(scored.metrics)  # every metric has a family that recomputes it
    for name, value in scored.metrics.items():
        assert recomputed[name][0] == pytest.approx(value, rel=1e-12, abs=1e-15), name


RESAMPLE = [0, 0, 1, 3, 3, 3, 5, 8, 9, 9, 12, 13, 17, 20, 21, 21, 22, 25, 30, 31, 31, 33, 34, 36, 38, 39, 39]


def _drawn_texts(scored, indices, synthetic_lines):
    """The count row of a resample and its drawn studies' texts (duplicates included) as the scorers saw them: the
    same lines through the same section choice and cleaning as score_samples."""
    from himed.data.normalize import clean_report
    from himed.data.sections import DEFAULT_SECTIONS
    from himed.metrics.predictions import section_pairs

    _, predictions, references, _ = section_pairs(synthetic_lines(40, seed=1), "report", DEFAULT_SECTIONS)
    hyps = [nlg.coco_text(clean_report(predictions[i], "mimic_cxr")) for i in indices]
    refs = [nlg.coco_text(clean_report(references[i], "mimic_cxr")) for i in indices]
    return np.bincount(indices, minlength=scored.n).astype(float)[None, :], hyps, refs


def test_bleu_and_cider_on_a_resample_equal_pycocoevalcap_given_the_drawn_list(scored, synthetic_lines) -> None:
    counts, hyps, refs = _drawn_texts(scored, RESAMPLE, synthetic_lines)
    gts = {i: [r] for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    ours = corpus_values(scored.samples, {"bleu": [f"bleu_{k}" for k in range(1, 5)], "cider": ["cider"]}, counts)
    for k in range(4):
        assert ours[f"bleu_{k + 1}"][0] == pytest.approx(bleu[k], rel=1e-12)
    # CIDEr's document frequencies come from the drawn references, a study drawn 3 times counting 3 times.
    assert ours["cider"][0] == pytest.approx(cider, rel=1e-12)
    full = corpus_values(scored.samples, {"cider": ["cider"]}, np.ones((1, scored.n)))["cider"][0]
    assert ours["cider"][0] != pytest.approx(full, rel=1e-3)


@pytest.mark.slow  # a second JVM start (5-30 s)
@pytest.mark.skipif(not nlg.java_available(), reason="the METEOR 1.5 jar needs Java")
def test_meteor_on_a_resample_equals_the_jar_given_the_drawn_list(scored, synthetic_lines) -> None:
    counts, hyps, refs = _drawn_texts(scored, RESAMPLE, synthetic_lines)
    with nlg.Meteor15Jar() as jar:
        theirs = jar.score(hyps, refs)[0]
    ours = corpus_values(scored.samples, {"meteor": ["meteor"]}, counts)["meteor"][0]
    assert ours == pytest.approx(theirs, rel=1e-12)


def test_clinical_efficacy_and_severity_on_a_resample_equal_the_drawn_list(scored) -> None:
    counts = np.bincount(RESAMPLE, minlength=scored.n).astype(float)[None, :]
    stats = [scored.samples[i]["stats"]["ce"] for i in RESAMPLE]
    names = [name for name in scored.families["ce"]]
    ours = corpus_values(scored.samples, {"ce": names}, counts)
    theirs = clinical_efficacy([s["predicted"] for s in stats], [s["reference"] for s in stats])
    theirs_uneg = clinical_efficacy([s["predicted"] for s in stats], [s["reference"] for s in stats], "negative")
    for name in theirs:
        assert ours[name][0] == pytest.approx(theirs[name], abs=1e-12), name
        assert ours[f"{name}_uneg"][0] == pytest.approx(theirs_uneg[name], abs=1e-12), name
    x = np.array([scored.samples[i]["scores"]["severity_mean"] for i in RESAMPLE])
    y = np.array([scored.samples[i]["scores"]["severity_mean_reference"] for i in RESAMPLE])
    correlations = corpus_values(scored.samples, {"correlation": ["severity_pearson", "severity_spearman"]}, counts)
    assert correlations["severity_pearson"][0] == pytest.approx(pearson(x, y), rel=1e-9)
    assert correlations["severity_spearman"][0] == pytest.approx(spearman(x, y), rel=1e-9)


def test_a_mean_leaves_out_unscored_samples() -> None:
    samples = [{"scores": {"m": v}} for v in (1.0, None, 3.0, None)]
    counts = np.array([[1, 1, 1, 1], [0, 4, 0, 0], [2, 0, 1, 1]], dtype=float)
    values = corpus_values(samples, {"mean": ["m"]}, counts)["m"]
    assert values[0] == 2.0 and np.isnan(values[1]) and values[2] == pytest.approx(5 / 3)


def test_a_family_name_registers_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        corpus_family("bleu")(lambda samples, metrics, counts: {})


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 30), st.integers(1, 30), st.floats(0.01, 0.9))
def test_sparse_product_equals_the_dense_product(seed: int, m: int, p: int, fill: float) -> None:
    rng = np.random.default_rng(seed)
    dense = np.where(rng.random((m, p)) < fill, rng.integers(1, 5, (m, p)), 0).astype(float)
    rows, columns = np.nonzero(dense)
    product = SparseProduct(rows, columns, dense[rows, columns], (m, p))
    x = rng.random((3, m))
    assert np.allclose(product(x), x @ dense, rtol=1e-12, atol=1e-12)


def test_resample_counts_are_seeded_draws_of_n() -> None:
    counts = resample_counts(50, 200, seed=7)
    assert counts.shape == (200, 50) and (counts.sum(axis=1) == 50).all()
    assert np.array_equal(counts, resample_counts(50, 200, seed=7))
    assert not np.array_equal(counts, resample_counts(50, 200, seed=8))


def test_intervals_contain_the_estimate_narrow_with_n_and_follow_the_seed(synthetic_lines) -> None:
    small = score_samples(synthetic_lines(30, seed=2), meteor="nltk")
    large = score_samples(synthetic_lines(300, seed=2), meteor="nltk")
    ci_small, info = confidence_intervals(small.samples, small.families, resamples=300, seed=0)
    ci_large, _ = confidence_intervals(large.samples, large.families, resamples=300, seed=0)
    assert info["resamples"] == 300 and info["seed"] == 0
    for name in ("bleu_1", "bleu_4", "cider", "meteor_nltk", "rouge_l", "ce_micro_f1_14", "ce_micro_f1_14_uneg"):
        for scored, ci in ((small, ci_small), (large, ci_large)):
            low, high = ci[name]
            assert low < scored.metrics[name] < high, name
        assert ci_large[name][1] - ci_large[name][0] < ci_small[name][1] - ci_small[name][0], name
    again, _ = confidence_intervals(small.samples, small.families, resamples=300, seed=0)
    other, _ = confidence_intervals(small.samples, small.families, resamples=300, seed=1)
    assert again == ci_small and other != ci_small


def test_a_metric_that_does_not_vary_gets_no_interval() -> None:
    samples = [{"scores": {"flat": 1.0, "varied": float(i)}} for i in range(10)]
    ci, info = confidence_intervals(samples, {"mean": ["flat", "varied"]}, resamples=100, seed=0)
    assert "flat" not in ci and "same value" in info["no_interval"]["flat"]
    assert ci["varied"][0] < 4.5 < ci["varied"][1]


def test_an_added_family_reaches_samples_and_intervals(tmp_path: Path, synthetic_lines) -> None:
    """The extension point: an extra family scorer's corpus value, per-sample scores and interval."""

    def words_family(texts):
        scores = [float(len(t.split())) for t in texts.predictions]
        return FamilyResult("mean", {"words_mean": float(np.mean(scores))}, scores={"words_mean": scores})

    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps({"id": x.id, "prediction": x.prediction, "reference": x.reference}) + "\n"
                            for x in synthetic_lines(20, seed=3)))  # fmt: skip
    result = evaluate_predictions_file(path, tmp_path / "out", meteor="nltk", bootstrap=200, families=[words_family])
    assert result["ci95"]["words_mean"][0] < result["metrics"]["words_mean"] < result["ci95"]["words_mean"][1]
    first = json.loads((tmp_path / "out" / "samples.jsonl").read_text().splitlines()[0])
    assert first["scores"]["words_mean"] > 0 and first["id"] == "s0"


def test_cli_writes_samples_and_intervals_and_bootstrap_zero_turns_them_off(tmp_path: Path, synthetic_lines) -> None:
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps({"id": x.id, "prediction": x.prediction, "reference": x.reference}) + "\n"
                            for x in synthetic_lines(12, seed=4)))  # fmt: skip
    out = tmp_path / "on"
    assert main(["evaluate", "--predictions", str(path), "--out-dir", str(out), "--meteor", "nltk",
                 "--bootstrap", "100", "--bootstrap-seed", "5"]) == 0  # fmt: skip
    result = json.loads((out / "metrics.json").read_text())
    assert list(result) == ["metrics", "ci95", "config", "n"]
    assert result["config"]["bootstrap"]["resamples"] == 100 and result["config"]["bootstrap"]["seed"] == 5
    assert all(low < high for low, high in result["ci95"].values())
    assert "| bleu_4 |" in (out / "metrics.md").read_text() and "95% CI" in (out / "metrics.md").read_text()
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["id"] for s in samples] == [f"s{i}" for i in range(12)]
    bleu = samples[0]["stats"]["bleu"]
    assert set(bleu) == {"correct", "guess", "testlen", "reflen"} and len(bleu["correct"]) == 4
    assert set(samples[0]["stats"]["cider"]) == {"candidate", "reference"}
    assert set(samples[0]["stats"]["ce"]) == {"predicted", "reference", "uncertain"}
    off = tmp_path / "off"
    assert main(["evaluate", "--predictions", str(path), "--out-dir", str(off), "--meteor", "nltk",
                 "--bootstrap", "0"]) == 0  # fmt: skip
    result_off = json.loads((off / "metrics.json").read_text())
    assert "ci95" not in result_off and result_off["metrics"] == result["metrics"]
    assert (off / "samples.jsonl").read_text() == (out / "samples.jsonl").read_text()
