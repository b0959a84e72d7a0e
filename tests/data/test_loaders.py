"""Loaders on small fixtures written here in each format's real on-disk layout."""

import csv
import gzip
import json
import logging

import pytest
from PIL import Image

from himed.data.loaders import (
    LOADERS,
    load_hf_disk,
    load_jsonl,
    load_mimic_cxr_jpg,
    load_r2gen,
    load_rows,
)
from himed.data.rows import BadRowError


def write_image(path, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), color=100).save(path, format=fmt)
    return path


def write_corrupt(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return path


def warnings_from(caplog):
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


# --- R2Gen -------------------------------------------------------------------------------------------------------


def write_r2gen_iu(root):
    """IU-Xray layout: ids like CXR2384_IM-0942, two PNGs per study under images/<id>/."""
    splits = {"train": [], "val": [], "test": []}
    studies = [
        ("train", "CXR2384_IM-0942", "The heart size is normal. The lungs are clear."),
        ("train", "CXR2926_IM-1328", "FINDINGS: Mild cardiomegaly. IMPRESSION: Cardiomegaly."),
        ("val", "CXR1000_IM-0003", "No pneumothorax."),
        ("test", "CXR1001_IM-0004", "Small left effusion."),
    ]
    for split, study_id, report in studies:
        for i in range(2):
            write_image(root / "images" / study_id / f"{i}.png")
        paths = [f"{study_id}/0.png", f"{study_id}/1.png"]
        splits[split].append({"id": study_id, "report": report, "image_path": paths, "split": split})
    (root / "annotation.json").write_text(json.dumps(splits))
    return splits


def write_r2gen_mimic(root):
    """MIMIC-CXR layout: one entry per image, id = dicom id, path p10/p<subject>/s<study>/<dicom>.jpg."""
    dicom = "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"
    path = f"p10/p10000032/s50414267/{dicom}.jpg"
    write_image(root / "images" / path, fmt="JPEG")
    entry = {
        "id": dicom,
        "study_id": 50414267,
        "subject_id": 10000032,
        "report": "There is no focal consolidation, pleural effusion or pneumothorax.",
        "image_path": [path],
        "split": "train",
    }
    (root / "annotation.json").write_text(json.dumps({"train": [entry], "val": [], "test": []}))


def test_r2gen_iu_xray_layout(tmp_path):
    write_r2gen_iu(tmp_path)
    rows = load_r2gen(tmp_path, "train")
    assert [row["id"] for row in rows] == ["CXR2384_IM-0942", "CXR2926_IM-1328"]
    assert rows[0]["images"] == [
        str(tmp_path / "images/CXR2384_IM-0942/0.png"),
        str(tmp_path / "images/CXR2384_IM-0942/1.png"),
    ]
    assert rows[0]["views"] == ["UNKNOWN", "UNKNOWN"]
    # No headers: all of it is findings. Headers: split.
    assert (rows[0]["findings"], rows[0]["impression"]) == ("The heart size is normal. The lungs are clear.", "")
    assert (rows[1]["findings"], rows[1]["impression"]) == ("Mild cardiomegaly.", "Cardiomegaly.")
    # Split aliases: MIMIC's and HF's names reach R2Gen's "val".
    assert [row["id"] for row in load_rows("r2gen", tmp_path, "validation")] == ["CXR1000_IM-0003"]
    with pytest.raises(ValueError, match="no split 'dev2'; available: train, val, test"):
        load_r2gen(tmp_path, "dev2")


def test_r2gen_mimic_layout(tmp_path):
    write_r2gen_mimic(tmp_path)
    (row,) = load_r2gen(tmp_path, "train")
    assert row["id"] == "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"
    assert row["images"] == [str(tmp_path / "images/p10/p10000032/s50414267" / f"{row['id']}.jpg")]
    assert row["findings"].startswith("There is no focal consolidation")


def test_r2gen_extra_keys_are_used(tmp_path):
    write_image(tmp_path / "images" / "d1" / "0.png")
    entry = {
        "id": "d1",
        "report": "ignored when findings are given",
        "findings": "Heart enlarged.",
        "impression": "Cardiomegaly.",
        "labels": {"Cardiomegaly": 1},
        "views": ["PA"],
        "image_path": ["d1/0.png"],
        "split": "train",
    }
    (tmp_path / "annotation.json").write_text(json.dumps({"train": [entry]}))
    (row,) = load_r2gen(tmp_path, "train")
    assert (row["findings"], row["impression"], row["views"]) == ("Heart enlarged.", "Cardiomegaly.", ["PA"])
    assert row["labels"] == {"Cardiomegaly": 1}


def test_r2gen_bad_rows(tmp_path, caplog):
    splits = write_r2gen_iu(tmp_path)
    train = splits["train"]
    write_corrupt(tmp_path / "images" / "bad" / "0.png")
    train += [
        {"id": "missing-image", "report": "Clear.", "image_path": ["nowhere/0.png"], "split": "train"},
        {"id": "corrupt", "report": "Clear.", "image_path": ["bad/0.png"], "split": "train"},
        {"id": "empty", "report": "  ", "image_path": train[0]["image_path"], "split": "train"},
        {"id": "no-paths", "report": "Clear.", "split": "train"},
        {"id": "str-paths", "report": "Clear.", "image_path": "x.png", "split": "train"},
    ]
    annotation = tmp_path / "annotation.json"
    annotation.write_text(json.dumps(splits))

    with pytest.raises(BadRowError) as caught:
        load_r2gen(tmp_path, "train")
    assert str(caught.value).startswith(f"{annotation}: train[2] (id 'missing-image'): field 'images[0]'")

    with caplog.at_level(logging.INFO):
        rows = load_r2gen(tmp_path, "train", on_bad="skip")
    assert [row["id"] for row in rows] == ["CXR2384_IM-0942", "CXR2926_IM-1328"]
    (summary,) = warnings_from(caplog)
    assert "skipped 5 bad rows" in summary
    for reason in ("missing_image: 1", "corrupt_image: 1", "empty_report: 1", "missing_field: 1", "wrong_type: 1"):
        assert reason in summary
    assert any("loaded 2 rows for split 'train'" in record.getMessage() for record in caplog.records)


def test_r2gen_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation.json"):
        load_r2gen(tmp_path, "train")
    (tmp_path / "annotation.json").write_text("{not json")
    with pytest.raises(ValueError, match="annotation.json: not valid JSON"):
        load_r2gen(tmp_path, "train")


# --- MIMIC-CXR-JPG ----------------------------------------------------------------------------------------------

# (subject, study, dicom, split, ViewPosition, StudyDate, StudyTime)
MIMIC_IMAGES = [
    ("10000032", "50414267", "d-pa", "train", "PA", "21800506", "213014.531"),
    ("10000032", "50414267", "d-lat", "train", "LATERAL", "21800506", "213014.531"),
    ("10000032", "53189527", "d-ap", "train", "AP", "21800626", "165500.312"),
    ("10000764", "57375967", "d-lat-only", "train", "LATERAL", "21320721", "090000"),
    ("10000898", "50771383", "d-noreport", "train", "PA", "21200101", "120000"),
    ("10000935", "51178377", "d-imponly", "train", "PA", "21870101", "120000"),
    ("10000980", "58206436", "d-test", "test", "AP", "21890101", "120000"),
]
SECTIONED = [
    # study, impression, findings, last_paragraph, comparison (a quoted report spanning lines, as csv.writer writes)
    ("s50414267", "No acute process.", "The heart is normal.\n Lungs are clear.", "", ""),
    ("s53189527", "Cardiomegaly.", "The heart is enlarged.", "", ""),
    ("s57375967", "", "Clear.", "", ""),
    ("s51178377", "Small effusion.", "", "", ""),
    ("s58206436", "", "Normal.", "", ""),
]
CHEXPERT_COLUMNS = ["subject_id", "study_id", "Atelectasis", "Cardiomegaly", "Edema", "No Finding"]
CHEXPERT = [
    ("10000032", "50414267", "", "", "", "1.0"),
    ("10000032", "53189527", "", "1.0", "-1.0", ""),
]


def write_csv(path, header, rows):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_mimic_cxr_jpg(root, compressed=False, chexpert=CHEXPERT):
    gz = ".gz" if compressed else ""
    write_csv(
        root / f"mimic-cxr-2.0.0-split.csv{gz}",
        ["dicom_id", "study_id", "subject_id", "split"],
        [(dicom, study, subject, split) for subject, study, dicom, split, *_ in MIMIC_IMAGES],
    )
    write_csv(
        root / f"mimic-cxr-2.0.0-metadata.csv{gz}",
        [
            "dicom_id",
            "subject_id",
            "study_id",
            "PerformedProcedureStepDescription",
            "ViewPosition",
            "Rows",
            "Columns",
            "StudyDate",
            "StudyTime",
        ],
        [
            (dicom, subject, study, "CHEST (PA AND LAT)", view, 8, 8, date, time)
            for subject, study, dicom, _, view, date, time in MIMIC_IMAGES
        ],
    )
    write_csv(
        root / "mimic_cxr_sectioned.csv", ["study", "impression", "findings", "last_paragraph", "comparison"], SECTIONED
    )
    write_csv(root / f"mimic-cxr-2.0.0-chexpert.csv{gz}", CHEXPERT_COLUMNS, chexpert)
    for subject, study, dicom, *_ in MIMIC_IMAGES:
        write_image(root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg", fmt="JPEG")


@pytest.mark.parametrize("compressed", [False, True])
def test_mimic_cxr_jpg(tmp_path, caplog, compressed):
    write_mimic_cxr_jpg(tmp_path, compressed)
    with caplog.at_level(logging.INFO):
        rows = load_mimic_cxr_jpg(tmp_path, "train", on_bad="skip")
    by_id = {row["id"]: row for row in rows}
    assert list(by_id) == ["s50414267", "s53189527"]
    first = by_id["s50414267"]
    # The lateral is filtered out by the default views (PA, AP).
    assert first["images"] == [str(tmp_path / "files/p10/p10000032/s50414267/d-pa.jpg")]
    assert first["views"] == ["PA"]
    assert (first["findings"], first["impression"]) == ("The heart is normal. Lungs are clear.", "No acute process.")
    assert first["labels"] == {"No Finding": 1}
    assert by_id["s53189527"]["labels"] == {"Cardiomegaly": 1, "Edema": -1}
    assert by_id["s53189527"]["prior_report"] is None  # not asked for
    # The missing report and the impression-only study are counted skips; the lateral-only study is a logged filter.
    (summary,) = warnings_from(caplog)
    assert "skipped 2 bad rows" in summary and "missing_report: 1" in summary and "empty_findings: 1" in summary
    messages = [record.getMessage() for record in caplog.records]
    assert any("1 studies of split 'train' have no image with view in ['PA', 'AP']" in m for m in messages)


def test_mimic_cxr_jpg_all_views_priors_and_test_split(tmp_path):
    write_mimic_cxr_jpg(tmp_path)
    rows = load_mimic_cxr_jpg(tmp_path, "train", on_bad="skip", views=None, prior_report=True)
    by_id = {row["id"]: row for row in rows}
    assert by_id["s50414267"]["views"] == ["PA", "LATERAL"]
    assert by_id["s57375967"]["views"] == ["LATERAL"]
    # The subject's earlier study's report, findings + impression.
    assert by_id["s53189527"]["prior_report"] == "The heart is normal. Lungs are clear. No acute process."
    assert by_id["s50414267"]["prior_report"] is None
    assert [row["id"] for row in load_rows("mimic_cxr_jpg", tmp_path, "test")] == ["s58206436"]
    capped = load_mimic_cxr_jpg(tmp_path, "train", on_bad="skip", views=("LATERAL", "PA"), max_images=1)
    assert {row["id"]: row["views"] for row in capped}["s50414267"] == ["LATERAL"]


def test_mimic_cxr_jpg_errors_name_files_and_rows(tmp_path):
    write_mimic_cxr_jpg(tmp_path)
    split_csv = tmp_path / "mimic-cxr-2.0.0-split.csv"
    with pytest.raises(
        BadRowError, match=rf"{split_csv}:6 \(study s50771383\): field 'findings': study s50771383 not in"
    ):
        load_mimic_cxr_jpg(tmp_path, "train")
    bad_labels = [("10000032", "53189527", "", "2.0", "", "")]
    write_mimic_cxr_jpg(tmp_path, chexpert=bad_labels)
    with pytest.raises(
        BadRowError, match=r"chexpert.csv:2 \(study s53189527\): field 'labels': 'Cardiomegaly' must be 1.0, 0.0, -1.0"
    ):
        load_mimic_cxr_jpg(tmp_path, "train")
    (tmp_path / "files/p10/p10000032/s50414267/d-pa.jpg").unlink()
    rows = load_mimic_cxr_jpg(tmp_path, "train", on_bad="skip")
    assert "s50414267" not in {row["id"] for row in rows}
    write_csv(tmp_path / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "split"], [])
    with pytest.raises(ValueError, match=r"split.csv: missing columns \['subject_id'\]"):
        load_mimic_cxr_jpg(tmp_path, "train")


# --- JSONL ------------------------------------------------------------------------------------------------------


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_jsonl_paths_relative_to_file(tmp_path):
    write_image(tmp_path / "img" / "a.png")
    absolute = write_image(tmp_path / "elsewhere" / "b.png")
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"id": "a", "images": ["img/a.png"], "views": ["AP"], "findings": "Clear.", "indication": "Fever."},
            "",
            {"id": "b", "image": str(absolute), "report": "Clear. IMPRESSION: Normal.", "prior_report": "Old."},
        ],
    )
    rows = load_jsonl(path)
    assert rows[0]["images"] == [str(tmp_path / "img" / "a.png")] and rows[0]["indication"] == "Fever."
    assert rows[1]["images"] == [str(absolute)] and rows[1]["impression"] == "Normal."
    assert rows[1]["prior_report"] == "Old."
    # A folder holds <split>.jsonl; a file is one split.
    assert [row["id"] for row in load_rows("jsonl", tmp_path, "train")] == ["a", "b"]
    assert len(load_rows("jsonl", path, "test")) == 2
    with pytest.raises(ValueError, match="no split 'test'; available: train"):
        load_rows("jsonl", tmp_path, "test")


def test_jsonl_bad_lines(tmp_path, caplog):
    write_image(tmp_path / "a.png")
    write_corrupt(tmp_path / "bad.png")
    path = write_jsonl(
        tmp_path / "rows.jsonl",
        [
            {"id": "good", "images": ["a.png"], "findings": "Clear."},
            "{broken json",
            {"id": "missing", "images": ["gone.png"], "findings": "Clear."},
            {"id": "corrupt", "images": ["bad.png"], "findings": "Clear."},
            {"id": "empty", "images": ["a.png"], "findings": "", "impression": ""},
            {"id": "nofield", "images": ["a.png"]},
            {"id": "labels", "images": ["a.png"], "findings": "Clear.", "labels": {"Edema": 2}},
            {"id": "good2", "images": ["a.png"], "findings": "Clear."},
        ],
    )
    expected = {
        2: "field '<line>': not valid JSON",
        3: "field 'images[0]': image file not found",
        4: "field 'images[0]': image file",
        5: "field 'findings': the report is empty",
        6: "field 'findings': missing",
        7: "field 'labels': 'Edema' must be 1, 0 or -1, got 2",
    }
    lines = path.read_text().splitlines()
    for line, message in expected.items():
        one = write_jsonl(tmp_path / "one.jsonl", ["", *[""] * (line - 2), lines[line - 1]])
        with pytest.raises(BadRowError) as caught:
            load_jsonl(one, image_root=tmp_path)
        assert str(caught.value).startswith(f"{one}:{line}: {message}")
    with caplog.at_level(logging.WARNING):
        rows = load_jsonl(path, on_bad="skip")
    assert [row["id"] for row in rows] == ["good", "good2"]
    (summary,) = warnings_from(caplog)
    assert "skipped 6 bad rows" in summary and f"{path}:2" in summary


# --- Hugging Face datasets saved to disk ------------------------------------------------------------------------


def test_hf_disk_dataset_dict_with_pil_images(tmp_path):
    import datasets

    images = [Image.new("L", (8, 8), color=c) for c in (10, 200, 90)]
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "images": datasets.Sequence(datasets.Image()),
            "views": datasets.Sequence(datasets.Value("string")),
            "findings": datasets.Value("string"),
            "impression": datasets.Value("string"),
            "labels": {"Cardiomegaly": datasets.Value("int64"), "Edema": datasets.Value("int64")},
        }
    )
    train = datasets.Dataset.from_list(
        [
            {
                "id": "a",
                "images": images[:2],
                "views": ["PA", "LATERAL"],
                "findings": "Clear.",
                "impression": "Normal.",
                "labels": {"Cardiomegaly": 0, "Edema": None},
            },
            {
                "id": "b",
                "images": images[2:],
                "views": ["AP"],
                "findings": "Big heart.",
                "impression": "",
                "labels": {"Cardiomegaly": 1, "Edema": None},
            },
        ],
        features=features,
    )
    datasets.DatasetDict({"train": train, "validation": train.select([1])}).save_to_disk(str(tmp_path / "ds"))
    rows = load_hf_disk(tmp_path / "ds", "train")
    assert [row["id"] for row in rows] == ["a", "b"]
    assert all(isinstance(image, Image.Image) for image in rows[0]["images"]) and len(rows[0]["images"]) == 2
    assert rows[0]["images"][1].getpixel((0, 0)) == 200
    assert rows[0]["labels"] == {"Cardiomegaly": 0, "No Finding": 1}  # the struct's null Edema is dropped
    assert rows[1]["labels"] == {"Cardiomegaly": 1}
    assert [row["id"] for row in load_rows("hf_disk", tmp_path / "ds", "val")] == ["b"]
    with pytest.raises(ValueError, match="name a split"):
        load_hf_disk(tmp_path / "ds")


def test_hf_disk_single_dataset_with_paths_and_bad_rows(tmp_path, caplog):
    import datasets

    write_image(tmp_path / "ds_images" / "a.png")
    write_corrupt(tmp_path / "ds_images" / "bad.png")
    dataset = datasets.Dataset.from_list(
        [
            {"id": "a", "images": ["a.png"], "findings": "Clear."},
            {"id": "b", "images": ["bad.png"], "findings": "Clear."},
            {"id": "c", "images": ["a.png"], "findings": ""},
        ]
    )
    dataset.save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(BadRowError, match=r"ds: dataset\[1\]: field 'images\[0\]'"):
        load_hf_disk(tmp_path / "ds", image_root=tmp_path / "ds_images")
    with caplog.at_level(logging.WARNING):
        rows = load_rows("hf_disk", tmp_path / "ds", "train", on_bad="skip", image_root=tmp_path / "ds_images")
    assert [row["id"] for row in rows] == ["a"]
    assert "skipped 2 bad rows" in warnings_from(caplog)[0]


def test_hf_disk_undecodable_image_bytes_are_a_bad_row(tmp_path, caplog):
    import io

    import datasets

    good = io.BytesIO()
    Image.new("L", (8, 8)).save(good, format="PNG")
    dataset = datasets.Dataset.from_dict(
        {
            "id": ["a", "b"],
            "image": [{"bytes": good.getvalue(), "path": None}, {"bytes": b"\x89PNG broken", "path": None}],
            "findings": ["Clear.", "Clear."],
        },
        features=datasets.Features(
            {"id": datasets.Value("string"), "image": datasets.Image(), "findings": datasets.Value("string")}
        ),
    )
    dataset.save_to_disk(str(tmp_path / "ds"))
    with caplog.at_level(logging.WARNING):
        rows = load_hf_disk(tmp_path / "ds", on_bad="skip")
    assert [row["id"] for row in rows] == ["a"] and isinstance(rows[0]["images"][0], Image.Image)
    assert "dataset[1]" in warnings_from(caplog)[0]


# --- dispatch ---------------------------------------------------------------------------------------------------


def test_load_rows_rejects_unknown_format(tmp_path):
    assert set(LOADERS) == {"r2gen", "mimic_cxr_jpg", "jsonl", "hf_disk"}
    with pytest.raises(
        ValueError, match="unknown data format 'csv'; valid formats: r2gen, mimic_cxr_jpg, jsonl, hf_disk"
    ):
        load_rows("csv", tmp_path)


def test_load_rows_rejects_unknown_options(tmp_path):
    write_r2gen_iu(tmp_path)
    with pytest.raises(
        ValueError, match=r"unknown option\(s\) \['view'\] for data format 'mimic_cxr_jpg'; valid: .*views"
    ):
        load_rows("mimic_cxr_jpg", tmp_path, "train", view=("PA",))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['image_root'\] for data format 'r2gen'"):
        load_rows("r2gen", tmp_path, "train", image_root=tmp_path)
    assert len(load_rows("r2gen", tmp_path, "train", check_images=False, on_bad="skip")) == 2


def test_validated_rows_survive_a_datasets_round_trip(tmp_path):
    """Rows a loader returns can be saved with datasets and loaded back unchanged (labels with differing keys)."""
    import datasets

    write_r2gen_iu(tmp_path / "r2gen")
    rows = load_r2gen(tmp_path / "r2gen", "train")
    rows[0]["labels"] = {"Edema": -1}
    rows[1]["labels"] = {"Cardiomegaly": 1, "Support Devices": 1}
    rows[1]["indication"] = "Dyspnea."
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    assert load_hf_disk(tmp_path / "ds") == rows


def test_mimic_cxr_jpg_metadata_gaps(tmp_path):
    write_mimic_cxr_jpg(tmp_path)
    # Drop the metadata of one study: its images have no view (UNKNOWN) and no date (no prior report).
    metadata = tmp_path / "mimic-cxr-2.0.0-metadata.csv"
    kept = [line for line in metadata.read_text().splitlines() if "53189527" not in line]
    metadata.write_text("\n".join(kept) + "\n")
    rows = {
        row["id"]: row for row in load_mimic_cxr_jpg(tmp_path, "train", on_bad="skip", views=None, prior_report=True)
    }
    assert rows["s53189527"]["views"] == ["UNKNOWN"] and rows["s53189527"]["prior_report"] is None
    # Without StudyDate there is no order of studies to take a prior from.
    write_csv(
        metadata, ["dicom_id", "subject_id", "study_id", "ViewPosition"], [("d-pa", "10000032", "50414267", "PA")]
    )
    with pytest.raises(ValueError, match="prior_report needs the StudyDate column"):
        load_mimic_cxr_jpg(tmp_path, "train", prior_report=True)
