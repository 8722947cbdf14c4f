"""verify_lib's judge and reward against a real vLLM server (CPU build, embedded SmolLM2-135M), as .ci/run starts it.
The small model judges poorly; these tests assert what must hold whatever it says."""
import re

import httpx
import pytest

import verify_lib
from verify_lib import Judge, parse_example

pytestmark = pytest.mark.slow

VERDICT_ONLY = {"structured_outputs": {"regex": r"\[\[[01]\]\]"}}  # vLLM constrains the answer to a verdict


def served_requests(url: str) -> float:
    """Requests the server has finished, from its Prometheus /metrics."""
    text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^vllm:request_success_total\{[^}]*\} (\S+)$", text, flags=re.M))


def items(n):
    tones = ["friendly", "formal", "sad", "excited"]
    return [(f"Write a one-line note number {i}.", f"Note {i}: see you {'soon!' if i % 2 else 'later.'}",
             [f"The tone is {tones[i % 4]}.", "It mentions a time."]) for i in range(n)]


def test_a_batch_of_64_gets_a_value_or_a_named_error_for_each(judge_server):
    url, model = judge_server
    verdicts = Judge(url, model, max_tokens=24, concurrency=64).verdicts(items(64))
    assert len(verdicts) == 64
    for v in verdicts:
        assert (v.value in (0, 1) and v.error is None) or (v.value is None and v.error)


def test_constrained_output_gives_a_value_for_each(judge_server):
    url, model = judge_server
    verdicts = Judge(url, model, max_tokens=8, extra_body=VERDICT_ONLY).verdicts(items(16))
    assert all(v.value in (0, 1) and v.error is None for v in verdicts)


def test_cache_and_deduplication_avoid_requests_on_the_server(judge_server, tmp_path):
    url, model = judge_server
    batch = items(4) * 3  # 12 items, 4 distinct
    judge = Judge(url, model, max_tokens=8, extra_body=VERDICT_ONLY, cache_path=tmp_path / "cache.jsonl")
    before = served_requests(url)
    first = judge.verdicts(batch)
    assert served_requests(url) - before == 4
    assert judge.verdicts(batch) == first
    again = Judge(url, model, max_tokens=8, extra_body=VERDICT_ONLY, cache_path=tmp_path / "cache.jsonl")
    assert again.verdicts(batch) == first
    assert served_requests(url) - before == 4
    assert (judge.stats["calls"], judge.stats["deduplicated"], judge.stats["cache_hits"]) == (4, 8, 12)


EXAMPLES = [
    parse_example({"id": "a", "prompt": "Say hello without commas, in under 8 words, cheerfully.",
                   "hard": [{"id": "punctuation:no_comma", "kwargs": {}, "text": "Use no commas."},
                            {"id": "length_constraints:number_words", "kwargs": {"num_words": 8,
                                                                                "relation": "less than"}}],
                   "soft": ["The tone is cheerful."]}),
    parse_example({"id": "b", "prompt": "Describe rain in lowercase.", "hard": [
        {"id": "change_case:english_lowercase", "kwargs": {}}], "soft": ["It uses a metaphor.", "It is calm."]}),
    parse_example({"id": "c", "prompt": "Describe rain.", "hard": [], "soft": ["It is calm."]}),
]
RESPONSES = ["Hello there friend!", "Hello, there, my dear friend, how are you today?",
             "rain is the sky's soft applause.", "Rain Falls.", "Rain falls, softly."]


@pytest.mark.parametrize("mode", verify_lib.REWARD_MODES)
def test_reward_modes_give_the_documented_values_with_real_verdicts(judge_server, mode):
    url, model = judge_server
    judge = Judge(url, model, max_tokens=8, extra_body=VERDICT_ONLY)
    examples = [EXAMPLES[0], EXAMPLES[0], EXAMPLES[1], EXAMPLES[1], EXAMPLES[2]]
    results = verify_lib.verif_reward(examples, RESPONSES, judge, mode)
    for r in results:
        passed = [c.passed for c in r.hard]
        h = sum(passed) / len(passed) if passed else 1.0
        J = 1 if r.verdict is None else r.verdict.value
        assert J in (0, 1)
        expected = {"product": h * J, "average": (all(passed) + J) / 2, "rule_only": h, "judge_only": J}[mode]
        assert r.score == expected
        if mode == "product" and h == 0:
            assert r.verdict is None and r.judge_skipped == "hard score is 0"
    if mode != "judge_only":  # judge_only runs no code checks
        assert results[1].hard[0].passed is False  # "Hello, there, ..." has commas


def test_the_served_context_holds_the_default_max_tokens(judge_server):
    """scripts/serve_judge.sh gives the CPU server a context that admits verify_lib.Judge's default max_tokens (4096)
    on top of a judge prompt; vLLM refuses a request that cannot fit (HTTP 400)."""
    url, model = judge_server
    verdicts = Judge(url, model, extra_body=VERDICT_ONLY).verdicts(items(4))
    assert all(v.value in (0, 1) and v.error is None for v in verdicts), [v.error for v in verdicts]
