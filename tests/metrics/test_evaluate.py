"""himed evaluate on predictions files: metrics.json/metrics.md, the cleaned text the scorers see, sections and
the errors that name lines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from himed.cli import main
from himed.data.normalize import clean_report
from himed.metrics.predictions import attach_references, read_predictions
from himed.metrics.scoring import score_lines

GOOD = [
    {
        "id": "s1",
        "prediction": "<think>heart</think>\n<finding>The heart is enlarged. Small left pleural effusion.</finding>\n"
        "<impression>Cardiomegaly. Small effusion.</impression>",
        "findings": "Mild cardiomegaly. Small left pleural effusion.",
        "impression": "Cardiomegaly with effusion.",
    },
    {
        "id": "s2",
        "prediction": "<think>clear</think><finding>Lungs are clear. No pneumothorax.</finding>"
        "<impression>No acute process.</impression>",
        "findings": "The lungs are clear. No pneumothorax or effusion.",
        "impression": "No acute cardiopulmonary process.",
    },
    {
        "id": "s3",
        "prediction": "Severe pulmonary edema, worsening.\nLarge bilateral effusions.",
        "reference": "Moderate pulmonary edema. Bilateral pleural effusions, increased.",
    },
    {
        "id": "s4",
        "prediction": "<think>x</think><finding>There is no pleural effusion.</finding><impression>Large pleural "
        "effusion.</impression>",
        "reference": "Right lower lobe consolidation concerning for pneumonia.",
    },
]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("evaluate")
    predictions = write_jsonl(tmp / "predictions.jsonl", GOOD)
    assert main(["evaluate", "--predictions", str(predictions), "--out-dir", str(tmp / "out"), "--meteor", "nltk"]) == 0
    return tmp / "out", json.loads((tmp / "out" / "metrics.json").read_text())


def test_metrics_json_has_the_design_names(evaluated: tuple[Path, dict]) -> None:
    _, result = evaluated
    assert result["n"] == 4
    names = set(result["metrics"])
    expected = {f"bleu_{n}" for n in range(1, 5)} | {"meteor_nltk", "rouge_l", "cider", "severity_mean"}
    expected |= {f"ce_{a}_{m}_{s}" for a in ("micro", "macro") for m in ("precision", "recall", "f1") for s in (14, 5)}
    expected |= {"consistency_rate", "format_rate", "length_mean"}
    assert expected <= names
    assert "meteor" not in names  # nltk's number must never carry the paper's name
    assert result["config"]["clean"] == "mimic_cxr" and result["config"]["meteor"] == "nltk"
    # s1, s2 and s4 parse strictly; s4's finding says no effusion and its impression says a large one.
    assert result["metrics"]["format_rate"] == pytest.approx(3 / 4)
    assert result["metrics"]["consistency_rate"] == pytest.approx(2 / 3)
    assert all(0 <= v <= 1 for k, v in result["metrics"].items() if k.startswith(("ce_", "severity_mean", "bleu")))


def test_metrics_md_shows_the_json_numbers(evaluated: tuple[Path, dict]) -> None:
    out, result = evaluated
    markdown = (out / "metrics.md").read_text()
    rows = dict(re.findall(r"^\| ([a-z0-9_]+) \| ([-0-9.]+) \|$", markdown, flags=re.MULTILINE))
    assert list(rows) == list(result["metrics"])
    for name, value in result["metrics"].items():
        assert float(rows[name]) == pytest.approx(value, abs=5e-5)
    assert "not comparable with papers' METEOR" in markdown


def test_scorers_see_the_r2gen_cleaned_lenient_text(evaluated: tuple[Path, dict]) -> None:
    """The NLG numbers equal pycocoevalcap's on clean_report(lenient extraction) of each side."""
    _, result = evaluated
    from himed.data.sections import extract_lenient, reference_text

    hyps = [clean_report(extract_lenient(r["prediction"]), "mimic_cxr") for r in GOOD]
    refs = [
        clean_report(r.get("reference") or reference_text(r["findings"], r["impression"]), "mimic_cxr") for r in GOOD
    ]
    gts, res = {i: [t] for i, t in enumerate(refs)}, {i: [t] for i, t in enumerate(hyps)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert [result["metrics"][f"bleu_{n + 1}"] for n in range(4)] == bleu
    assert result["metrics"]["rouge_l"] == Rouge().compute_score(gts, res)[0]
    assert result["metrics"]["cider"] == Cider().compute_score(gts, res)[0]
    assert not any(word in h for h in hyps for word in ("finding", "think", "impression", "<"))  # no tag leaks


def test_section_findings_uses_the_strict_parse_and_excludes_lines_without_that_reference() -> None:
    lines = read_predictions_from(GOOD)
    metrics, config, n = score_lines(lines, section="findings", meteor="nltk")
    assert n == 2  # s3 and s4 have only a 'reference', no 'findings'
    assert config["excluded"] == {"count": 2, "lines": [3, 4]}
    assert config["section_missing"] == 0
    whole, _, _ = score_lines(lines[:2], section="report", meteor="nltk")
    assert metrics["bleu_1"] != whole["bleu_1"]


def test_section_impression_scores_a_broken_format_as_empty(tmp_path: Path) -> None:
    records = [dict(GOOD[0]), dict(GOOD[1], prediction="Lungs are clear. No acute process.")]
    lines = read_predictions(write_jsonl(tmp_path / "p.jsonl", records))
    metrics, config, n = score_lines(lines, section="impression", meteor="nltk")
    assert n == 2 and config["section_missing"] == 1
    assert metrics["format_rate"] == 0.5


def read_predictions_from(records: list) -> list:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return read_predictions(write_jsonl(Path(folder) / "p.jsonl", records))


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (
            [
                GOOD[0],
                {"id": "x", "prediction": "", "reference": "a."},
                {"id": "y", "prediction": " ", "reference": "b."},
            ],
            r"lines 2, 3: 'prediction' is empty",
        ),
        ([GOOD[0], {"id": "x", "prediction": "a."}], r"line 2: no reference"),
        ([GOOD[0], {"id": "x", "prediction": "a.", "reference": ""}], r"line 2: no reference"),
        ([GOOD[0], GOOD[1], dict(GOOD[2], id="s1")], r"line 3: duplicate id 's1' \(first on line 1\)"),
        ([GOOD[0], {"prediction": "a.", "reference": "b."}], r"line 2: no 'id' while 1 other lines have one"),
        ([GOOD[0], "{not json"], r"line 2: not valid JSON"),
        ([GOOD[0], {"id": "x", "reference": "b."}], r"line 2: no 'prediction' key"),
        ([GOOD[0], {"id": "x", "prediction": ["a"], "reference": "b."}], r"line 2: 'prediction' must be a string"),
    ],
)
def test_bad_lines_are_errors_naming_them(tmp_path: Path, capsys, records: list, message: str) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", records)
    code, err = run_cli(
        capsys, "evaluate", "--predictions", str(path), "--out-dir", str(tmp_path / "o"), "--meteor", "nltk"
    )
    assert code == 2
    assert str(path) in err
    assert re.search(message, err), err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_empty_file_and_missing_file(tmp_path: Path, capsys) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [])
    code, err = run_cli(capsys, "evaluate", "--predictions", str(path), "--out-dir", str(tmp_path / "o"))
    assert code == 2 and "no prediction lines" in err
    code, err = run_cli(capsys, "evaluate", "--predictions", str(tmp_path / "nope.jsonl"), "--out-dir", str(tmp_path))
    assert code == 2 and "not found" in err


def test_allow_empty_predictions_scores_them(tmp_path: Path) -> None:
    records = [GOOD[0], {"id": "x", "prediction": "", "reference": "No acute process."}]
    path = write_jsonl(tmp_path / "p.jsonl", records)
    lines = read_predictions(path, allow_empty=True)
    metrics, _, n = score_lines(lines, meteor="nltk")
    assert n == 2 and metrics["length_mean"] > 0


def test_references_from_data_rows_must_match_ids_one_to_one(tmp_path: Path) -> None:
    records = [{"id": "s1", "prediction": "a."}, {"id": "zz", "prediction": "b."}]
    lines = read_predictions(write_jsonl(tmp_path / "p.jsonl", records), need_references=False)
    rows = [
        {"id": "s1", "findings": "Heart normal.", "impression": ""},
        {"id": "s2", "findings": "x.", "impression": ""},
    ]
    with pytest.raises(ValueError, match=r"line 2: id not in the dataset split \(mismatched ids\)"):
        attach_references(lines, rows, "p.jsonl")
    with pytest.raises(ValueError, match=r"1 studies of the dataset split have no prediction: 's2'"):
        attach_references(lines[:1], rows, "p.jsonl")
    attached = attach_references(lines[:1], rows[:1], "p.jsonl")
    assert attached[0].reference == "Heart normal." and attached[0].line == 1


def test_radgraph_f1_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bridge gets the uncleaned texts and its mean over annotated pairs lands under radgraph_f1_*."""
    from himed.clinical import radgraph as radgraph_module
    from himed.clinical.radgraph import RadGraphScore

    seen = {}

    class StandInBridge:
        def f1(self, hyps, refs):
            seen["hyps"], seen["refs"] = list(hyps), list(refs)
            per_pair = [RadGraphScore(0.5, 0.4, 0.3), None, RadGraphScore(0.1, 0.2, 0.1), RadGraphScore(0.2, 0.2, 0.2)]
            return RadGraphScore(0.8 / 3, 0.8 / 3, 0.6 / 3), per_pair

    def get_bridge(**kwargs):
        seen["kwargs"] = kwargs
        return StandInBridge()

    monkeypatch.setattr(radgraph_module, "get_radgraph_bridge", get_bridge)
    lines = read_predictions_from(GOOD)
    metrics, config, _ = score_lines(lines, meteor="nltk", radgraph={"python": "/venv/bin/python"})
    assert seen["kwargs"] == {"python": "/venv/bin/python"}
    assert seen["hyps"][0] == "The heart is enlarged. Small left pleural effusion. Cardiomegaly. Small effusion."
    assert metrics["radgraph_f1_simple"] == pytest.approx(0.8 / 3)
    assert metrics["radgraph_f1_complete"] == pytest.approx(0.2)
    assert config["radgraph"]["unscored_pairs"] == 1
    without, _, _ = score_lines(lines, meteor="nltk")
    assert not any(name.startswith("radgraph") for name in without)


def test_without_java_the_cli_writes_meteor_nltk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no java on the PATH
    path = write_jsonl(tmp_path / "p.jsonl", GOOD)
    assert main(["evaluate", "--predictions", str(path), "--out-dir", str(tmp_path / "o")]) == 0  # --meteor auto
    result = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert "meteor_nltk" in result["metrics"] and "meteor" not in result["metrics"]
    assert "| meteor_nltk |" in (tmp_path / "o" / "metrics.md").read_text()


def test_cli_references_from_data_by_id(tmp_path: Path, capsys) -> None:
    assert main(["data", "demo", "--out-dir", str(tmp_path / "demo"), "--n", "30"]) == 0
    capsys.readouterr()
    test_ids = [row["id"] for row in json.loads((tmp_path / "demo" / "annotation.json").read_text())["test"]]
    records = [
        {"id": i, "prediction": "<think>x</think><finding>No effusion.</finding><impression>Normal.</impression>"}
        for i in test_ids
    ]
    path = write_jsonl(tmp_path / "p.jsonl", records)
    common = ["--data", str(tmp_path / "demo"), "--split", "test", "--meteor", "nltk"]
    assert main(["evaluate", "--predictions", str(path), "--out-dir", str(tmp_path / "o"), *common]) == 0
    result = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert result["n"] == len(test_ids) and result["config"]["split"] == "test"
    assert result["metrics"]["format_rate"] == 1.0
    bad = write_jsonl(tmp_path / "bad.jsonl", [*records[1:], dict(records[0], id="not-a-study")])
    code, err = run_cli(capsys, "evaluate", "--predictions", str(bad), "--out-dir", str(tmp_path / "o2"), *common)
    assert code == 2 and f"line {len(records)}: id not in the dataset split (mismatched ids)" in err
