"""The data of the supervised stages: weighted spans (LLM-RG4), observation examples (DCRRG), flexible inputs."""

from __future__ import annotations

import pytest

from himed.data.examples import observation_dataset, sft_dataset, target_completion, weighted_spans
from himed.data.observations import observation_examples, observation_targets
from himed.data.prompts import INSTRUCTION, build_prompt

ROW = {
    "id": "s1",
    "images": ["a.png", "b.png"],
    "views": ["PA", "LATERAL"],
    "findings": "The heart is enlarged. Small left pleural effusion. No pneumothorax. Bones are intact.",
    "impression": "Cardiomegaly and effusion.",
    "labels": {"Cardiomegaly": 1, "Pleural Effusion": 1, "Pneumothorax": 0, "Edema": 0},
}


def _spans_text(target, spans):
    return [target[start:end] for start, end in spans]


def test_weighted_spans_are_the_positive_and_uncertain_report_sentences():
    target = target_completion(ROW)
    assert target.startswith("<think>Positive: cardiomegaly, pleural effusion.")  # the rationale is never weighted
    assert _spans_text(target, weighted_spans(target)) == [
        "The heart is enlarged.",
        "Small left pleural effusion.",
        "Cardiomegaly and effusion.",
    ]
    uncertain = target_completion({**ROW, "findings": "Possible edema. Lungs are clear."}, ["think", "finding"])
    assert _spans_text(uncertain, weighted_spans(uncertain, ["think", "finding"])) == ["Possible edema."]
    normal = target_completion({**ROW, "findings": "No pneumothorax. No effusion.", "impression": "Normal."})
    assert weighted_spans(normal) == []


def test_sft_dataset_weighted_column_only_when_asked():
    from PIL import Image

    rows = [{**ROW, "images": [Image.new("RGB", (8, 8))] * 2}]
    assert "weighted_spans" not in sft_dataset(rows).column_names
    weighted = sft_dataset(rows, weighted=True)
    target = weighted[0]["completion"][0]["content"]
    assert weighted[0]["weighted_spans"] == weighted_spans(target)


def test_observation_targets_follow_mentions_then_negative_labels():
    targets = observation_targets(ROW)
    assert targets == {
        "Cardiomegaly": "The heart is enlarged. Cardiomegaly and effusion.",
        "Edema": "No edema.",  # not in the text, labeled negative
        "Pleural Effusion": "Small left pleural effusion. Cardiomegaly and effusion.",
    }
    # Not mentioned and not labeled (Atelectasis, Consolidation): no example; all 14 adds the negative mention.
    assert observation_targets(ROW, ["Pneumothorax", "Atelectasis"]) == {"Pneumothorax": "No pneumothorax."}
    # Labeled positive but no matching sentence: nothing is invented.
    assert observation_targets({**ROW, "labels": {"Atelectasis": 1}}, ["Atelectasis"]) == {}


def test_observation_examples_share_the_report_prompt_builder():
    examples = observation_examples({**ROW, "indication": "Cough."})
    assert [e["id"] for e in examples] == ["s1/Cardiomegaly", "s1/Edema", "s1/Pleural Effusion"]
    prompt = examples[2]["prompt"]
    assert [m["role"] for m in prompt] == ["user"]  # a plain-sentence task: no tagged-format system prompt
    content = prompt[0]["content"]
    assert sum(part["type"] == "image" for part in content) == 2
    texts = [part["text"] for part in content if part["type"] == "text"]
    assert texts == [
        "Image 1 (PA view):",
        "\nImage 2 (LATERAL view):",
        "\nIndication: Cough.",
        "\nDescribe the pleural effusion.",
    ]


def test_observation_dataset_rows_and_empty_error():
    from PIL import Image

    row = {**ROW, "images": [Image.new("RGB", (8, 8))] * 2}
    dataset = observation_dataset([row])
    assert dataset["id"] == ["s1/Cardiomegaly", "s1/Edema", "s1/Pleural Effusion"]
    assert dataset[1]["completion"] == [{"role": "assistant", "content": "No edema."}]
    with pytest.raises(ValueError, match="no row"):
        observation_dataset([{**row, "labels": {}, "findings": "Bones intact.", "impression": ""}])


@pytest.mark.parametrize("indication", [None, "Fever."])
@pytest.mark.parametrize("prior", [None, "Prior: small effusion."])
@pytest.mark.parametrize("n_views", [1, 3])
def test_flexible_inputs_one_prompt_builder(indication, prior, n_views):
    """LLM-RG4's input scenarios: 1..n views, with or without indication and prior report."""
    row = {"id": "x", "images": ["i.png"] * n_views, "views": ["PA", "LATERAL", "AP"][:n_views]}
    if indication:
        row["indication"] = indication
    if prior:
        row["prior_report"] = prior
    content = build_prompt(row)[1]["content"]
    texts = [part["text"] for part in content if part["type"] == "text"]
    assert sum(part["type"] == "image" for part in content) == n_views
    assert (f"\nIndication: {indication}" in texts) == bool(indication)
    assert (f"\nPrior report: {prior}" in texts) == bool(prior)
    assert texts[-1] == f"\n{INSTRUCTION}"
    # The observation stage takes the same inputs.
    observation = build_prompt(row, instruction="Describe the edema.")[0]["content"]
    assert [p for p in observation if p["type"] != "text" or "Describe" not in p["text"]] == content[:-1]


def test_hierarchical_turns_join_to_the_full_target():
    from himed.data.examples import hierarchical_examples

    findings, impression = hierarchical_examples(ROW)
    assert findings["target"] + "\n" + impression["target"] == target_completion(ROW)
    assert impression["target"] == "<impression>Cardiomegaly and effusion.</impression>"
    first_request = findings["prompt"][-1]["content"][-1]["text"]
    assert first_request.endswith("<think>brief reasoning</think><finding>findings</finding>")
    # The impression turn sees the images and the findings answer.
    assert impression["prompt"][: len(findings["prompt"])] == findings["prompt"]
    assistant, request = impression["prompt"][len(findings["prompt"]) :]
    assert assistant == {"role": "assistant", "content": [{"type": "text", "text": findings["target"]}]}
    assert request["role"] == "user" and "<impression>" in request["content"][0]["text"]
    assert len(hierarchical_examples({**ROW, "impression": ""})) == 1
    with pytest.raises(ValueError, match="impression section"):
        hierarchical_examples(ROW, sections=["think", "finding"])
