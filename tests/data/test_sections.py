import pytest

from himed.data.sections import (
    completion_text,
    extract_lenient,
    parse_strict,
    reference_text,
    render_target,
    validate_sections,
)

GOOD = "<think>heart wide</think>\n<finding>The heart is enlarged.</finding>\n<impression>Cardiomegaly.</impression>"


def test_strict_parse_accepts_exact_format():
    assert parse_strict(GOOD) == {
        "think": "heart wide",
        "finding": "The heart is enlarged.",
        "impression": "Cardiomegaly.",
    }


@pytest.mark.parametrize(
    "text",
    [
        "prefix " + GOOD,  # text outside the tags
        GOOD.replace("<think>heart wide</think>\n", ""),  # missing think
        GOOD + "<impression>again</impression>",  # duplicated tag
        "<finding>a</finding><think>b</think><impression>c</impression>",  # wrong order
        GOOD.replace("Cardiomegaly.", "  "),  # empty impression
        GOOD.replace("The heart is enlarged.", "x <impression>y</impression>"),  # nested tag
        "",
    ],
)
def test_strict_parse_rejects(text):
    assert parse_strict(text) is None


def test_think_may_be_empty_and_findings_only_sections():
    assert parse_strict("<think></think><finding>Clear lungs.</finding><impression>Normal.</impression>")
    findings_only = "<think>x</think><finding>Clear lungs.</finding>"
    assert parse_strict(findings_only, ["think", "finding"]) == {"think": "x", "finding": "Clear lungs."}
    assert parse_strict(findings_only) is None


def test_lenient_extraction():
    assert extract_lenient(GOOD) == "The heart is enlarged. Cardiomegaly."
    # Broken format: think block removed, stray tags deleted, no tag name leaks.
    broken = "<think>reasoning here</think> The heart <finding>is big.</impression> extra"
    assert extract_lenient(broken) == "The heart is big. extra"
    assert extract_lenient("<think>never closed, all dropped") == ""
    assert extract_lenient("no tags at all") == "no tags at all"


def test_render_target_round_trips():
    target = render_target("Lungs are clear.", "No acute disease.", think="normal study")
    assert parse_strict(target) == {
        "think": "normal study",
        "finding": "Lungs are clear.",
        "impression": "No acute disease.",
    }
    with pytest.raises(ValueError, match="empty 'impression'"):
        render_target("Lungs are clear.", "")
    assert parse_strict(render_target("Lungs clear.", sections=["think", "finding"]), ["think", "finding"])


def test_validate_sections_errors():
    with pytest.raises(ValueError, match="unknown section"):
        validate_sections(["think", "findings"])
    with pytest.raises(ValueError, match="order"):
        validate_sections(["finding", "think"])


def test_completion_text_and_reference():
    messages = [{"role": "assistant", "content": [{"type": "text", "text": "<finding>a</finding>"}]}]
    assert completion_text(messages) == "<finding>a</finding>"
    assert completion_text([{"role": "assistant", "content": "plain"}]) == "plain"
    assert reference_text("Findings here.", "") == "Findings here."
    assert reference_text(" F. ", " I. ") == "F. I."
