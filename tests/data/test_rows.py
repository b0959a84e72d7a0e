import logging
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from himed.clinical.observations import CHEXBERT_OBSERVATIONS
from himed.data.rows import (
    UNKNOWN_VIEW,
    BadRowError,
    RowSkips,
    split_report,
    validate_row,
)


def write_png(path, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, color=128).save(path)
    return path


def write_truncated_png(path):
    write_png(path, size=(32, 32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def good_row(tmp_path, **changes):
    row = {
        "id": "CXR1",
        "images": [str(write_png(tmp_path / "a.png")), str(write_png(tmp_path / "b.png"))],
        "views": ["pa", " lateral "],
        "findings": "The heart is\n  normal.",
        "impression": "No acute disease.",
        "labels": {"Cardiomegaly": 0.0, "Edema": None},
    }
    row.update(changes)
    return row


def test_validate_row_normalizes(tmp_path):
    row = validate_row(good_row(tmp_path), where="f.jsonl:1")
    assert row["id"] == "CXR1"
    assert row["views"] == ["PA", "LATERAL"]
    assert row["findings"] == "The heart is normal."  # whitespace runs collapsed
    assert row["impression"] == "No acute disease."
    assert row["indication"] is None and row["prior_report"] is None
    # None values dropped, floats made ints, No Finding added by the DESIGN.md rule.
    assert row["labels"] == {"Cardiomegaly": 0, "No Finding": 1}
    assert all(os.path.isabs(path) for path in row["images"])
    assert set(row) == {"id", "images", "views", "findings", "impression", "indication", "prior_report", "labels"}


def test_defaults_and_relative_paths(tmp_path):
    write_png(tmp_path / "imgs" / "x.png")
    row = validate_row(
        {"id": 7, "images": ["x.png"], "findings": "Clear.", "labels": None},
        where="w",
        image_root=tmp_path / "imgs",
    )
    assert row["id"] == "7"
    assert row["images"] == [str(tmp_path / "imgs" / "x.png")]
    assert row["views"] == [UNKNOWN_VIEW]
    assert row["impression"] == ""
    assert row["labels"] == {}  # absent labels are "not known", not "no finding"


def test_pil_images_are_accepted(tmp_path):
    image = Image.new("RGB", (4, 4))
    row = validate_row({"id": "x", "images": [image], "findings": "Clear."}, where="w")
    assert row["images"] == [image]


def test_report_is_split_when_sections_are_absent(tmp_path):
    row = validate_row(
        good_row(tmp_path, findings=None, impression=None) | {"report": "Heart normal. IMPRESSION: Normal."},
        where="w",
    )
    assert (row["findings"], row["impression"]) == ("Heart normal.", "Normal.")


@pytest.mark.parametrize(
    "report, findings, impression, indication",
    [
        ("The heart is normal. Lungs are clear.", "The heart is normal. Lungs are clear.", "", None),
        (
            "FINAL REPORT\n EXAMINATION: CHEST (PA AND LAT)\n\n INDICATION: ___ with cough\n\n"
            " COMPARISON: None.\n\n FINDINGS:\n The heart is normal.\n\n IMPRESSION:\n No acute process.",
            "The heart is normal.",
            "No acute process.",
            "___ with cough",
        ),
        ("Heart normal. IMPRESSION: Normal chest.", "Heart normal.", "Normal chest.", None),
        ("findings: lungs clear\nimpression: normal", "lungs clear", "normal", None),
        # A colon in an ordinary sentence is not a header.
        ("Findings of note: none. Lungs clear.", "Findings of note: none. Lungs clear.", "", None),
        ("IMPRESSION: Cardiomegaly.", "", "Cardiomegaly.", None),
        ("FINDINGS AND IMPRESSION: No acute process.", "No acute process.", "", None),
        (
            "COMPARISON: ___.\nFINDINGS: Clear.\nIMPRESSIONS: Normal.\nRECOMMENDATION(S): None.",
            "Clear.",
            "Normal.",
            None,
        ),
    ],
)
def test_split_report(report, findings, impression, indication):
    assert split_report(report) == (findings, impression, indication)


@pytest.mark.parametrize(
    "changes, field, reason",
    [
        ({"images": "a.png"}, "images", "wrong_type"),
        ({"images": []}, "images", "missing_field"),
        ({"images": [3]}, "images[0]", "wrong_type"),
        ({"findings": 5}, "findings", "wrong_type"),
        ({"findings": "  ", "impression": ""}, "findings", "empty_report"),
        ({"findings": "", "impression": "Cardiomegaly."}, "findings", "empty_findings"),
        ({"labels": {"Cardiomegaly": 2}}, "labels", "bad_labels"),
        ({"labels": {"Heart Attack": 1}}, "labels", "bad_labels"),
        ({"labels": [1, 0]}, "labels", "wrong_type"),
        ({"views": ["PA"]}, "views", "wrong_type"),
        ({"views": "PA"}, "views", "wrong_type"),
        ({"indication": 3}, "indication", "wrong_type"),
        ({"id": None}, "id", "missing_field"),
        ({"id": ["x"]}, "id", "wrong_type"),
    ],
)
def test_bad_rows_name_where_and_field(tmp_path, changes, field, reason):
    with pytest.raises(BadRowError) as caught:
        validate_row(good_row(tmp_path, **changes), where="data.jsonl:12")
    error = caught.value
    assert (error.field, error.reason) == (field, reason)
    assert str(error).startswith(f"data.jsonl:12: field {field!r}")


def test_missing_fields(tmp_path):
    row = good_row(tmp_path)
    del row["findings"], row["impression"]
    with pytest.raises(BadRowError, match="field 'findings': missing"):
        validate_row(row, where="w")
    row = good_row(tmp_path)
    del row["images"]
    with pytest.raises(BadRowError, match="field 'images': missing"):
        validate_row(row, where="w")
    with pytest.raises(BadRowError, match="expected an object"):
        validate_row(["not", "a", "row"], where="w")


def test_missing_and_corrupt_images(tmp_path):
    missing = good_row(tmp_path, images=[str(tmp_path / "nope.png")], views=None)
    with pytest.raises(BadRowError, match="nope.png") as caught:
        validate_row(missing, where="w")
    assert caught.value.reason == "missing_image"
    # Without the check the path is taken as given.
    assert validate_row(missing, where="w", check_images=False)["images"] == [str(tmp_path / "nope.png")]

    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    truncated = write_truncated_png(tmp_path / "truncated.png")
    for path in (garbage, truncated):
        with pytest.raises(BadRowError) as caught:
            validate_row(good_row(tmp_path, images=[str(path)], views=None), where="w")
        assert caught.value.reason == "corrupt_image" and str(path) in str(caught.value)


def test_row_skips_policy(tmp_path, caplog):
    items = [
        ("f:1", good_row(tmp_path)),
        ("f:2", good_row(tmp_path, findings="", impression="")),
        ("f:3", good_row(tmp_path, images="x")),
        ("f:4", good_row(tmp_path, id="CXR2")),
        ("f:5", good_row(tmp_path)),  # duplicate id CXR1
    ]
    with pytest.raises(BadRowError, match="f:2"):
        RowSkips("error", source="f").collect(items)

    skips = RowSkips("skip", source="f")
    with caplog.at_level(logging.WARNING, logger="himed.data.rows"):
        rows = skips.collect(items)
    assert [row["id"] for row in rows] == ["CXR1", "CXR2"]
    assert skips.total == 3
    assert dict(skips.counts) == {"empty_report": 1, "wrong_type": 1, "duplicate_id": 1}
    summary = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(summary) == 1
    assert "skipped 3 bad rows" in summary[0] and "f:2" in summary[0] and "duplicate_id: 1" in summary[0]


def test_row_skips_without_skips_logs_nothing(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="himed.data.rows"):
        RowSkips("skip", source="f").collect([("f:1", good_row(tmp_path))])
    assert not caplog.records


def test_on_bad_must_be_known():
    with pytest.raises(ValueError, match="error, skip"):
        RowSkips("drop", source="f")


_WORDS = st.lists(
    st.sampled_from(["heart", "normal", "lungs", "clear.", "no", "effusion", "size:", "\n", "1."]), min_size=1
)


@given(findings=_WORDS.map(" ".join), impression=_WORDS.map(" ".join))
def test_split_report_recovers_headed_sections(findings, impression):
    sections = split_report(f"INDICATION: cough\nFINDINGS: {findings}\nIMPRESSION: {impression}")
    assert sections == (" ".join(findings.split()), " ".join(impression.split()), "cough")


@given(
    views=st.lists(st.sampled_from(["pa", "AP", "lateral", "", None, "ap  axial"]), min_size=1, max_size=3),
    labels=st.dictionaries(st.sampled_from(CHEXBERT_OBSERVATIONS), st.sampled_from([1, 0, -1, 1.0, None])),
    impression=st.sampled_from(["", "Normal.", " two\nlines "]),
)
def test_validated_row_is_a_fixed_point(views, labels, impression):
    """Validating a validated row changes nothing, so rows can be re-checked after any round trip."""
    images = [Image.new("L", (2, 2)) for _ in views]
    row = {"id": "x", "images": images, "views": views, "findings": " a\n b ", "impression": impression}
    once = validate_row(row | {"labels": labels}, where="w")
    assert validate_row(once, where="w") == once
    assert all(view == view.upper().strip() and view for view in once["views"])
