"""verify_lib inside the real engines with the real vLLM judge server that .ci/run starts (CPU build, embedded
SmolLM2-135M): TRL's GRPOTrainer trains two steps on code, IFEval and soft constraints; verl's batch function asks the
judge concurrently (counted at a pass-through proxy in front of the server) and scores as the per-sample function."""
import json
import time

import datasets
import httpx
import pytest
from scripted_server import ScriptedServer
from test_scaleout import ANSWERS, EXAMPLES, PAIRS

import verify_lib

pytestmark = pytest.mark.slow
VERDICT_ONLY = {"structured_outputs": {"regex": r"\[\[[01]\]\]"}}  # vLLM constrains the small judge to a verdict


@pytest.fixture
def proxy(judge_server):
    """A pass-through proxy in front of the real judge server that counts requests and the most in flight."""
    url, _ = judge_server
    upstream = httpx.Client(timeout=600)

    def forward(prompt, n):
        reply = upstream.post(url + "/chat/completions", json=server.bodies[n])
        return reply.status_code, reply.json()

    server = ScriptedServer(forward)
    yield server
    server.close()
    upstream.close()


def test_trl_grpo_trainer_trains_two_steps_on_code_ifeval_and_soft_constraints(tiny_model_dir, judge_server,
                                                                               tmp_path):
    import trl

    url, model = judge_server
    judge = verify_lib.Judge(url, model, max_tokens=8, extra_body=VERDICT_ONLY)
    rows = datasets.Dataset.from_list([verify_lib.trl_row(ex) for ex in EXAMPLES] * 2)  # code, IFEval, soft rows
    config = trl.GRPOConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=6, num_generations=3,
                            max_completion_length=8, learning_rate=1e-4, beta=1e-3, temperature=1.0, use_cpu=True,
                            logging_steps=1, report_to=[], save_strategy="no", seed=0)
    trainer = trl.GRPOTrainer(model=str(tiny_model_dir), args=config, train_dataset=rows,
                              reward_funcs=[verify_lib.trl_reward_func(judge, "average")])  # average: always asks
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert trainer.state.global_step == 2 and len(logged) == 2
    # 4 of the 6 rows are drawn (2 a step), at least 2 of them with soft constraints: >= 6 answers judged
    assert judge.stats["calls"] + judge.stats["cache_hits"] + judge.stats["deduplicated"] >= 6
    assert judge.stats["errors"] == 0
    assert all(0.0 <= entry["reward"] <= 1.0 for entry in logged)


def test_batch_function_asks_the_real_judge_concurrently_with_per_sample_scores(proxy, judge_server, monkeypatch):
    _, model = judge_server
    monkeypatch.setenv("VERIF_JUDGE_URL", proxy.url)
    monkeypatch.setenv("VERIF_JUDGE_MODEL", model)
    monkeypatch.setenv("VERIF_JUDGE_MAX_TOKENS", "8")
    monkeypatch.setenv("VERIF_JUDGE_EXTRA_BODY", json.dumps(VERDICT_ONLY))
    monkeypatch.setenv("VERIF_REWARD_MODE", "average")  # every row with soft constraints is judged
    soft_rows = [(ex, answer) for ex, answer in PAIRS if ex.soft] * 8
    answers = [f"{answer} ({i})" for i, (_, answer) in enumerate(soft_rows)]  # 32 distinct judge prompts
    ground_truths = [json.dumps(ex.to_json()) for ex, _ in soft_rows]
    verify_lib._env_judge.cache_clear()
    try:
        start = time.perf_counter()
        batch = verify_lib.compute_score_batch(["verif"] * len(answers), answers, ground_truths)
        batch_s = time.perf_counter() - start
        batch_requests, batch_in_flight = proxy.requests, proxy.max_in_flight
        proxy.max_in_flight = 0
        verify_lib._env_judge.cache_clear()  # a fresh judge: the per-sample calls are sent, not read from the cache
        start = time.perf_counter()
        single = [verify_lib.compute_score("verif", a, gt) for a, gt in zip(answers, ground_truths)]
        single_s = time.perf_counter() - start
    finally:
        verify_lib._env_judge.cache_clear()
    print(f"judge calls: batch {batch_requests} requests, at most {batch_in_flight} in flight, {batch_s:.1f} s; "
          f"per sample {proxy.requests - batch_requests} requests, at most {proxy.max_in_flight} in flight, "
          f"{single_s:.1f} s")
    assert batch_requests == len(answers) and batch_in_flight >= 16
    assert proxy.max_in_flight == 1
    assert [r["judge_failed"] for r in batch] == [0] * len(answers)
    assert [r["score"] for r in batch] == [r["score"] for r in single]
