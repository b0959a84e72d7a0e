"""himed compare's paired bootstrap p-values from the runs' samples.jsonl, and what it says when it cannot pair."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from himed.cli import main
from himed.metrics.compare import compare_table, load_runs, paired_tests
from himed.metrics.evaluate import evaluate_predictions_file


def evaluate(tmp_path: Path, make_lines, name: str, keep: float, ids: range = range(60)) -> Path:
    lines = make_lines(60, seed=11, keep=keep)
    path = tmp_path / f"{name}.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"study{i}", "prediction": lines[i].prediction, "reference": lines[i].reference}) + "\n"
            for i in ids
        )
    )
    evaluate_predictions_file(path, tmp_path / name, meteor="nltk", bootstrap=0)
    return tmp_path / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, synthetic_lines) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("paired")
    return {
        "good": evaluate(tmp, synthetic_lines, "good", keep=0.9),
        "poor": evaluate(tmp, synthetic_lines, "poor", keep=0.2),
        "same": evaluate(tmp, synthetic_lines, "same", keep=0.9),
        "half": evaluate(tmp, synthetic_lines, "half", keep=0.2, ids=range(30)),
    }


def test_a_clearly_worse_run_has_small_p_values_and_an_identical_one_p_1(runs: dict[str, Path]) -> None:
    loaded = load_runs([runs["good"], runs["poor"], runs["same"]])
    p_values, notes = paired_tests(loaded, resamples=500, seed=0)
    for name in ("bleu_4", "cider", "rouge_l", "meteor_nltk"):
        assert p_values["poor"][name] < 0.01, name
        assert p_values["same"][name] == 1.0, name  # no difference on any resample
    assert set(p_values["poor"]) >= {"ce_micro_f1_14", "ce_micro_f1_14_uneg", "bleu_1"}
    assert any("two-sided paired bootstrap" in note for note in notes)
    table = compare_table(loaded, p_values=p_values, notes=notes)
    assert table.splitlines()[0] == "| metric | good | poor | Δ poor | p poor | same | Δ same | p same |"
    again, _ = paired_tests(loaded, resamples=500, seed=0)
    assert again == p_values  # seeded


def test_partly_shared_ids_and_a_missing_samples_file_are_said(runs: dict[str, Path], tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "metrics.json").write_text((runs["poor"] / "metrics.json").read_text())
    other_ids = tmp_path / "other"
    other_ids.mkdir()
    (other_ids / "metrics.json").write_text((runs["poor"] / "metrics.json").read_text())
    (other_ids / "samples.jsonl").write_text(
        (runs["poor"] / "samples.jsonl").read_text().replace('"id":"study', '"id":"elsewhere')
    )
    old = tmp_path / "old"
    old.mkdir()
    result = json.loads((runs["poor"] / "metrics.json").read_text())
    del result["config"]["metric_families"]
    (old / "metrics.json").write_text(json.dumps(result))
    (old / "samples.jsonl").write_text((runs["poor"] / "samples.jsonl").read_text())
    loaded = load_runs([runs["good"], runs["half"], bare, other_ids, old])
    p_values, notes = paired_tests(loaded, resamples=200, seed=0)
    assert set(p_values) == {"half"}
    text = "\n".join(notes)
    assert "No paired p-values for old: no metric computed the same way in both runs" in text
    assert "half shares 30 study ids with good" in text
    assert "No paired p-values for bare: no samples.jsonl beside its metrics.json." in text
    assert "No paired p-values for other: it shares no study id with good." in text


def test_cli_compare_prints_p_values_and_the_rest_without_samples(runs: dict[str, Path], capsys) -> None:
    assert main(["compare", str(runs["good"]), str(runs["poor"]), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "| metric | good | poor | Δ poor | p poor |" in out
    assert main(["compare", str(runs["good"]), str(runs["poor"]), "--bootstrap", "0"]) == 0
    assert "| metric | good | poor | Δ poor |\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("line", "message"),
    [("{cut off", r"samples.jsonl:2: not valid JSON"), ('{"id": "x"}', r"samples.jsonl:2: not a samples.jsonl record")],
)
def test_a_bad_samples_line_is_an_error_naming_its_line(
    runs: dict[str, Path], tmp_path: Path, line: str, message: str
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text((runs["poor"] / "metrics.json").read_text())
    first = (runs["poor"] / "samples.jsonl").read_text().splitlines()[0]
    (bad / "samples.jsonl").write_text(f"{first}\n{line}\n")
    with pytest.raises(ValueError, match=message):
        paired_tests(load_runs([runs["good"], bad]), resamples=50, seed=0)
