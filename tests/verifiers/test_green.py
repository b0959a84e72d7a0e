"""GREEN: the package's parsing and score on hand-made answers, and the judge end to end on the scripted server."""

import re

import pytest

from himed.verifiers.green import (
    GREEN_PROMPT_HASH,
    GreenAnalysis,
    GreenJudge,
    green,
    green_prompt,
    parse_green,
)
from himed.verifiers.prompt import JudgementError

ANSWER = """[Explanation]:
The candidate reports a left effusion that the reference places on the right, and misses the cardiomegaly.

[Clinically Significant Errors]:
(a) False report of a finding in the candidate: 0.
(b) Missing a finding present in the reference: 1. Cardiomegaly
(c) Misidentification of a finding's anatomic location/position: 1. Left instead of right effusion
(d) Misassessment of the severity of a finding: 0.
(e) Mentioning a comparison that isn't in the reference: 0.
(f) Omitting a comparison detailing a change from a prior study: 2. Stable effusion; unchanged lines

[Clinically Insignificant Errors]:
(a) False report of a finding in the candidate: 1. Mild atelectasis

[Matched Findings]:
3. No pneumothorax; clear upper lobes; normal mediastinum
"""


def test_parse_green_reads_the_counts_and_scores_as_the_paper():
    analysis = parse_green(ANSWER)
    assert analysis == GreenAnalysis(matched=3, significant=(0, 1, 1, 0, 0, 2), insignificant=(1, 0, 0, 0, 0, 0))
    # GREEN eq. 1 by hand: 3 matched / (3 matched + 1 + 1 + 2 significant errors).
    assert analysis.score == pytest.approx(3 / 7)
    assert analysis.parts()["significant_errors"] == 4.0 and analysis.parts()["significant/missing_comparison"] == 2.0


def test_parse_green_edge_cases_follow_the_package():
    none_found = "[Clinically Significant Errors]:\nNo errors.\n\n[Matched Findings]:\n2. a; b\n"
    assert parse_green(none_found).score == 1.0
    # Nothing matched: the package scores 0, even with no error at all.
    nothing = "[Clinically Significant Errors]:\nNo errors.\n\n[Matched Findings]:\nNo matched findings.\n"
    assert parse_green(nothing) == GreenAnalysis(0, (0,) * 6, (0,) * 6) and parse_green(nothing).score == 0.0
    numbered = "[Clinically Significant Errors]:\n(1) x: 2.\n(6) y: 1.\n\n[Matched Findings]:\n1. z\n"
    assert parse_green(numbered).significant == (2, 0, 0, 0, 0, 1)
    assert parse_green("<think>[Matched Findings]: 9.</think>" + none_found).matched == 2


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "The candidate is mostly right.",
        "[Clinically Significant Errors]:\nNo errors.\n",  # no matched section
        "[Matched Findings]:\n2. a; b\n",  # no significant section
        "[Clinically Significant Errors]:\nNo errors.\n\n[Matched Findings]:\ntwo findings\n",  # no count
    ],
)
def test_unusable_answers_raise_instead_of_scoring_zero(text):
    with pytest.raises(JudgementError) as caught:
        parse_green(text)
    assert caught.value.kind == "parse"


def test_prompt_is_the_package_text_with_reports_cut_to_300_words():
    prompt = green_prompt("Right effusion.", "Left effusion.")
    assert prompt.startswith("Objective: Evaluate the accuracy of a candidate radiology report")
    assert "2. Reference Report:\n    Right effusion.\n\n    3. Candidate Report:\n    Left effusion.\n" in prompt
    assert "\n    f) Omitting a comparison detailing a change from a prior study.\n    Note:" in prompt
    long = green_prompt(" ".join(f"w{i}" for i in range(400)), "x")
    assert "w299" in long and "w300" not in long
    assert len(GREEN_PROMPT_HASH) == 16


_CANDIDATE = re.compile(r"3\. Candidate Report:\n    (.*?)\n\n    4\.", re.DOTALL)


def scripted_answer(user: str) -> str:
    """A GREEN-format answer that depends on the candidate: 'effusion' matches, 'left' is a location error."""
    candidate = _CANDIDATE.search(user).group(1)
    matched = candidate.count("effusion")
    location = candidate.count("left")
    return (
        "[Explanation]:\nscripted\n\n[Clinically Significant Errors]:\n"
        f"(a) False report of a finding in the candidate: 0.\n(c) Misidentification: {location}. side\n\n"
        f"[Matched Findings]:\n{matched}. effusion\n"
    )


@pytest.fixture
def green_server(judge_server):
    judge_server.answer_text = scripted_answer
    return judge_server


def make_judge(server, **kwargs):
    return GreenJudge(
        base_url=server.url, model="green-test", timeout=5.0, batch_deadline=20.0, backoff_base=0.01, backoff_max=0.02,
        **kwargs,
    )  # fmt: skip


def test_green_judge_scores_pairs_with_the_green_prompt(green_server, api_key):
    judge = make_judge(green_server)
    pairs = [("right effusion", "right effusion"), ("left effusion", "right effusion"), ("no finding", "effusion")]
    results = judge.score_batch_sync(pairs)
    assert [r.score for r in results] == [1.0, pytest.approx(1 / 2), 0.0]
    # The pairs are sent concurrently, so the server may see them in any order.
    bodies = [request["body"] for request in green_server.requests]
    assert all("response_format" not in b and b["temperature"] == 0.0 and b["max_tokens"] == 1024 for b in bodies)
    prompts = sorted(body["messages"][0]["content"] for body in bodies)
    assert prompts == sorted(green_prompt(reference, candidate) for candidate, reference in pairs)
    assert all(body["messages"][0]["role"] == "user" and len(body["messages"]) == 1 for body in bodies)
    # Cached: the same pairs again cost no request.
    count = green_server.count
    assert [r.score for r in judge.score_batch_sync(pairs)] == [1.0, pytest.approx(1 / 2), 0.0]
    assert green_server.count == count
    assert judge.describe()["judge/backend"] == "green"
    judge.close()


def test_malformed_answer_is_retried_then_none(green_server, api_key):
    judge = make_judge(green_server, max_retries=2)
    green_server.queue.extend(["malformed"])  # first attempt unusable, the retry answers
    assert judge.score_batch_sync([("right effusion", "effusion")])[0].score == 1.0
    assert judge.metrics()["judge/retries"] == 1
    green_server.rules["always broken"] = "malformed"
    assert judge.score_batch_sync([("always broken effusion", "effusion")]) == [None]
    metrics = judge.metrics()
    assert metrics["judge/failures/parse"] == 1 and metrics["judge/retries"] == 3
    judge.close()


def test_green_metric_means_over_scored_pairs_and_never_writes_zero_for_failures(green_server, api_key):
    green_server.rules["broken"] = "malformed"
    options = {"base_url": green_server.url, "model": "green-test", "max_retries": 0, "timeout": 5.0}
    corpus, analyses, info = green(["right effusion", "left effusion", "broken"], ["effusion"] * 3, **options)
    assert analyses[2] is None and info["unscored_pairs"] == 1
    assert corpus["green"] == pytest.approx((1.0 + 0.5) / 2)
    assert corpus["green_errors_location"] == pytest.approx(0.5)
    corpus, analyses, info = green(["broken"], ["effusion"], **options)
    assert corpus == {} and analyses == [None]


def test_green_reward(green_server, api_key):
    from himed.rewards.registry import build_reward

    reward, info = build_reward("green", {"judge": {"base_url": green_server.url, "model": "green-test",
                                                    "max_retries": 0}})  # fmt: skip
    assert info.level == "high"
    green_server.rules["broken"] = "malformed"
    completions = ["<finding>left effusion</finding><impression>effusion</impression>", "", "broken"]
    rows = reward.score_completions(completions, reference=["effusion"] * 3)
    assert rows[0]["value"] == pytest.approx(2 / 3) and rows[0]["matched"] == 2.0
    assert rows[1]["value"] == 0.0  # an empty report: nothing matched, no request
    assert rows[2]["value"] is None
    assert green_server.count == 2
    with pytest.raises(ValueError, match="base_url"):
        build_reward("green", {"judge": {"model": "x"}})
    reward.close()


def test_green_cache_file_survives_a_new_judge(green_server, api_key, tmp_path):
    judge = make_judge(green_server, cache_path=str(tmp_path / "green.sqlite"))
    first = judge.score_batch_sync([("left effusion", "effusion")])
    judge.close()
    count = green_server.count
    again = make_judge(green_server, cache_path=str(tmp_path / "green.sqlite"))
    assert again.score_batch_sync([("left effusion", "effusion")]) == first
    assert green_server.count == count and again.metrics()["judge/cache_hits"] == 1
    again.close()


def test_green_judge_pickles_for_multi_process_runs(green_server, api_key):
    import pickle

    judge = make_judge(green_server)
    copy = pickle.loads(pickle.dumps(judge))
    assert isinstance(copy.cache, type(judge.cache)) and copy.prompt_hash == judge.prompt_hash
    assert copy.score_batch_sync([("right effusion", "effusion")])[0].score == 1.0
    copy.close()
    judge.close()


def test_green_reward_raises_a_missing_api_key_and_scores_other_failures_none(green_server, monkeypatch):
    from himed.rewards.registry import build_reward
    from himed.verifiers.base import JudgeConfigError

    monkeypatch.delenv("HIMED_TEST_GREEN_KEY", raising=False)
    reward, _ = build_reward(
        "green", {"judge": {"base_url": green_server.url, "model": "green-test", "api_key_env": "HIMED_TEST_GREEN_KEY"}}
    )
    completions = ["<finding>left effusion</finding><impression>effusion</impression>"]
    with pytest.raises(JudgeConfigError, match="HIMED_TEST_GREEN_KEY"):
        reward.score_completions(completions, reference=["effusion"])
    # Any other error of a batch (here: no reference column) is scored None, as for every reward.
    assert reward.score_completions(completions) == [{"value": None}]
    reward.close()
