"""04_grpo.py's maths and loop, on the CPU with a tiny randomly initialised model: the details where GRPO code goes
wrong (KL and ratio at step 0, zero-variance groups, clip sides, micro-batching, padding, EOS) and exact resume."""
import contextlib
import importlib
import json
import math
import re

import peft
import pytest
import torch

import rollout_server
import verify_lib

grpo = importlib.import_module("04_grpo")


# ---- the maths ----
def test_group_advantages_worked_example():
    adv = grpo.group_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), group_size=2)
    assert torch.allclose(adv, torch.tensor([1 / math.sqrt(2), -1 / math.sqrt(2), 0.0, 0.0]), atol=1e-5)


@pytest.mark.parametrize("norm", ["group", "none"])
def test_equal_rewards_give_zero_advantage(norm):
    adv = grpo.group_advantages(torch.tensor([0.5] * 4 + [0.0] * 4), group_size=4, norm=norm)
    assert torch.isfinite(adv).all() and torch.equal(adv, torch.zeros(8))


def test_an_answer_without_a_reward_is_left_out_of_its_group():
    """[1, 1, failed, 1]: the three equal answers get 0, not the +0.5 a made-up 0 would give; other groups unchanged."""
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    valid = torch.tensor([True, True, False, True, True, True, True, True])
    adv = grpo.group_advantages(rewards, group_size=4, valid=valid)
    assert adv[:4].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert torch.allclose(adv[4:], grpo.group_advantages(rewards[4:], group_size=4))
    assert grpo.group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0]), 4, valid=torch.tensor(
        [True, False, False, False])).tolist() == [0.0] * 4     # fewer than two valid answers: no advantage


def test_metrics_count_only_answers_with_a_reward():
    results = [verify_lib.RewardResult(score=s, mode="product", hard=[], hard_score=1.0, verdict=None,
                                       judge_skipped="no judge") for s in (1.0, 1.0, None, 1.0)]
    rewards, valid = torch.tensor([1.0, 1.0, 0.0, 1.0]), torch.tensor([True, True, False, True])
    rollout = grpo.Rollout(torch.ones(4, 5), torch.ones(4, 5), torch.ones(4, 3), torch.zeros(4, dtype=torch.bool), [""] * 4)
    m = grpo.reward_metrics(results, rewards, valid, rollout, 4)
    assert (m["reward_mean"], m["reward_std"], m["zero_variance_groups"]) == (1.0, 0.0, 1.0)


def test_one_answer_per_prompt_is_refused_at_the_command_line(capsys):
    with pytest.raises(SystemExit):
        grpo.parse_args(["--num-generations", "1"])
    assert "at least 2" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--steps", "-1"], "--steps -1: must be at least 1"),
    (["--save-every", "0"], "--save-every 0: must be at least 1"),
    (["--max-prompts", "-5"], "--max-prompts -5: must be at least 0"),
    (["--beta", "nan"], "--beta nan: must be at least 0"),
    (["--lr=-1e-6"], "--lr -1e-06: must be above 0"), (["--temperature", "0"], "--temperature 0.0: must be above 0")])
def test_a_number_out_of_range_is_refused_at_the_command_line(flags, message, capsys):
    with pytest.raises(SystemExit):
        grpo.parse_args(flags)
    assert message in capsys.readouterr().err


def test_dr_grpo_advantage_is_not_divided_by_the_std():
    adv = grpo.group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), group_size=4, norm="none")
    assert torch.allclose(adv, torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_k3_matches_the_formula_on_a_hand_made_example():
    logp, ref = torch.tensor([math.log(0.5), math.log(0.2)]), torch.tensor([math.log(0.25), math.log(0.2)])
    expected = 0.5 - math.log(0.5) - 1  # exp(ref - logp) - (ref - logp) - 1 with ref - logp = log(0.5)
    assert torch.allclose(grpo.kl_k3(logp, ref), torch.tensor([expected, 0.0]))
    assert (grpo.kl_k3(torch.randn(100), torch.randn(100)) >= 0).all()


def test_token_logprobs_use_the_sampling_temperature():
    logits, tokens = torch.randn(2, 3, 11), torch.randint(0, 11, (2, 3))
    expected = torch.log_softmax(logits / 0.7, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(grpo.token_logprobs(logits, tokens, 0.7), expected)


@pytest.mark.parametrize("advantage, ratio, clipped_side, gradient_flows", [
    (+1.0, 1.5, "high", False),   # A > 0: gains beyond 1 + eps_high are cut
    (+1.0, 0.5, None, True),      # A > 0 and ratio fell: no clip, the gradient pushes it back up
    (-1.0, 0.5, "low", False),    # A < 0: moves below 1 - eps are cut
    (-1.0, 1.5, None, True),      # A < 0 and ratio rose: no clip, the gradient pushes it back down
    (+1.0, 1.1, None, True),      # inside the trust region
])
def test_the_clip_acts_on_the_right_side(advantage, ratio, clipped_side, gradient_flows):
    logp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    loss, r, low, high = grpo.clipped_policy_loss(logp, torch.zeros(1, 1), torch.tensor([advantage]), 0.2, 0.28)
    loss.sum().backward()
    assert torch.allclose(r, torch.tensor([[ratio]]))
    assert (low.item(), high.item()) == (clipped_side == "low", clipped_side == "high")
    assert (logp.grad.abs().item() > 0) == gradient_flows


def test_aggregate_loss_modes_on_a_hand_made_batch():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert grpo.aggregate_loss(per_token, mask, "token_mean", 2, 4, 3).item() == pytest.approx(10 / 4)
    assert grpo.aggregate_loss(per_token, mask, "seq_mean_token_mean", 2, 4, 3).item() == pytest.approx((2 + 4) / 2)
    assert grpo.aggregate_loss(per_token, mask, "seq_sum_const", 2, 4, 3).item() == pytest.approx(10 / 6)


def test_eos_is_trained_and_what_follows_it_is_not():
    eos = 2  # SmolLM2 pads with its EOS id, so only the first EOS counts
    mask, truncated = grpo.completion_mask_from(torch.tensor([[9, eos, eos, eos], [eos, 9, 9, 9], [9, 9, 9, 9]]), [eos])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
    assert truncated.tolist() == [False, False, True]


def test_an_answer_ends_at_whichever_stop_id_comes_first():
    mask, truncated = grpo.completion_mask_from(torch.tensor([[9, 7, 9, 2], [9, 9, 9, 9]]), [2, 7])   # Qwen: two ids
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]] and truncated.tolist() == [False, True]


def test_engine_answers_that_cannot_be_trusted_are_refused():
    good = {"index": 0, "token_ids": [5, 2], "logprobs": {"token_logprobs": [-1.0, -0.5]}, "finish_reason": "stop"}
    assert rollout_server.checked_choice(good, [2], 8, "u") == {"token_ids": [5, 2], "logprobs": [-1.0, -0.5],
                                                       "truncated": False}
    for broken, why in [({"finish_reason": "length"}, "finish_reason 'length' with last token 2"),
                        ({"token_ids": [5, 6]}, "finish_reason 'stop' with last token 6"),
                        ({"logprobs": {"token_logprobs": [-1.0]}}, "no log-prob for every sampled token"),
                        ({"logprobs": None}, "no log-prob"),
                        ({"token_ids": []}, "token_ids"),
                        ({"token_ids": list(range(9))}, "token_ids"),
                        ({"finish_reason": "abort"}, "finish_reason 'abort'")]:
        with pytest.raises(rollout_server.RolloutServerError, match=f"rollout server u: malformed answer 0: {why}"):
            rollout_server.checked_choice({**good, **broken}, [2], 8, "u")


def test_a_rollout_server_that_is_down_is_named_before_anything_loads(tmp_path, capsys):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"   # nothing listens once the socket closes
    rows = [{"id": "a", "prompt": "Say hi.", "soft": [], "hard": [{"id": "punctuation:no_comma", "kwargs": {}}]}]
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(SystemExit, match=rf"rollout server {url} did not answer /models .*serve_policy.sh"):
        grpo.main(["--data", str(data), "--out-dir", str(tmp_path / "run"), "--rollout-url", url])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, message", [
    (["--rollout-url", "http://x/v1", "--init-adapter", "sft"], "merge the SFT adapter first"),
    (["--tis-cap", "2"], "--tis-cap corrects for an engine's sampling: it needs --rollout-url")])
def test_flags_that_do_not_go_together_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit):
        grpo.parse_args(flags)
    assert message in capsys.readouterr().err


# ---- the model ----
@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    args = grpo.parse_args(["--model", str(tiny_model_dir), "--lora-r", "4", "--lora-alpha", "8"])
    torch.manual_seed(0)
    model, tokenizer = grpo.build_policy(args)
    return model, tokenizer, args


@contextlib.contextmanager
def nonzero_adapter(model, std=0.05):
    """A non-zero LoRA B for one test (the seeded draw comes from the caller's RNG); the module's fresh adapter and
    empty gradients are restored whatever the test does."""
    saved = {name: p.detach().clone() for name, p in model.named_parameters() if "lora_B" in name}
    try:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in saved:
                    p.normal_(0, std)
        yield model
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in saved:
                    p.copy_(saved[name])
        model.zero_grad(set_to_none=True)


def sample_batch(tokenizer, n=8, length=12, pad=(0, 3, 1, 0, 2, 0, 1, 3)):
    """Left-padded sequences: pad[i] pads, then a 3-token 'prompt' region; the last 6 positions are the answer."""
    torch.manual_seed(1)
    ids = torch.randint(10, 1000, (n, length))
    attn = torch.ones(n, length, dtype=torch.long)
    for i in range(n):
        ids[i, :pad[i % len(pad)]] = tokenizer.pad_token_id
        attn[i, :pad[i % len(pad)]] = 0
    loss_mask = torch.ones(n, 6, dtype=torch.long)
    loss_mask[0, 4:] = 0
    loss_mask[5, 2:] = 0
    rollout = grpo.Rollout(ids, attn, attn[:, -6:], torch.zeros(n, dtype=torch.bool), [""] * n)   # n_prompt = length - 6
    return rollout, torch.linspace(-1, 1, n), loss_mask


def test_a_fresh_lora_gives_exactly_zero_kl_and_a_ratio_of_one(policy):
    model, tokenizer, args = policy
    r, advantages, _ = sample_batch(tokenizer)
    with torch.no_grad():
        logp = grpo.sequence_logprobs(model, r.input_ids, r.attention_mask, r.n_prompt, 1.0)
        with model.disable_adapter():
            ref = grpo.sequence_logprobs(model, r.input_ids, r.attention_mask, r.n_prompt, 1.0)
    assert torch.equal(grpo.kl_k3(logp, ref), torch.zeros_like(logp))
    _, ratio, _, _ = grpo.clipped_policy_loss(logp, logp.detach(), advantages, 0.2, 0.2)
    assert torch.equal(ratio, torch.ones_like(ratio))


def test_equal_rewards_with_zero_beta_give_zero_gradient(policy):
    model, tokenizer, args = policy
    r, _, loss_mask = sample_batch(tokenizer)
    model.zero_grad(set_to_none=True)
    grpo.accumulate_gradients(model, r, torch.zeros(8), loss_mask, [], [], grpo.UpdateSettings(beta=0))
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.count_nonzero(g) == 0 for g in grads)


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean", "seq_sum_const"])
def test_four_micro_batches_give_the_full_batch_gradient(policy, loss_agg):
    model, tokenizer, _ = policy
    r, advantages, loss_mask = sample_batch(tokenizer)
    with nonzero_adapter(model):                   # so that the KL term has a gradient too
        with torch.no_grad(), model.disable_adapter():
            ref_full = grpo.sequence_logprobs(model, r.input_ids, r.attention_mask, r.n_prompt, 1.0)
        grads = []
        for size in (8, 2):
            settings = grpo.UpdateSettings(micro_batch_size=size, loss_agg=loss_agg, beta=0.1, max_new_tokens=6)
            refs = [ref_full[c] for c in grpo.micro_batches(8, size)]
            model.zero_grad(set_to_none=True)
            grpo.accumulate_gradients(model, r, advantages, loss_mask, refs, [], settings)
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
    assert grads[0].abs().max() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_a_non_finite_loss_stops_before_the_optimizer_step(policy):
    model, tokenizer, args = policy
    rollout, advantages, loss_mask = sample_batch(tokenizer)
    advantages[3] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    with pytest.raises(grpo.NonFiniteError, match="loss nan"):
        grpo.policy_update(model, optimizer, scheduler, rollout, advantages, loss_mask, grpo.UpdateSettings.of(args))
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items()) and optimizer.state == {}


def test_logprobs_do_not_change_with_left_padding(policy):
    model, tokenizer, _ = policy
    seq = torch.randint(10, 1000, (1, 9))
    rows = []
    for pads in (0, 1, 4):
        ids = torch.cat([torch.full((1, pads), tokenizer.pad_token_id), seq], dim=1)
        attn = torch.cat([torch.zeros(1, pads, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], dim=1)
        with torch.no_grad():
            rows.append(grpo.sequence_logprobs(model, ids, attn, ids.shape[1] - 4, 1.0))
    assert torch.allclose(rows[0], rows[1], atol=1e-5) and torch.allclose(rows[0], rows[2], atol=1e-5)


def test_running_each_distinct_prompt_once_gives_the_same_logprobs_and_gradient(policy):
    model, tokenizer, _ = policy
    torch.manual_seed(0)   # the same draw whichever tests ran before
    prompts = torch.randint(10, 1000, (2, 7))
    prompts[1, :3] = tokenizer.pad_token_id                           # the second prompt is left-padded
    ids = torch.cat([prompts.repeat_interleave(4, dim=0), torch.randint(10, 1000, (8, 5))], dim=1)   # 2 groups of 4
    attn = torch.ones_like(ids)
    attn[4:, :3] = 0
    results = []
    with nonzero_adapter(model):                   # so that the prompt's keys and values carry a gradient
        for share in (False, True):
            model.zero_grad(set_to_none=True)
            forward = grpo.shared_prompt_logprobs if share else grpo.sequence_logprobs
            logp = forward(model, ids, attn, 7, 1.0)                                               # [8, 5]
            (logp * torch.linspace(-1, 1, 8).unsqueeze(1)).sum().backward()
            results.append((logp.detach(),
                            torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])))
    (logp_full, grad_full), (logp_shared, grad_shared) = results
    assert torch.allclose(logp_full, logp_shared, atol=1e-5)
    # float32 sums in another order: equal to a few parts in a million of the gradient's scale (seen: 3e-6)
    scale = grad_full.abs().max()
    assert scale > 0 and (grad_full - grad_shared).abs().max() <= 1e-5 * scale


# ---- the loop ----
@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    rows = [{"id": f"ex{i}", "prompt": prompt, "soft": [],
             "hard": [{"id": "punctuation:no_comma", "kwargs": {}},
                      {"id": "length_constraints:number_words", "kwargs": {"num_words": 6, "relation": "less than"}}]}
            for i, prompt in enumerate(["Say hi.", "Name a colour.", "Count to three.", "Greet a friend."])]
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(verify_lib.load_examples(path)) == 4
    return path


def run(tiny_model_dir, train_file, out_dir, *extra):
    grpo.main(["--model", str(tiny_model_dir), "--data", str(train_file), "--out-dir", str(out_dir),
               "--prompts-per-step", "2", "--num-generations", "4", "--max-new-tokens", "8", "--lr", "1e-2",
               "--micro-batch-size", "4", "--lora-r", "4", "--save-every", "100", *extra])
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_metrics(rows_a, rows_b):
    """The same rows, timings aside, up to a relative 1e-5: GEMMs on freshly allocated buffers (the shared prompts'
    keys and values) may differ in the last bits between two runs of the same program on the CPU (seen: 4e-6 on a KL
    of 0.0026). A resume that lost RNG, optimizer or data state changes samples, rewards or KL far more than that."""
    assert len(rows_a) == len(rows_b)
    for a, b in zip(rows_a, rows_b):
        keys = {k for k in a if not k.startswith("seconds_")}
        assert keys == {k for k in b if not k.startswith("seconds_")}
        for k in keys:
            same = (math.isnan(a[k]) and math.isnan(b[k])) or math.isclose(a[k], b[k], rel_tol=1e-5, abs_tol=1e-9)
            assert same, (a["step"], k, a[k], b[k])


def test_two_steps_then_resume_two_steps_equals_four_steps(tiny_model_dir, train_file, tmp_path):
    straight = run(tiny_model_dir, train_file, tmp_path / "a", "--steps", "4")
    run(tiny_model_dir, train_file, tmp_path / "b", "--steps", "2")
    resumed = run(tiny_model_dir, train_file, tmp_path / "b", "--steps", "4", "--resume")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert_same_metrics(resumed, straight)
    assert (tmp_path / "b/adapter/adapter_model.safetensors").exists() and (tmp_path / "b/curves.png").exists()
    assert len((tmp_path / "b/samples.jsonl").read_text().splitlines()) == 4 * (2 + 2)   # 2 first, worst, best
    expected = {"reward_mean", "reward_std", "kl", "clip_low", "clip_high", "grad_norm", "zero_variance_groups",
                "length_mean", "truncated_share", "pass/punctuation", "pass/length_constraints", "seconds_generate"}
    assert expected <= set(straight[0])


# ---- hacking made visible, and the anchors' remedies (issue: learning that lasts) ----
def test_hacking_metrics_see_runs_of_forms_and_repeated_answers():
    assert grpo.repeats_a_run("<<a title>> <<a title>> <<a title>>") and grpo.repeats_a_run("P.S. P.S. P.S. P.S. ok")
    assert not grpo.repeats_a_run("The cat sat on the mat, and the dog sat on the rug.")   # 2 of "sat on the", not 3
    assert grpo.distinct_2(["a b c", "d e f"]) == 1.0 and grpo.distinct_2(["a b a b a b"]) == 2 / 5
    assert math.isnan(grpo.distinct_2(["one", ""]))                  # no bigram at all: undefined, not 0 or 1


def test_metrics_rows_carry_the_hacking_signs_and_samples_the_worst_and_best(tiny_model_dir, train_file, tmp_path):
    rows = run(tiny_model_dir, train_file, tmp_path, "--steps", "2", "--log-samples", "1")
    assert {"repeat_share", "distinct_2", "truncated_share", "pass/punctuation:no_comma",
            "pass/length_constraints:number_words"} <= set(rows[0])
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [s["which"] for s in samples] == ["first", "worst", "best"] * 2
    for step in (1, 2):
        worst, best = (next(s["reward"] for s in samples if s["step"] == step and s["which"] == w)
                       for w in ("worst", "best"))
        assert worst <= best


def test_truncated_reward_replaces_the_score_of_cut_answers(tiny_model_dir, train_file, tmp_path):
    """A random tiny model rarely stops within 8 tokens: most answers are cut and then earn exactly -5."""
    rows = run(tiny_model_dir, train_file, tmp_path, "--steps", "1", "--truncated-reward", "-5")
    cut = rows[0]["truncated_share"]
    assert cut > 0
    assert -5 * cut - 1e-6 <= rows[0]["reward_mean"] <= -5 * cut + (1 - cut) + 1e-6
    with pytest.raises(SystemExit):
        grpo.parse_args(["--truncated-reward", "0", "--mask-truncated"])


def test_hard_reduce_all_pays_only_answers_that_pass_every_check(tiny_model_dir, train_file, tmp_path):
    run(tiny_model_dir, train_file, tmp_path, "--steps", "2", "--hard-reduce", "all", "--log-samples", "8")
    rewards = {json.loads(line)["reward"] for line in (tmp_path / "samples.jsonl").read_text().splitlines()}
    assert rewards <= {0.0, 1.0}
    mean_run = run(tiny_model_dir, train_file, tmp_path / "mean", "--steps", "2", "--log-samples", "8")
    assert mean_run[0]["hard_score_mean"] >= 0       # the default still averages (the 0.5s are checked in
    assert grpo.parse_args([]).hard_reduce == "mean"  # test_reward.py's verif_reward tests)


def test_selection_keeps_the_best_held_out_step_and_its_adapter_measures_as_logged(tiny_model_dir, train_file,
                                                                                    tmp_path):
    run(tiny_model_dir, train_file, tmp_path, "--steps", "3", "--select-every", "2", "--select-data", str(train_file))
    rows = [json.loads(line) for line in (tmp_path / "selection.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2, 3]                    # the base, every 2 steps, and the last step
    chosen = json.loads((tmp_path / "selected/selection.json").read_text())
    best = max(rows, key=lambda r: (r["prompt_level"], r["instruction_level"], -r["step"]))
    assert chosen["step"] == best["step"] and chosen["prompt_level"] == best["prompt_level"]
    # the selected adapter, loaded afresh, answers the held-out prompts exactly as measured at its step
    base, tokenizer = verify_lib.load_model(tiny_model_dir)
    model = peft.PeftModel.from_pretrained(base, tmp_path / "selected")
    examples = verify_lib.load_examples(train_file)
    again = grpo.heldout_pass_rate(model, tokenizer, None, examples, verify_lib.stop_token_ids(model, tokenizer),
                                   chosen["step"], max_new_tokens=8)
    assert (again["prompt_level"], again["instruction_level"]) == (chosen["prompt_level"], chosen["instruction_level"])


def test_a_resume_names_the_flags_that_differ_from_the_run(tiny_model_dir, train_file, tmp_path, capsys):
    run(tiny_model_dir, train_file, tmp_path, "--steps", "1", "--setting", "lasting", "--select-every", "0")
    capsys.readouterr()
    run(tiny_model_dir, train_file, tmp_path, "--steps", "2", "--resume")          # --setting lasting forgotten
    err = capsys.readouterr().err
    assert "--resume with flags other than the run's" in err
    assert "--beta 0.001 (the run: 0.01)" in err and "--truncated-reward None (the run: 0.0)" in err
    assert "--steps 2 (the run: 1)" in err and "--resume" not in err.split("config.json):")[1]
    run(tiny_model_dir, train_file, tmp_path, "--steps", "3", "--setting", "lasting", "--select-every", "0",
        "--resume")
    assert "--beta" not in capsys.readouterr().err                     # the same flags: only --steps is named


def test_selection_survives_a_resume(tiny_model_dir, train_file, tmp_path):
    flags = ("--select-every", "1", "--select-data", str(train_file))
    straight = run(tiny_model_dir, train_file, tmp_path / "a", "--steps", "4", *flags)
    run(tiny_model_dir, train_file, tmp_path / "b", "--steps", "2", *flags)
    resumed = run(tiny_model_dir, train_file, tmp_path / "b", "--steps", "4", "--resume", *flags)
    assert_same_metrics(resumed, straight)
    a, b = ([json.loads(line) for line in (tmp_path / run_dir / "selection.jsonl").read_text().splitlines()]
            for run_dir in ("a", "b"))
    assert [(r["step"], r["prompt_level"], r["instruction_level"]) for r in a] == [
        (r["step"], r["prompt_level"], r["instruction_level"]) for r in b]
    assert (json.loads((tmp_path / "a/selected/selection.json").read_text())["step"]
            == json.loads((tmp_path / "b/selected/selection.json").read_text())["step"])


# ---- one behaviour: refused at the command line, failures in one line, the docstring true ----
def test_judge_only_without_a_judge_is_refused_before_anything_loads(capsys):
    with pytest.raises(SystemExit):
        grpo.parse_args(["--reward-mode", "judge_only"])
    assert "--reward-mode judge_only: the judge gives the whole reward, it needs --judge-url" in capsys.readouterr().err


def test_the_docstring_settings_table_is_settings():
    """Each number of the docstring's table (steps, prompts, G, new tokens, learning rate, KL, the reward of a cut
    answer, selection) equals SETTINGS'."""
    rows = {"steps": "steps", "prompts per step": "prompts_per_step", "num generations G": "num_generations",
            "max new tokens": "max_new_tokens", "learning rate": "lr", "KL beta": "beta",
            "cut answer reward": "truncated_reward", "select every": "select_every"}
    header = next(line for line in grpo.__doc__.splitlines() if line.strip().startswith("cpu (default)"))
    settings = [column.split()[0] for column in re.split(r"\s{2,}", header.strip())]
    assert settings == list(grpo.SETTINGS)
    for line in grpo.__doc__.splitlines():
        label, *columns = re.split(r"\s{2,}", line.strip())
        if label in rows:
            values = [None if column.startswith("none") else float(column.split()[0]) for column in columns]
            assert values == [grpo.SETTINGS[name][rows[label]] for name in settings], label
            rows.pop(label)
    assert not rows                                                  # every row was found


def test_a_judge_that_fails_mid_run_ends_the_run_in_one_line_naming_the_step(tiny_model_dir, tmp_path, serve):
    """The judge answers /models (the check passes) but never gives a verdict: step 1 stops with the step, the reason
    and how to resume, not a traceback."""
    from scripted_server import chat_reply
    judge = serve(lambda prompt, n: (200, chat_reply("I cannot decide.")))
    rows = [{"id": f"ex{i}", "prompt": p, "soft": ["Be friendly."], "hard": []}
            for i, p in enumerate(["Say hi.", "Greet a friend."])]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit) as stop:
        grpo.main(["--model", str(tiny_model_dir), "--data", str(data), "--out-dir", str(tmp_path / "run"),
                   "--judge-url", judge.url, "--steps", "2", "--prompts-per-step", "2", "--num-generations", "2",
                   "--max-new-tokens", "4", "--only-constraints"])
    message = str(stop.value.code)
    assert message.startswith("04_grpo.py: step 1: ") and "judge calls failed" in message
    assert "holds steps up to 0" in message and "--resume" in message


def test_merge_writes_base_plus_the_trained_adapter(tiny_model_dir, train_file, tmp_path):
    run(tiny_model_dir, train_file, tmp_path, "--steps", "2", "--merge")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tmp_path / "merged").iterdir()}
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.no_grad():
        base, _ = verify_lib.load_model(tiny_model_dir)
        expected = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()(input_ids=ids).logits
        got = verify_lib.load_model(tmp_path / "merged")[0](input_ids=ids).logits
        plain = verify_lib.load_model(tiny_model_dir)[0](input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert (plain - expected).abs().max() > 1e-4                   # two steps at lr 1e-2 did change the model


def test_a_missing_data_file_says_how_to_make_it(tiny_model_dir, tmp_path):
    with pytest.raises(SystemExit, match="01_build_data.py"):
        grpo.main(["--model", str(tiny_model_dir), "--data", str(tmp_path / "none.jsonl"), "--out-dir", str(tmp_path)])


def test_the_paper_setting_fills_unset_sizes():
    args = grpo.parse_args(["--setting", "paper", "--lr", "3e-6"])
    assert (args.prompts_per_step, args.num_generations, args.max_new_tokens, args.lr) == (32, 16, 4096, 3e-6)
    assert (args.beta, args.eps, args.eps_high, args.temperature, args.num_iterations) == (1e-3, 0.2, 0.2, 1.0, 1)


def test_the_heldout_setting_trains_on_every_prompt_and_constraint_kind_at_128_tokens():
    args = grpo.parse_args(["--setting", "heldout"])
    assert (args.steps, args.prompts_per_step, args.num_generations, args.max_new_tokens, args.lr) == (32, 8, 8, 128, 5e-4)
    assert (args.only_constraints, args.max_prompts) == ((), 0)
    assert grpo.parse_args(["--setting", "heldout", "--steps", "3"]).steps == 3
    assert grpo.parse_args([]).steps == 15


def test_the_lasting_setting_is_run_e_and_explicit_flags_win():
    """--setting lasting is docs/lasting's run E: 64 steps, beta 0.01, cut answers paid 0, selection every 8 steps;
    a flag given explicitly wins, --mask-truncated included (it replaces the setting's reward for cut answers)."""
    args = grpo.parse_args(["--setting", "lasting"])
    assert (args.steps, args.max_new_tokens, args.beta, args.truncated_reward) == (64, 128, 0.01, 0.0)
    assert args.select_every == 8
    assert (args.mask_truncated, args.only_constraints, args.data.name) == (False, (), "verif_train.jsonl")
    args = grpo.parse_args(["--setting", "lasting", "--mask-truncated", "--beta", "0.05", "--select-every", "0"])
    assert (args.mask_truncated, args.truncated_reward, args.beta, args.select_every) == (True, None, 0.05, 0)
    assert grpo.parse_args(["--setting", "lasting", "--truncated-reward", "-1"]).truncated_reward == -1
    for setting in ("cpu", "heldout", "paper"):
        args = grpo.parse_args(["--setting", setting])
        assert (args.beta, args.truncated_reward, args.select_every) == (1e-3, None, 0), setting


def test_the_cpu_setting_trains_only_on_short_answer_constraints(tiny_model_dir, tmp_path, capsys):
    rows = [{"id": "short", "prompt": "Say hi.", "soft": [], "hard": [{"id": "punctuation:no_comma", "kwargs": {}}]},
            {"id": "long", "prompt": "Say bye.", "soft": [],
             "hard": [{"id": "punctuation:no_comma", "kwargs": {}},
                      {"id": "startend:end_checker", "kwargs": {"end_phrase": "Bye."}}]}]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    grpo.main(["--model", str(tiny_model_dir), "--data", str(data), "--out-dir", str(tmp_path / "run"), "--steps", "1",
               "--prompts-per-step", "2", "--num-generations", "2", "--max-new-tokens", "4", "--log-samples", "4"])
    assert "training on the 1 of 2 examples" in capsys.readouterr().err
    samples = [json.loads(line) for line in (tmp_path / "run/samples.jsonl").read_text().splitlines()]
    assert {s["prompt"] for s in samples} == {"Say hi."} and sum(s["which"] == "first" for s in samples) == 4
    with pytest.raises(SystemExit, match="no example of"):
        grpo.main(["--model", str(tiny_model_dir), "--data", str(data), "--out-dir", str(tmp_path / "run2"),
                   "--only-constraints", "startend:quotation"])


def test_a_static_rollout_cache_samples_the_same_answers(policy):
    model, tokenizer, _ = policy
    examples = [verify_lib.parse_example({"id": str(i), "prompt": p, "hard": [], "soft": []})
                for i, p in enumerate(["Say hi.", "Name a colour, please."])]
    outs = []
    stop_ids = verify_lib.stop_token_ids(model, tokenizer)
    for cache in ("dynamic", "static"):
        torch.manual_seed(3)
        outs.append(grpo.sample(model, tokenizer, None, examples, stop_ids, 1, n=3, temperature=1.0, max_new_tokens=6,
                                cache=cache))
    for field in ("input_ids", "attention_mask", "completion_mask", "truncated"):
        assert torch.equal(getattr(outs[0], field), getattr(outs[1], field))
    assert outs[0].texts == outs[1].texts


def test_the_gpu_step_benchmark_runs_in_its_small_cpu_shape(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT
    out = subprocess.run([sys.executable, "bench/bench_grpo_step.py", "--small", "--steps", "2", "--rollouts",
                          "dynamic", "static", "--out", str(tmp_path / "bench.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "bench.json").read_text())
    assert [r["rollouts"] for r in result["ours"]] == ["dynamic", "static"]
    for r in result["ours"]:
        assert len(r["steps"]) == 2 and r["mean_generate_tok_per_s_after_first"] > 0
        assert r["steps"][0]["new_tokens"] <= 4 * 4 * 16


# ---- sampling is ours alone ----
def surprise_minus_entropy(model, input_ids, attention_mask, completion_mask, temperature):
    """-log p(sampled token) - H(p) per sampled token, p = softmax(logits / T): mean 0 when tokens are drawn from p."""
    n_prompt = input_ids.shape[1] - completion_mask.shape[1]
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask,
                       position_ids=(attention_mask.cumsum(1) - 1).clamp(min=0)).logits[:, n_prompt - 1:-1]
    logp = (logits / temperature).log_softmax(-1)                                          # [N, L, V]
    sampled = logp.gather(-1, input_ids[:, n_prompt:].unsqueeze(-1)).squeeze(-1)           # [N, L]
    entropy = -(logp.exp() * logp).sum(-1)                                                 # [N, L]
    return (-sampled - entropy)[completion_mask.bool()]


def test_rollouts_sample_plain_temperature_whatever_the_model_s_generation_config(opinionated_model_dir):
    args = grpo.parse_args(["--model", str(opinionated_model_dir), "--num-generations", "32", "--max-new-tokens", "16",
                            "--temperature", "0.8"])
    model, tokenizer = verify_lib.load_model(args.model)
    examples = [verify_lib.parse_example({"id": str(i), "prompt": p, "hard": [], "soft": []})
                for i, p in enumerate(["Say hi.", "Name a colour."])]
    torch.manual_seed(1)
    r = grpo.sample(model, tokenizer, None, examples, verify_lib.stop_token_ids(model, tokenizer), 1, n=32,
                    temperature=0.8, max_new_tokens=16)
    gap = surprise_minus_entropy(model, r.input_ids, r.attention_mask, r.completion_mask, 0.8)   # ~1000 tokens
    assert abs(gap.mean()) < 4 * gap.std() / len(gap) ** 0.5, (gap.mean(), gap.std())
    # The same sampling call on the model as transformers loads it takes its top_k/top_p/penalty: far off.
    raw = type(model).from_pretrained(args.model)
    torch.manual_seed(1)
    n_prompt, ids, attn = r.n_prompt, r.input_ids, r.attention_mask
    out = raw.generate(input_ids=ids[:, :n_prompt], attention_mask=attn[:, :n_prompt], do_sample=True,
                       temperature=0.8, max_new_tokens=16, pad_token_id=tokenizer.pad_token_id)
    raw_mask, _ = grpo.completion_mask_from(out[:, n_prompt:], [tokenizer.eos_token_id])
    raw_gap = surprise_minus_entropy(model, out, torch.cat([attn[:, :n_prompt], raw_mask], 1), raw_mask, 0.8)
    assert raw_gap.mean() < -1.0
