import pytest
from PIL import Image

from himed.data.prompts import build_prompt, rationale_from_labels, system_prompt, tagged_format
from himed.data.sections import FINDINGS_ONLY_SECTIONS, parse_strict


def _row(n_images: int, *, indication=None, prior=None, views=None):
    return {
        "id": "s1",
        "images": [Image.new("L", (4, 4)) for _ in range(n_images)],
        "views": views if views is not None else ["PA", "LATERAL"][:n_images],
        "findings": "Clear.",
        "impression": "",
        "indication": indication,
        "prior_report": prior,
        "labels": {},
    }


def _texts(message):
    return [part["text"].strip() for part in message["content"] if part["type"] == "text"]


def _image_slots(messages):
    return sum(part["type"] == "image" for message in messages for part in message["content"])


@pytest.mark.parametrize("n_images", [1, 2])
@pytest.mark.parametrize("context", [False, True])
def test_prompt_scenarios(n_images, context):
    row = _row(n_images, indication="Cough." if context else None, prior="Old effusion." if context else None)
    messages = build_prompt(row)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert _image_slots(messages) == n_images
    user = messages[1]["content"]
    # Each image slot is preceded by a text part naming its index and view.
    for index, view in enumerate(row["views"], 1):
        slot = [i for i, part in enumerate(user) if part["type"] == "image"][index - 1]
        assert user[slot - 1]["type"] == "text"
        assert user[slot - 1]["text"].strip() == f"Image {index} ({view} view):"
    texts = _texts(messages[1])
    assert ("Indication: Cough." in texts) is context
    assert ("Prior report: Old effusion." in texts) is context
    assert texts[-1] == "Write the report."
    # Indication and prior come after the images and before the instruction.
    if context:
        assert texts.index("Indication: Cough.") < texts.index("Prior report: Old effusion.") < len(texts) - 1


def test_text_parts_carry_their_own_line_breaks():
    """Chat templates concatenate parts, so joined texts must not run together ("Cough.Write the report.")."""
    user = build_prompt(_row(2, indication="Cough.", prior="Old."))[1]["content"]
    joined = "".join(part["text"] if part["type"] == "text" else "<image>" for part in user)
    assert joined == (
        "Image 1 (PA view):<image>\nImage 2 (LATERAL view):<image>\nIndication: Cough.\nPrior report: Old.\n"
        "Write the report."
    )


def test_context_can_be_left_out_and_unknown_view_is_not_named():
    row = _row(2, indication="Cough.", prior="Old.", views=["UNKNOWN", "AP"])
    texts = _texts(build_prompt(row, include_indication=False, include_prior=False)[1])
    assert texts == ["Image 1:", "Image 2 (AP view):", "Write the report."]


def test_system_prompt_asks_for_the_configured_sections():
    assert "<impression>" in system_prompt()
    findings_only = system_prompt(FINDINGS_ONLY_SECTIONS)
    assert "<finding>" in findings_only and "impression" not in findings_only
    # The skeleton shown to the model is itself a strictly parseable completion.
    assert parse_strict(tagged_format()) is not None
    assert parse_strict(tagged_format(FINDINGS_ONLY_SECTIONS), FINDINGS_ONLY_SECTIONS) is not None


def test_without_system_message_the_format_moves_to_the_user():
    messages = build_prompt(_row(1), system=False, sections=FINDINGS_ONLY_SECTIONS)
    assert [m["role"] for m in messages] == ["user"]
    assert _texts(messages[0])[-1].endswith(tagged_format(FINDINGS_ONLY_SECTIONS))


def test_prompt_rejects_rows_it_cannot_slot():
    with pytest.raises(ValueError, match="non-empty list"):
        build_prompt({"id": "x", "images": []})
    with pytest.raises(ValueError, match="2 views for 1 images"):
        build_prompt({"id": "x", "images": ["a.png"], "views": ["PA", "AP"]})


@pytest.mark.slow  # importing trl takes ~25 s on 2 busy cores
def test_prompt_works_with_trl_multimodal_preparation():
    from trl.data_utils import prepare_multimodal_messages

    row = _row(2)
    prepared = prepare_multimodal_messages(build_prompt(row), images=row["images"])
    filled = [part["image"] for part in prepared[1]["content"] if part["type"] == "image"]
    assert filled == row["images"]


def test_rationale_from_labels():
    labels = {"Cardiomegaly": 1, "Pleural Effusion": 1, "Edema": -1, "Pneumothorax": 0}
    assert (
        rationale_from_labels(labels)
        == "Positive: cardiomegaly, pleural effusion. Uncertain: edema. Negative: pneumothorax."
    )
    assert rationale_from_labels({"No Finding": 1, "Pneumothorax": 0}) == "No acute findings. Negative: pneumothorax."
    # Devices alone are not an acute finding (the No Finding rule).
    assert rationale_from_labels({"Support Devices": 1, "No Finding": 1}) == (
        "No acute findings. Positive: support devices."
    )
    assert rationale_from_labels({}) == ""
    assert rationale_from_labels(labels, include_negative=False) == (
        "Positive: cardiomegaly, pleural effusion. Uncertain: edema."
    )
