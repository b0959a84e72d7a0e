"""The one JSONL reader: values by line number, blank lines skipped, every problem named ``path:line``."""

import pytest

from himed.data.jsonl import JsonlLineError, read_json, read_jsonl


def _write(tmp_path, *lines):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_values_come_with_their_line_numbers_and_blank_lines_are_skipped(tmp_path):
    path = _write(tmp_path, '{"a": 1}', "", "   ", '{"b": "é"}')
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (4, {"b": "é"})]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"in.jsonl:2: not valid JSON \(.* at column 2\)"),
        ("[1, 2]", "in.jsonl:2: expected a JSON object, got list"),
    ],
)
def test_a_bad_line_raises_naming_path_and_line(tmp_path, line, message):
    path = _write(tmp_path, '{"ok": true}', line, '{"never": "read"}')
    with pytest.raises(JsonlLineError, match=message) as error:
        list(read_jsonl(path))
    assert (error.value.number, error.value.where) == (2, f"{path}:2")


def test_errors_can_be_yielded_in_place_and_non_objects_allowed(tmp_path):
    path = _write(tmp_path, "[1]", "{bad", '"text"')
    values = list(read_jsonl(path, objects=False, errors="yield"))
    assert values[0] == (1, [1]) and values[2] == (3, "text")
    assert isinstance(values[1][1], JsonlLineError) and values[1][1].problem.startswith("not valid JSON")
    with pytest.raises(ValueError, match="errors must be"):
        list(read_jsonl(path, errors="skip"))


def test_read_json_returns_the_value_and_names_a_bad_file(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"a": [1, 2]}', encoding="utf-8")
    bad.write_text('{"a": ', encoding="utf-8")
    assert read_json(good) == {"a": [1, 2]}
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        read_json(bad)
