"""The procedural demo set: determinism, the R2Gen layout, labels that agree with the text, visible findings."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from himed.cli import main
from himed.clinical.observations import NO_FINDING, SUPPORT_DEVICES, normalize_labels, with_no_finding
from himed.data.demo import (
    DRAWN_OBSERVATIONS,
    ImageFinding,
    draw_from_labels,
    draw_view,
    generate_demo,
    report_corpus,
    sample_study,
    split_assignment,
)
from himed.data.demo import writing as demo_writing

# Words that name each observation in the templates: a test-side reading of the reports, kept independent of the
# generator's own tables so that a template naming the wrong thing is caught.
KEYWORDS = {
    "Cardiomegaly": r"cardiomegaly|heart|cardiac silhouette",
    "Pleural Effusion": r"effusions?",
    "Consolidation": r"consolidation",
    "Edema": r"edema",
    "Atelectasis": r"atelectasis",
    "Pneumothorax": r"pneumothorax",
    "Pneumonia": r"pneumonia",
    "Fracture": r"fracture",
    SUPPORT_DEVICES: r"tubes?|lines?|catheter|pacemaker|devices",
}
HEDGES = r"possible|possibly|may|cannot be excluded|borderline"
NEGATIONS = r"^(there is )?no\b|normal"


def mentions(text: str) -> dict[str, set[int]]:
    """Observation -> the set of polarities (1, 0, -1) with which the clauses of ``text`` mention it."""
    found: dict[str, set[int]] = {}
    for clause in re.split(r"(?<=\.)\s+|,\s*", text):
        clause = clause.strip().lower()
        for obs, pattern in KEYWORDS.items():
            if re.search(rf"\b(?:{pattern})\b", clause):
                polarity = -1 if re.search(HEDGES, clause) else 0 if re.search(NEGATIONS, clause) else 1
                found.setdefault(obs, set()).add(polarity)
    return found


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "set"
    generate_demo(out, n=30, seed=3)
    return out


def _annotation(root: Path) -> dict:
    return json.loads((root / "annotation.json").read_text())


def test_annotation_layout_and_images(demo_dir):
    annotation = _annotation(demo_dir)
    assert set(annotation) == {"train", "val", "test"}
    assert [len(annotation[s]) for s in ("train", "val", "test")] == [24, 3, 3]
    ids = set()
    for split, rows in annotation.items():
        for row in rows:
            assert {"id", "report", "image_path", "split", "findings", "impression", "labels", "views"} <= set(row)
            assert set(row) <= {
                "id",
                "report",
                "image_path",
                "split",
                "findings",
                "impression",
                "labels",
                "views",
                "indication",
            }
            assert row["split"] == split
            assert row["report"] == f"{row['findings']} {row['impression']}"
            assert len(row["image_path"]) == len(row["views"]) >= 1
            assert row["views"][0] in ("PA", "AP") and row["views"][1:] in ([], ["LATERAL"])
            for relative in row["image_path"]:
                with Image.open(demo_dir / "images" / relative) as image:
                    assert image.mode == "L" and image.size == (112, 112)
            ids.add(row["id"])
    assert len(ids) == 30
    meta = json.loads((demo_dir / "meta.json").read_text())
    assert meta["n"] == 30 and meta["seed"] == 3 and meta["omit_rate"] == 0.0 and meta["image_size"] == 112
    assert meta["splits"] == {"train": 24, "val": 3, "test": 3}


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path, demo_dir):
    again = tmp_path / "again"
    generate_demo(again, n=30, seed=3)
    files = sorted(p.relative_to(demo_dir) for p in demo_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for relative in files:
        assert (demo_dir / relative).read_bytes() == (again / relative).read_bytes(), relative
    other = tmp_path / "other"
    generate_demo(other, n=30, seed=4)
    assert (other / "annotation.json").read_bytes() != (demo_dir / "annotation.json").read_bytes()


def test_worker_processes_write_the_same_files(tmp_path, demo_dir, monkeypatch):
    monkeypatch.setattr(demo_writing, "MIN_STUDIES_PER_WORKER", 5)  # so 30 studies use both workers
    parallel = tmp_path / "parallel"
    generate_demo(parallel, n=30, seed=3, workers=2)
    files = sorted(p.relative_to(demo_dir) for p in demo_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(parallel) for p in parallel.rglob("*") if p.is_file())
    for relative in files:
        assert (demo_dir / relative).read_bytes() == (parallel / relative).read_bytes(), relative


def test_splits_are_80_10_10_and_seeded():
    splits = split_assignment(1500, seed=0)
    assert [splits.count(s) for s in ("train", "val", "test")] == [1200, 150, 150]
    assert split_assignment(1500, seed=0) == splits != split_assignment(1500, seed=1)


def _check_text_agrees(labels: dict, text: str, omitted: tuple = ()) -> None:
    said = mentions(text)
    for obs, value in labels.items():
        if obs == NO_FINDING:
            continue
        if obs in omitted:
            assert obs not in said, (obs, text)
        else:
            assert value in said.get(obs, set()), (obs, value, text)
    for obs, polarities in said.items():
        if obs in ("Cardiomegaly",) and polarities == {0}:
            assert labels.get(obs) == 0, text
        elif obs == SUPPORT_DEVICES:
            assert labels.get(obs) == 1, text
        else:
            # A clause never contradicts the label (the impression may hedge pneumonia next to a sure consolidation).
            assert labels.get(obs) in polarities, (obs, labels, text)


def test_labels_agree_with_the_text():
    for index in range(400):
        study = sample_study(index, seed=0)
        _check_text_agrees(study.labels, study.report)


def test_rule_labeler_reads_the_labels_back_from_clean_reports():
    # The clinical reward labels reference text with the rule labeler: on clean demo data it must recover the row
    # labels exactly, or the demo's CE numbers would measure template wording instead of the model.
    labeler = pytest.importorskip("himed.clinical.rules").ChexpertRuleLabeler()
    for index in range(300):
        study = sample_study(index, seed=5)
        assert labeler.label_one(study.report) == study.labels, study.report
    # With omissions the text reads as the truth minus the omitted observations: the noise is only the omission.
    for index in range(300):
        study = sample_study(index, seed=5, omit_rate=0.5)
        said = {obs: value for obs, value in study.labels.items() if obs not in study.omitted and obs != NO_FINDING}
        assert labeler.label_one(study.report) == with_no_finding(said), study.report


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    index=st.integers(0, 10**6),
    omit_rate=st.sampled_from([0.0, 0.3, 0.9]),
)
def test_any_study_is_a_valid_row(seed, index, omit_rate):
    study = sample_study(index, seed, omit_rate)
    assert normalize_labels(study.labels) == study.labels
    assert study.findings.strip() and study.impression.strip()
    assert study.report == f"{study.findings} {study.impression}"
    assert set(study.omitted) <= {f.observation for f in study.image_findings}
    _check_text_agrees(study.labels, study.report, study.omitted)
    assert sample_study(index, seed, omit_rate) == study


def test_no_finding_rule():
    seen_no_finding = seen_device_only = False
    for index in range(400):
        labels = sample_study(index, seed=1).labels
        present = [o for o, v in labels.items() if v in (1, -1) and o not in (SUPPORT_DEVICES, NO_FINDING)]
        assert (labels.get(NO_FINDING) == 1) == (not present), labels
        assert labels.get(NO_FINDING) in (None, 1)
        seen_no_finding |= labels.get(NO_FINDING) == 1
        seen_device_only |= labels.get(NO_FINDING) == 1 and labels.get(SUPPORT_DEVICES) == 1
    assert seen_no_finding and seen_device_only


def test_labels_are_image_truth_and_laterality_is_in_the_text():
    for index in range(300):
        study = sample_study(index, seed=2)
        for finding in study.image_findings:
            assert study.labels[finding.observation] == finding.certainty
            if finding.side in ("left", "right") and finding.observation != "Edema":
                assert finding.side in study.report.lower(), (finding, study.report)
            if finding.side == "bilateral" and finding.observation != "Edema":
                assert re.search(r"bilateral|both|bibasilar", study.report.lower()), (finding, study.report)
        drawn = {f.observation for f in study.image_findings}
        assert all(
            value == 0 or obs in drawn or obs in ("Pneumonia", NO_FINDING) for obs, value in study.labels.items()
        )


def test_corpus_statistics_cover_positive_negative_and_uncertain():
    studies = [sample_study(index, seed=0) for index in range(1500)]
    for obs in DRAWN_OBSERVATIONS:
        prevalence = np.mean([obs in {f.observation for f in s.image_findings} for s in studies])
        assert 0.15 < prevalence < 0.4, (obs, prevalence)
    values = [v for s in studies for o, v in s.labels.items() if o != NO_FINDING]
    assert values.count(0) > 1000 and values.count(-1) > 50 and values.count(1) > 1000
    no_finding = np.mean([s.labels.get(NO_FINDING) == 1 for s in studies])
    assert 0.08 < no_finding < 0.3
    lateral = np.mean([len(s.views) == 2 for s in studies])
    assert 0.15 < lateral < 0.25
    lengths = [len(re.findall(r"[a-z0-9]+|[^\sa-z0-9]", s.report.lower())) for s in studies]
    assert 25 < np.mean(lengths) < 50 and np.percentile(lengths, 95) < 70
    assert len({s.report for s in studies}) > 1400


def test_omit_rate_keeps_labels_and_drops_sentences():
    omitted_total = 0
    for index in range(300):
        clean, noisy = sample_study(index, seed=0), sample_study(index, seed=0, omit_rate=0.5)
        assert noisy.image_findings == clean.image_findings
        for finding in noisy.image_findings:
            assert noisy.labels[finding.observation] == clean.labels[finding.observation] == finding.certainty
        _check_text_agrees(noisy.labels, noisy.report, noisy.omitted)
        omitted_total += len(noisy.omitted)
        assert set(noisy.omitted) <= {f.observation for f in noisy.image_findings}
    drawn_total = sum(len({f.observation for f in sample_study(i, seed=0).image_findings}) for i in range(300))
    assert 0.4 < omitted_total / drawn_total < 0.6


def _hidden_positives(row: dict) -> int:
    said = mentions(row["report"])
    return sum(1 for obs, v in row["labels"].items() if v == 1 and obs != NO_FINDING and obs not in said)


def test_omit_rate_thins_only_the_training_reports_by_default(tmp_path):
    summary = generate_demo(tmp_path / "noisy", n=40, seed=0, omit_rate=0.6, lateral_rate=0.0)
    assert summary["omitted_findings"] > 0 and summary["omit_rate"] == 0.6 and summary["omit_splits"] == ["train"]
    annotation = _annotation(tmp_path / "noisy")
    assert all(row["views"] in (["PA"], ["AP"]) for rows in annotation.values() for row in rows)
    assert sum(_hidden_positives(row) for row in annotation["train"]) > 0
    # Evaluation references stay complete: their text agrees with their labels.
    for row in annotation["val"] + annotation["test"]:
        _check_text_agrees(row["labels"], row["report"])


def test_omit_splits_chooses_the_noisy_splits(tmp_path, capsys):
    out = tmp_path / "all-noisy"
    argv = ["data", "demo", "--out-dir", str(out), "--n", "60", "--omit-rate", "0.9", "--omit-splits", "train,test"]
    assert main(argv) == 0
    annotation = _annotation(out)
    assert sum(_hidden_positives(row) for row in annotation["test"]) > 0
    for row in annotation["val"]:
        _check_text_agrees(row["labels"], row["report"])
    assert json.loads((out / "meta.json").read_text())["omit_splits"] == ["train", "test"]
    bad = ["data", "demo", "--out-dir", str(tmp_path / "y"), "--omit-rate", "0.5", "--omit-splits", "training"]
    assert main(bad) == 2
    assert "unknown split" in capsys.readouterr().err


def test_report_corpus_is_the_generated_text(demo_dir):
    corpus = report_corpus(30, seed=3)
    rows = sorted((row for rows in _annotation(demo_dir).values() for row in rows), key=lambda row: row["id"])
    assert corpus[:30] == [row["report"] for row in rows]
    assert len(report_corpus(2000)) >= 2000


# ---- visible features: the same anatomy seed with and without a finding --------------------------------------


def region(image: np.ndarray, y0: float, y1: float, x0: float, x1: float) -> float:
    size = image.shape[0]
    return float(image[int(y0 * size) : int(y1 * size), int(x0 * size) : int(x1 * size)].mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cardiomegaly_widens_the_heart(seed):
    normal = draw_view((), "PA", 112, seed)
    enlarged = draw_view((ImageFinding("Cardiomegaly", severity="moderate"),), "PA", 112, seed)
    # Just outside a normal heart's borders, on both sides, at heart level.
    for x0, x1 in ((0.36, 0.4), (0.66, 0.7)):
        assert region(enlarged, 0.6, 0.68, x0, x1) > region(normal, 0.6, 0.68, x0, x1) + 25


@pytest.mark.parametrize("side, image_x", [("left", (0.72, 0.84)), ("right", (0.16, 0.28))])
def test_effusion_fills_the_base_on_its_side(side, image_x):
    normal = draw_view((), "PA", 112, 0)
    effusion = draw_view((ImageFinding("Pleural Effusion", side=side, severity="moderate"),), "PA", 112, 0)
    other_x = (1 - image_x[1], 1 - image_x[0])
    assert region(effusion, 0.66, 0.74, *image_x) > region(normal, 0.66, 0.74, *image_x) + 40
    assert abs(region(effusion, 0.66, 0.74, *other_x) - region(normal, 0.66, 0.74, *other_x)) < 3


def test_uncertain_findings_are_drawn_fainter():
    normal = draw_view((), "PA", 112, 0)
    clear = draw_view((ImageFinding("Consolidation", 1, "left", zone="lower"),), "PA", 112, 0)
    faint = draw_view((ImageFinding("Consolidation", -1, "left", zone="lower"),), "PA", 112, 0)
    box = (0.5, 0.7, 0.6, 0.82)
    assert region(clear, *box) > region(faint, *box) + 5 > region(normal, *box) + 5


def test_pneumothorax_darkens_the_apex_and_removes_markings():
    normal = draw_view((), "PA", 112, 0).astype(float)
    ptx = draw_view((ImageFinding("Pneumothorax", side="right", severity="large"),), "PA", 112, 0).astype(float)
    apex = (0.28, 0.38, 0.2, 0.27)  # lateral apex of the patient's right lung = image left
    assert region(ptx, *apex) < region(normal, *apex) - 10
    size = 112
    patch = ptx[int(apex[0] * size) : int(apex[1] * size), int(apex[2] * size) : int(apex[3] * size)]
    assert (
        patch.std() < normal[int(apex[0] * size) : int(apex[1] * size), int(apex[2] * size) : int(apex[3] * size)].std()
    )
    # The other lung is untouched.
    assert abs(region(ptx, 0.22, 0.4, 0.76, 0.85) - region(normal, 0.22, 0.4, 0.76, 0.85)) < 3


@pytest.mark.parametrize(
    "labels, box",
    [
        ({"Consolidation": 1}, (0.5, 0.7, 0.18, 0.4)),  # right lower zone = image left
        ({"Edema": 1}, (0.35, 0.6, 0.3, 0.42)),  # perihilar
        ({"Atelectasis": 1}, (0.6, 0.72, 0.2, 0.38)),  # right base band
        ({SUPPORT_DEVICES: 1}, (0.0, 0.3, 0.48, 0.52)),  # endotracheal tube in the trachea
    ],
)
def test_drawn_findings_brighten_their_region(labels, box):
    normal = draw_from_labels({}, seed=4)
    drawn = draw_from_labels(labels, seed=4)
    assert region(drawn, *box) > region(normal, *box) + 8
    assert drawn.shape == (112, 112) and drawn.dtype == np.uint8


def test_lateral_view_and_image_size():
    lateral_normal = draw_view((), "LATERAL", 84, 0)
    lateral_heart = draw_view((ImageFinding("Cardiomegaly", severity="severe"),), "LATERAL", 84, 0)
    assert lateral_normal.shape == (84, 84)
    assert region(lateral_heart, 0.55, 0.72, 0.45, 0.55) > region(lateral_normal, 0.55, 0.72, 0.45, 0.55) + 30
    with pytest.raises(ValueError, match="view"):
        draw_view((), "OBLIQUE")


# ---- the command line ---------------------------------------------------------------------------------------


def test_cli_writes_the_demo_set(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "demo", "--out-dir", str(out), "--n", "20", "--seed", "1", "--image-size", "56"]) == 0
    assert "wrote 20 studies" in capsys.readouterr().out
    rows = [row for rows in _annotation(out).values() for row in rows]
    assert len(rows) == 20
    with Image.open(out / "images" / rows[0]["image_path"][0]) as image:
        assert image.size == (56, 56)
    # A second run needs --overwrite, and then replaces the set.
    assert main(["data", "demo", "--out-dir", str(out), "--n", "10"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["data", "demo", "--out-dir", str(out), "--n", "10", "--overwrite"]) == 0
    assert sum(len(rows) for rows in _annotation(out).values()) == 10
    assert len(list((out / "images").iterdir())) == 10


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--n", "2"], "at least 3"),
        (["--image-size", "20"], "image_size"),
        (["--lateral-rate", "1.5"], "lateral_rate"),
        (["--seed", "-1"], "seed"),
    ],
)
def test_cli_rejects_bad_values_with_one_line(tmp_path, capsys, argv, message):
    assert main(["data", "demo", "--out-dir", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["--n", "0"], ["--n", "many"], ["--omit-rate", "1.0"], ["--omit-rate", "-0.1"]])
def test_cli_rejects_bad_arguments(tmp_path, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "demo", "--out-dir", str(tmp_path / "x"), *argv])
    assert exit_info.value.code == 2


def test_cli_refuses_foreign_or_unwritable_directories(tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not ours")
    assert main(["data", "demo", "--out-dir", str(foreign), "--n", "5", "--overwrite"]) == 2
    assert "meta.json" in capsys.readouterr().err and (foreign / "keep.txt").exists()
    (foreign / "meta.json").write_text('{"generator": "something else"}')
    assert main(["data", "demo", "--out-dir", str(foreign), "--n", "5", "--overwrite"]) == 2
    assert (foreign / "keep.txt").exists()
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert main(["data", "demo", "--out-dir", str(a_file), "--n", "5"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_output_loads_through_the_r2gen_loader(demo_dir):
    from himed.data.loaders import load_r2gen

    rows = {split: load_r2gen(demo_dir, split) for split in ("train", "val", "test")}
    assert [len(rows[s]) for s in ("train", "val", "test")] == [24, 3, 3]
    annotation = {row["id"]: row for rows in _annotation(demo_dir).values() for row in rows}
    for row in rows["train"]:
        source = annotation[row["id"]]
        assert row["findings"] == source["findings"] and row["impression"] == source["impression"]
        assert row["labels"] == source["labels"] and list(row["views"]) == source["views"]
        assert all(Path(path).is_file() for path in row["images"])


# ---- learnability: what the demo is for ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_patch14_probe_learns_every_drawn_finding(tmp_path):
    """A tiny net with the tiny VLM's visual layout (patch 14, 2x2 merge: 16 tokens per 112x112 image) learns each
    drawn finding from the frontal image alone, well above the majority rate (about 30 s of CPU time)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    out = tmp_path / "learn"
    generate_demo(out, n=1500, seed=11)
    annotation = _annotation(out)

    def tensors(rows):
        images = [np.asarray(Image.open(out / "images" / row["image_path"][0]), dtype=np.float32) / 255 for row in rows]
        targets = [[float(row["labels"].get(obs) in (1, -1)) for obs in DRAWN_OBSERVATIONS] for row in rows]
        return torch.tensor(np.stack(images))[:, None], torch.tensor(targets)

    x_train, y_train = tensors(annotation["train"])
    x_test, y_test = tensors(annotation["val"] + annotation["test"])
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 14, stride=14),
        torch.nn.GELU(),
        torch.nn.Conv2d(32, 64, 2, stride=2),
        torch.nn.GELU(),
        torch.nn.Flatten(),
        torch.nn.Linear(64 * 16, 128),
        torch.nn.GELU(),
        torch.nn.Linear(128, len(DRAWN_OBSERVATIONS)),
    )
    optimizer = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(30):
        order = torch.randperm(len(x_train))
        for start in range(0, len(x_train), 32):
            batch = order[start : start + 32]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = ((net(x_test) > 0).float() == y_test).float().mean(0)
    majority = torch.maximum(y_test.mean(0), 1 - y_test.mean(0))
    for obs, acc, base in zip(DRAWN_OBSERVATIONS, accuracy.tolist(), majority.tolist(), strict=True):
        assert acc >= 0.85 and acc > base + 0.08, (obs, acc, base)
    assert accuracy.mean().item() >= 0.93


# --- prior reports ----------------------------------------------------------------------------------------------


def test_prior_rate_zero_writes_no_prior_and_changes_nothing(tmp_path, demo_dir):
    explicit = tmp_path / "explicit"
    generate_demo(explicit, n=30, seed=3, prior_rate=0.0)
    for name in ("annotation.json", "meta.json"):
        assert (explicit / name).read_bytes() == (demo_dir / name).read_bytes()
    assert not any("prior_report" in row for rows in _annotation(demo_dir).values() for row in rows)


def test_prior_reports_are_added_to_a_fraction_and_change_nothing_else(tmp_path, demo_dir):
    with_prior = tmp_path / "prior"
    meta = generate_demo(with_prior, n=30, seed=3, prior_rate=0.5)
    annotation = _annotation(with_prior)
    rows = [row for split in annotation.values() for row in split]
    priors = {row["id"]: row.pop("prior_report") for row in rows if "prior_report" in row}
    assert 5 <= len(priors) <= 25 and meta["prior_reports"] == len(priors) and meta["prior_rate"] == 0.5
    # Without the new key, the rows are exactly those of the set made without priors; so are the images.
    assert annotation == _annotation(demo_dir)
    for path in (demo_dir / "images").rglob("*.png"):
        assert path.read_bytes() == (with_prior / "images" / path.relative_to(demo_dir / "images")).read_bytes()
    reports = {row["id"]: row["report"] for row in rows}
    for study, prior in priors.items():
        assert isinstance(prior, str) and prior.strip() and prior != reports[study]
    # A higher rate keeps the studies that had a prior at a lower one, with the same text.
    assert all(sample_study(int(study[4:]), 3, prior_rate=0.9).prior_report == prior for study, prior in priors.items())


def test_prior_reports_come_from_perturbed_findings():
    from himed.clinical.rules import ChexpertRuleLabeler

    labeler = ChexpertRuleLabeler()
    studies = [sample_study(index, seed=0, prior_rate=1.0) for index in range(200)]
    assert all(study.prior_report for study in studies)
    differ = 0
    for study in studies:
        now = {obs for obs, value in study.labels.items() if value in (1, -1)}
        before = {obs for obs, value in labeler.label_one(study.prior_report).items() if value in (1, -1)}
        differ += now != before
    # Mostly the same patient (most priors share findings) but not a copy (some changed since).
    assert 0.2 * len(studies) < differ < 0.9 * len(studies)


def test_r2gen_loader_and_prompt_read_the_prior_report(tmp_path):
    from himed.data.loaders import load_rows
    from himed.data.prompts import build_prompt

    out = tmp_path / "set"
    assert main(["data", "demo", "--out-dir", str(out), "--n", "20", "--seed", "1", "--prior-rate", "1"]) == 0
    annotation = _annotation(out)
    rows = load_rows("r2gen", out, split="train")
    assert len(rows) == len(annotation["train"])
    for entry, row in zip(annotation["train"], rows, strict=True):
        assert row["prior_report"] == entry["prior_report"]
    text = json.dumps(build_prompt(rows[0], include_prior=True))
    assert f"Prior report: {rows[0]['prior_report']}" in text
    assert "Prior report" not in json.dumps(build_prompt(rows[0], include_prior=False))


@pytest.mark.parametrize("rate", ["-0.1", "1.5", "half"])
def test_cli_rejects_a_bad_prior_rate(tmp_path, rate, capsys):
    with pytest.raises(SystemExit):
        main(["data", "demo", "--out-dir", str(tmp_path / "x"), "--n", "5", "--prior-rate", rate])
    assert "--prior-rate" in capsys.readouterr().err
