import json
import textwrap

import pytest

from himed.cli import main

GOOD = "<think>x</think><finding>The heart is enlarged.</finding><impression>Cardiomegaly.</impression>"
REF = "The heart is enlarged. Cardiomegaly."


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Rewards with parts, failures, async and describe(), written to a module on sys.path."""
    (tmp_path / "score_cli_rewards.py").write_text(
        textwrap.dedent(
            """
            import asyncio

            def flaky(completions, **columns):
                # None ("could not score") for completions that mention "fail".
                return [None if "fail" in str(c) else 0.5 + 0.1 * i for i, c in enumerate(completions)]

            class Judge:
                level = "high"
                weight = 1.0

                def __init__(self):
                    self.requests = 0

                async def score_completions(self, completions, **columns):
                    await asyncio.sleep(0)
                    self.requests += len(completions)
                    return [{"value": 2.0, "accuracy": 1.0, "relevance": 0.5} for _ in completions]

                async def __call__(self, completions, **columns):
                    return [row["value"] for row in await self.score_completions(completions, **columns)]

                def describe(self):
                    return {"requests": self.requests}

            def broken(completions, **columns):
                raise RuntimeError("server down")

            def echo_labels(completions, labels=None, **columns):
                return [float(len(l or {})) for l in labels]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "score_cli_rewards"


def test_scores_parts_total_and_summary(tmp_path, user_module, capsys):
    config = tmp_path / "rewards.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            schedule: {{name: linear, total_steps: 100, alpha_min: 0.1}}
            rewards:
              - {{name: format}}
              - {{name: "{user_module}:flaky", weight: 2.0}}
              - {{name: "{user_module}:Judge", as: semantic}}
            """
        )
    )
    rows = [
        {"id": "a", "completion": GOOD, "reference": REF},
        {"id": 7, "completion": "fail " + GOOD, "findings": "The heart is enlarged.", "impression": "Cardiomegaly."},
        {"completion": [{"role": "assistant", "content": GOOD}], "reference": REF},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "sub" / "out.jsonl"
    assert main(["score", "--config", str(config), "--input", str(source), "--output", str(out), "--step", "50"]) == 0
    lines = read_jsonl(out)
    assert [line.get("id") for line in lines] == ["a", 7, None]
    assert "id" not in lines[2]
    assert lines[0]["format"] == 1.0 and lines[1]["format"] == -1.0 and lines[2]["format"] == 1.0
    assert [line["flaky"] for line in lines] == [0.5, None, pytest.approx(0.7)]
    assert lines[0]["semantic"] == 2.0
    assert lines[0]["semantic/accuracy"] == 1.0 and lines[0]["semantic/relevance"] == 0.5
    assert not any(key.startswith("format/") for key in lines[0])
    # step 50 of 100: alpha_low = alpha_high = 0.5. The failed flaky value takes the file's mean (0.5 + 0.7) / 2.
    low, high = 0.5, 0.5
    assert lines[0]["total"] == pytest.approx(low * (1.0 + 2.0 * 0.5) + high * 2.0)
    assert lines[1]["total"] == pytest.approx(low * (-1.0 + 2.0 * 0.6) + high * 2.0)
    summary = capsys.readouterr().err
    assert "3 completions" in summary and "step 50, impute group_mean" in summary
    assert "failure_rate 0.333" in summary
    assert '{"requests": 3}' in summary


def test_impute_none_leaves_total_null_and_zero_fills_zero(tmp_path, user_module):
    rows = [{"completion": "fail", "reference": REF}, {"completion": GOOD, "reference": REF}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    base = ["score", "--rewards", f"format,{user_module}:flaky", "--input", str(source), "--output", str(out)]
    assert main([*base, "--impute", "none"]) == 0
    assert [line["total"] for line in read_jsonl(out)] == [None, pytest.approx(1.0 + 0.6)]
    assert main([*base, "--impute", "zero"]) == 0
    assert [line["total"] for line in read_jsonl(out)] == [-1.0, pytest.approx(1.6)]
    assert main(base) == 0  # default group_mean: the failed value becomes the mean of the others (0.6)
    assert read_jsonl(out)[0]["total"] == pytest.approx(-1.0 + 0.6)


def test_a_broken_reward_is_null_and_the_others_still_score(tmp_path, user_module, capsys):
    source = write_jsonl(tmp_path / "in.jsonl", [{"completion": GOOD, "reference": REF}])
    out = tmp_path / "out.jsonl"
    assert (
        main(["score", "--rewards", f"format,{user_module}:broken", "--input", str(source), "--output", str(out)]) == 0
    )
    (line,) = read_jsonl(out)
    assert line["format"] == 1.0 and line["broken"] is None
    assert line["total"] == 1.0  # an all-failed group gets 0 for that component
    assert "failure_rate 1.000" in capsys.readouterr().err


def test_other_keys_reach_rewards_as_columns(tmp_path, user_module):
    rows = [
        {"completion": GOOD, "reference": REF, "labels": {"Cardiomegaly": 1, "Edema": 0}},
        {"completion": GOOD, "reference": REF},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    assert main(["score", "--rewards", f"{user_module}:echo_labels", "--input", str(source), "--output", str(out)]) == 0
    assert [line["echo_labels"] for line in read_jsonl(out)] == [2.0, 0.0]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"completion": "a", "reference": "b"}', "{not json"], "in.jsonl:2: not valid JSON"),
        (['["a"]'], "in.jsonl:1: expected a JSON object"),
        (['{"reference": "b"}'], "in.jsonl:1: missing 'completion'"),
        (["", '{"completion": "a"}'], "in.jsonl:2: missing 'reference' (or 'findings'"),
        (['{"completion": "a", "reference": "  "}'], "in.jsonl:1: empty reference"),
        (['{"completion": "a", "findings": "", "impression": ""}'], "in.jsonl:1: empty reference"),
        (['{"completion": 3, "reference": "b"}'], "in.jsonl:1: 'completion' must be a string or a list of messages"),
        (['{"completion": "a", "reference": 5}'], "in.jsonl:1: 'reference' must be a string"),
    ],
)
def test_bad_input_lines_are_named(tmp_path, capsys, lines, message):
    source = write_jsonl(tmp_path / "in.jsonl", lines)
    code = main(["score", "--rewards", "format", "--input", str(source), "--output", str(tmp_path / "o.jsonl")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_bad_arguments(tmp_path, capsys):
    source = write_jsonl(tmp_path / "in.jsonl", [{"completion": "a", "reference": "b"}])
    out = str(tmp_path / "o.jsonl")
    assert main(["score", "--rewards", "nope", "--input", str(source), "--output", out]) == 2
    assert "unknown reward 'nope'" in capsys.readouterr().err
    assert main(["score", "--rewards", "format", "--input", str(tmp_path / "missing.jsonl"), "--output", out]) == 2
    assert "missing.jsonl does not exist" in capsys.readouterr().err
    assert main(["score", "--rewards", "format", "--input", str(source), "--output", out, "--step", "-1"]) == 2
    assert "--step must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["score", "--rewards", "format", "--config", "x.yaml", "--input", str(source), "--output", out])


def test_empty_input_writes_an_empty_file(tmp_path, capsys):
    source = write_jsonl(tmp_path / "in.jsonl", ["", "  "])
    out = tmp_path / "o.jsonl"
    assert main(["score", "--rewards", "format", "--input", str(source), "--output", str(out)]) == 0
    assert out.read_text() == ""
    assert "0 completions" in capsys.readouterr().err


def test_design_section_4_parts_are_written(tmp_path):
    """DESIGN.md section 4 promises at least these part columns for the paper's rewards."""
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "completion": GOOD, "reference": REF}])
    out = tmp_path / "out.jsonl"
    assert (
        main(["score", "--rewards", "token,concept,format,semantic", "--input", str(source), "--output", str(out)]) == 0
    )
    (line,) = read_jsonl(out)
    promised = {f"token/p{n}" for n in range(1, 5)} | {"token/bp", "concept/rouge_l", "concept/meteor", "concept/bonus"}
    promised |= {"semantic/accuracy", "semantic/relevance", "semantic/completeness"}
    assert promised <= set(line)
    assert {"id", "token", "concept", "format", "semantic", "total"} <= set(line)
    # step 0: alpha_low = 1, alpha_high = 0, so the total is the low-level sum.
    assert line["total"] == pytest.approx(line["token"] + line["concept"] + line["format"])
