"""verif_reward: the four modes give the documented values, the judge is asked only when it matters, failures are
marked and never scored; the verl and TRL adapters take the argument shapes those libraries pass."""
import json

import pytest
from scripted_server import ScriptedServer, chat_reply, quoted_response

import verify_lib
from verify_lib import Judge, parse_example

NO_COMMA = {"id": "punctuation:no_comma", "kwargs": {}, "text": "Use no commas."}
SHORT = {"id": "length_constraints:number_words", "kwargs": {"num_words": 6, "relation": "less than"},
         "text": "Answer in fewer than 6 words."}
EXAMPLE = parse_example({"id": "e", "prompt": "Greet me. Use no commas, fewer than 6 words, a friendly tone.",
                         "hard": [NO_COMMA, SHORT], "soft": ["The tone is friendly."]})
NO_SOFT = parse_example({"id": "h", "prompt": "Greet me without commas.", "hard": [NO_COMMA], "soft": []})
NO_HARD = parse_example({"id": "s", "prompt": "Greet me warmly.", "hard": [], "soft": ["The tone is warm."]})


def scripted_judge(prompt, n):
    """[[1]] when the quoted response contains GOOD, [[0]] otherwise; HTTP 500 when it contains BROKEN, 400 for REFUSED."""
    response = quoted_response(prompt)
    if "BROKEN" in response:
        return 500, "boom"
    if "REFUSED" in response:
        return 400, "bad request"
    return 200, chat_reply("[[1]] ok" if "GOOD" in response else "[[0]] no")


@pytest.fixture
def server():
    s = ScriptedServer(scripted_judge)
    yield s
    s.close()


@pytest.fixture
def judge(server):
    return Judge(server.url, "judge", retries=0, backoff_s=0.01)


# (response, h = share of hard passed, H = all hard passed, J = judge verdict)
CASES = [
    ("GOOD day friend", 1.0, 1.0, 1),              # everything satisfied
    ("GOOD day, friend", 0.5, 0.0, 1),             # a comma: one of two hard checks fails
    ("Go away now", 1.0, 1.0, 0),                  # hard fine, judge says no
    ("Go away, you, now, please, just, go", 0.0, 0.0, 0),  # all hard fail
]


@pytest.mark.parametrize("response, h, H, J", CASES)
@pytest.mark.parametrize("mode", verify_lib.REWARD_MODES)
def test_each_mode_gives_its_documented_value(judge, mode, response, h, H, J):
    (result,) = verify_lib.verif_reward([EXAMPLE], [response], judge, mode)
    expected = {"product": h * J, "average": (H + J) / 2, "rule_only": h, "judge_only": float(J)}[mode]
    assert result.score == expected
    if mode != "judge_only":
        assert result.hard_score == h
        assert [c.name for c in result.hard] == ["punctuation:no_comma", "length_constraints:number_words"]


def test_product_mode_does_not_ask_the_judge_when_the_hard_score_is_zero(judge, server):
    results = verify_lib.verif_reward([EXAMPLE] * 2, ["Go away, you, now, please, just, go", "GOOD day friend"],
                                      judge, "product")
    assert [r.score for r in results] == [0.0, 1.0]
    assert results[0].verdict is None and results[0].judge_skipped == "hard score is 0"
    assert server.requests == 1
    assert verify_lib.reward_summary(results)["judge_skipped_hard_zero"] == 1


def test_average_mode_asks_the_judge_even_when_hard_checks_fail(judge, server):
    (result,) = verify_lib.verif_reward([EXAMPLE], ["Go away, you, now, please, just, GOOD"], judge, "average")
    assert result.score == 0.5 and server.requests == 1


def test_no_soft_constraints_means_no_judge_call_and_the_hard_score(judge, server):
    results = verify_lib.verif_reward([NO_SOFT] * 2, ["Hello friend", "Hello, friend"], judge, "product")
    assert [r.score for r in results] == [1.0, 0.0]
    assert all(r.judge_skipped == "no soft constraints" for r in results[:1]) and server.requests == 0


def test_no_hard_constraints_means_the_judge_alone(judge):
    results = verify_lib.verif_reward([NO_HARD] * 2, ["GOOD morning, dear", "Morning"], judge, "product")
    assert [(r.score, r.hard_score, r.hard) for r in results] == [(1.0, 1.0, []), (0.0, 1.0, [])]


def test_without_a_judge_soft_constraints_are_skipped_and_said_so():
    (result,) = verify_lib.verif_reward([EXAMPLE], ["Go away now"], None, "product")
    assert result.score == 1.0 and result.verdict is None and result.judge_skipped == "no judge"
    with pytest.raises(ValueError, match="needs a judge"):
        verify_lib.verif_reward([EXAMPLE], ["x"], None, "judge_only")


def test_judge_only_reads_the_text_of_hard_constraints_too(judge, server):
    verify_lib.verif_reward([EXAMPLE], ["GOOD day friend"], judge, "judge_only")
    assert "1. The tone is friendly.\n2. Use no commas.\n3. Answer in fewer than 6 words." in server.prompts[0]


def test_only_the_text_after_the_last_think_is_verified(judge, server):
    (result,) = verify_lib.verif_reward([EXAMPLE], ["<think>Plan: be brief, kind, warm.</think>GOOD day friend"],
                                        judge, "product")
    assert result.score == 1.0
    assert "Plan" not in quoted_response(server.prompts[0])


def test_a_failed_judge_call_gives_no_score_and_too_many_raise(judge):
    responses = ["BROKEN day friend"] + ["GOOD day friend"] * 9
    results = verify_lib.verif_reward([EXAMPLE] * 10, responses, judge, "product", max_judge_failure_share=0.1)
    assert results[0].score is None and results[0].verdict.error.startswith("HTTP 500")
    assert [r.score for r in results[1:]] == [1.0] * 9
    assert verify_lib.reward_summary(results)["judge_failed"] == 1
    with pytest.raises(verify_lib.JudgeError, match="2 of 10 judge calls failed"):
        verify_lib.verif_reward([EXAMPLE] * 10, ["BROKEN a", "BROKEN b"] + responses[1:9], judge, "product")


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown reward mode"):
        verify_lib.verif_reward([EXAMPLE], ["x"], None, "sum")
    with pytest.raises(ValueError, match="1 examples but 2 responses"):
        verify_lib.verif_reward([EXAMPLE], ["x", "y"])


def test_reward_summary_reports_means_and_judge_counts(judge):
    results = verify_lib.verif_reward([EXAMPLE] * 4, [c[0] for c in CASES], judge, "product")
    summary = verify_lib.reward_summary(results)
    assert summary["reward_mean"] == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    assert summary["hard_score_mean"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert summary["judge_asked"] == 3 and summary["judge_pass_rate"] == pytest.approx(2 / 3)


# ---- adapters ----
def test_verl_compute_score_takes_verls_arguments(server, monkeypatch):
    monkeypatch.setenv("VERIF_JUDGE_URL", server.url)
    monkeypatch.setenv("VERIF_JUDGE_MODEL", "judge")
    verify_lib._env_judge.cache_clear()
    try:
        ground_truth = json.dumps(EXAMPLE.to_json())
        out = verify_lib.compute_score(data_source="verif", solution_str="<think>hmm, ok</think>GOOD day, friend",
                                       ground_truth=ground_truth, extra_info={"split": "train", "index": 3})
        assert out == {"score": 0.5, "hard_score": 0.5, "judge": 1, "judge_failed": 0}
        out = verify_lib.compute_score("verif", "REFUSED day friend", EXAMPLE.to_json())
        assert out == {"score": 0.0, "hard_score": 1.0, "judge": -1, "judge_failed": 1}
    finally:
        verify_lib._env_judge.cache_clear()


def test_verl_compute_score_without_a_judge_uses_the_hard_checks(monkeypatch):
    monkeypatch.delenv("VERIF_JUDGE_URL", raising=False)
    verify_lib._env_judge.cache_clear()
    out = verify_lib.compute_score("verif", "Hello, friend", json.dumps(NO_SOFT.to_json()), None)
    assert out["score"] == 0.0 and out["judge"] == -1 and out["judge_failed"] == 0


def test_trl_reward_func_takes_conversational_batches(judge):
    reward = verify_lib.trl_reward_func(judge, "product")
    prompts = [[{"role": "user", "content": EXAMPLE.prompt}]] * 3
    completions = [[{"role": "assistant", "content": c}] for c in ("GOOD day friend", "GOOD day, friend", "BROKEN x")]
    scores = reward(prompts=prompts, completions=completions, hard=[EXAMPLE.hard] * 3, soft=[EXAMPLE.soft] * 3,
                    completion_ids=[[1, 2, 3]] * 3, trainer_state=None)
    assert scores == [1.0, 0.5, None]
    assert reward.__name__ == "verif_product"


def test_trl_reward_func_takes_plain_strings():
    reward = verify_lib.trl_reward_func(None, "rule_only")
    assert reward(["Greet me."] * 2, ["Hi friend", "Hi, friend"], hard=[[NO_COMMA]] * 2, soft=[[], []]) == [1.0, 0.0]


def test_hard_reduce_all_is_the_released_codes_all_or_nothing(judge, server):
    results = verify_lib.verif_reward([EXAMPLE] * 2, ["GOOD day, friend", "GOOD day friend"], judge, "product",
                                      hard_reduce="all")
    assert [(r.score, r.hard_score) for r in results] == [(0.0, 0.0), (1.0, 1.0)]
    assert results[0].judge_skipped == "hard score is 0" and server.requests == 1
