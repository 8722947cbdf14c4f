"""04_grpo.py — GRPO with LoRA, written out in plain PyTorch, on the VerIF reward.

    python 04_grpo.py                                   # CPU demo: the embedded SmolLM2-135M on data/verif_train.jsonl
    python 04_grpo.py --setting paper --model PATH --judge-url http://127.0.0.1:8000/v1   # VerIF's sizes, on a GPU

One step: take P prompts, sample G answers to each (temperature T and nothing else), score every answer with
verify_lib.verif_reward (hard constraints by code, soft ones by the judge), turn rewards into group advantages, and
update a LoRA adapter on the clipped policy-gradient loss with a k3 KL penalty to the reference model (the same model
with the adapter switched off). Read it top down: the arguments, main() (the loop), then the step's functions in the
order main() calls them — sample, group_advantages, policy_update and the loss it is made of — and an appendix of
plumbing (its flags: a section after parse_args, skipped on a first reading). What a run writes: the end of --help.

Settings (`--setting`, any flag given explicitly wins):
                      cpu (default)       heldout (CPU)       lasting (CPU)       paper (VerIF, GPUs)
  steps               15                  32                  64                  15 (set yours)
  prompts per step    8                   8                   8                   32
  num generations G   8                   8                   8                   16
  max new tokens      48                  128                 128                 4096
  learning rate       5e-4 (LoRA)         5e-4 (LoRA)         5e-4 (LoRA)         1e-6 (all weights)
  KL beta             1e-3                1e-3                0.01                1e-3
  cut answer reward   none (scored)       none (scored)       0 (TULU 3)          none (scored)
  select every        0 (off)             0 (off)             8 (held-out split)  0 (off)
  training prompts    8 short-answer      all, in rotation    all, in rotation    all
cpu (~12 min): the reward rises on 8 prompts seen again and again. heldout (~70 min on a rollout server): IFEval and
IFBench measure it. lasting (~110 min there): 64 steps without loops or cut answers, the best held-out step kept.
Always: T = 1.0, clip eps = 0.2, k3 KL in the loss, one update per rollout batch, token-mean loss.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import random
import re
import shutil
import sys
import time
from pathlib import Path

import rollout_server
import verify_lib

HERE = Path(__file__).resolve().parent          # default paths are beside this script, from any working directory

_HELDOUT = {"steps": 32, "prompts_per_step": 8, "num_generations": 8, "max_new_tokens": 128, "lr": 5e-4,
            "only_constraints": (), "max_prompts": 0, "beta": 1e-3, "truncated_reward": None, "select_every": 0}
SETTINGS = {"cpu": {**_HELDOUT, "steps": 15, "max_new_tokens": 48, "max_prompts": 8,
                    "only_constraints": verify_lib.SHORT_ANSWER_CONSTRAINTS},
            "heldout": _HELDOUT,
            "lasting": {**_HELDOUT, "steps": 64, "beta": 0.01, "truncated_reward": 0.0, "select_every": 8},
            "paper": {**_HELDOUT, "steps": 15, "prompts_per_step": 32, "num_generations": 16, "max_new_tokens": 4096,
                      "lr": 1e-6}}


# ---- arguments: the method's flags here; the plumbing's (data, optimizer, model, judge, rollouts, run) below ----
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog=OUTPUTS, formatter_class=verify_lib.HelpFormatter)
    p.add_argument("--setting", choices=SETTINGS, default="cpu",
                   help="values for unset flags: the cpu demo, the heldout or lasting run, or the paper's (see above)")

    a = p.add_argument_group("the method: GRPO on the VerIF reward").add_argument
    a("--steps", type=int, help=f"optimizer steps, one per rollout batch ({by_setting('steps')})")
    a("--prompts-per-step", type=int, help=f"prompts per rollout batch ({by_setting('prompts_per_step')}: VerIF)")
    a("--num-generations", type=int, help=f"G, samples per prompt ({by_setting('num_generations')}: VerIF)")
    a("--max-new-tokens", type=int, help=f"answer length limit ({by_setting('max_new_tokens')}: VerIF)")
    a("--temperature", type=float, default=1.0, help="sampling temperature T, also used for log-probs (1.0: VerIF)")
    a("--lr", type=float, help=f"AdamW learning rate ({by_setting('lr')}; VerIF's 1e-6 trains all weights)")
    a("--beta", type=float, help=f"k3 KL coefficient in the loss ({by_setting('beta')}); 0 skips the reference")
    a("--eps", type=float, default=0.2, help="clip range epsilon_low (0.2: VerIF, PPO)")
    a("--eps-high", type=float, help="clip range epsilon_high (default: --eps; DAPO uses 0.28)")
    a("--adv-norm", choices=["group", "none"], default="group",
      help="group: (r - mean) / (std + 1e-6) (GRPO, DeepSeekMath); none: r - mean (Dr. GRPO)")
    a("--loss-agg", choices=["token_mean", "seq_mean_token_mean", "seq_sum_const"], default="token_mean",
      help="token_mean: over all tokens of the batch (VerIF/verl, DAPO); seq_mean_token_mean: GRPO paper; "
           "seq_sum_const: sum / (sequences x max_new_tokens) (Dr. GRPO)")
    a("--num-iterations", type=int, default=1, help="mu, updates per rollout batch (1: VerIF)")
    a("--reward-mode", choices=verify_lib.REWARD_MODES, default="product",
      help="product: hard share x judge (released VerIF code); average: the paper; rule_only/judge_only: ablations")
    a("--hard-reduce", choices=["mean", "all"], default="mean",
      help="h, the hard half of the reward: mean, the share of hard checks passed; all, 1 only if every one passed "
           "(the released VerIF code's mean_func, which pays nothing for one junk string that meets some forms)")
    a("--mask-truncated", action="store_true", help="leave answers cut at --max-new-tokens out of the loss (DAPO)")
    a("--truncated-reward", type=float, metavar="R",
      help="the reward of an answer cut at --max-new-tokens, whatever its checks say (lasting 0; others none: scored "
           "like the rest): TULU 3 (arXiv 2411.15124) penalises answers with no end token, DAPO (2503.14476) too")

    add_plumbing_arguments(p)
    args = p.parse_args(argv)
    if args.truncated_reward is not None and args.mask_truncated:
        p.error("--truncated-reward and --mask-truncated are two treatments of the same answers: choose one")
    for name, value in SETTINGS[args.setting].items():                 # --mask-truncated replaces lasting's 0
        if getattr(args, name) is None:
            setattr(args, name, None if name == "truncated_reward" and args.mask_truncated else value)
    args.eps_high = args.eps if args.eps_high is None else args.eps_high
    if args.num_generations < 2:
        p.error(f"--num-generations {args.num_generations}: GRPO compares the answers of a group, it needs at least 2")
    if args.reward_mode == "judge_only" and not args.judge_url:
        p.error("--reward-mode judge_only: the judge gives the whole reward, it needs --judge-url")
    check_plumbing_arguments(p, args)
    return args


# ---- the plumbing's flags (skip on a first reading) ----
OUTPUTS = """\
Outputs in --out-dir: metrics.jsonl (one row per step, with the signs of reward hacking: truncated_share,
repeat_share, distinct_2, pass rate per constraint kind), samples.jsonl (a few answers per step and its worst and
best), curves.png, adapter/ (the last step), checkpoint/ and, with --merge, merged/ (base + adapter, a plain HF
folder). With --select-every N: selection.jsonl (the held-out pass rate of the base and every N steps) and selected/
(the best step's adapter and selection.json; with --merge also selected_merged/).

Rollouts on a vLLM server (--rollout-url; rollout_server.py, scripts/serve_policy.sh): the server gets the live policy
each step and returns the G answers per prompt as token ids with its log-probs; the trainer recomputes the log-probs
itself and logs how far they are from the server's (engine_logp_diff_mean, engine_ratio_off_share)."""


def by_setting(name: str) -> str:
    """A flag's defaults for --help, e.g. "cpu 8, paper 32" or "cpu 5e-4, paper 1e-6"."""
    def show(value):
        return f"{value:.0e}".replace("e-0", "e-") if isinstance(value, float) else str(value)
    return ", ".join(f"{setting} {show(sizes[name])}" for setting, sizes in SETTINGS.items())


def add_plumbing_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument_group("data").add_argument
    a("--data", type=Path, default=HERE / "data/verif_train.jsonl", help="canonical examples (01_build_data.py)")
    a("--only-constraints", nargs="*", metavar="ID",
      help="train only on examples whose hard constraints are all among these ids (cpu: "
           "verify_lib.SHORT_ANSWER_CONSTRAINTS, kinds a 48-token answer can meet; paper: all). Given with no ids: all")
    a("--max-prompts", type=int, metavar="N",
      help="train on N prompts drawn with --seed (cpu: 8, the same 8 at every step, so the curve shows the policy "
           "learning them rather than the luck of the draw; paper: 0, all)")
    a("--select-every", type=int, metavar="N",
      help="every N steps (and before the first, the base) the policy answers --select-data greedily (through "
           "--rollout-url when given) and the run keeps the best by its hard pass rate in <out-dir>/selected, next to "
           "the last (TULU 3 chooses checkpoints on held-out evaluation; never on IFEval or IFBench, which are the "
           f"tests); 0: off ({by_setting('select_every')})")
    a("--select-data", type=Path, default=HERE / "data/verif_eval.jsonl",
      help="held-out examples for --select-every (01_build_data.py's eval split)")

    a = p.add_argument_group("optimizer (AdamW on the adapter; --lr is above)").add_argument
    a("--warmup-steps", type=int, default=0, help="linear warmup, then constant (0: VerIF/verl)")
    a("--weight-decay", type=float, default=0.01, help="AdamW weight decay (0.01: verl)")
    a("--max-grad-norm", type=float, default=1.0, help="gradient clipping (1.0: verl)")

    a = p.add_argument_group("model").add_argument
    a("--model", type=verify_lib.model_arg, help="HF folder or hub id (default: the embedded SmolLM2-135M-Instruct)")
    a("--init-adapter", type=Path,
      help="an SFT LoRA adapter (02_sft.py), merged first: the KL reference is the SFT model")
    verify_lib.lora_arguments(a, dropout=0.0, dropout_help="LoRA dropout; 0: the policy and the sampler are the same "
                                                           "function")
    a("--micro-batch-size", type=int, default=16, help="sequences per forward/backward; the gradient is the same")
    a("--rollout-cache", choices=["dynamic", "static"], default="dynamic",
      help="KV cache of HF generate's rollouts: static preallocates it, and on a GPU transformers then compiles the "
           "decoding step (torch.compile, CUDA graphs); the same samples, faster decoding once compiled")

    a = p.add_argument_group("judge (soft constraints)").add_argument
    a("--judge-url", help="OpenAI-compatible judge server for soft constraints (none: soft constraints skipped)")
    a("--judge-model", default="judge", help="the judge's model name on that server")
    a("--judge-max-tokens", type=int, default=4096,
      help="room for the judge's reasoning and verdict (4096: verify_lib.Judge's default; the server's context must "
           "hold it plus the prompt)")
    a("--judge-max-failure-share", type=float, default=0.1,
      help="stop when more than this share of a step's judge calls fail (no verdict); failed answers get no loss")
    a("--instruction-literal", action="store_true",
      help='pass the string "instruction" to generated checkers, as the released VerIF code did')

    rollout_server.add_arguments(p)

    a = p.add_argument_group("the run").add_argument
    a("--out-dir", type=Path, default=HERE / "runs/grpo", help="the run folder (see Outputs below)")
    a("--merge", action="store_true",
      help="also save base + adapter merged in <out-dir>/merged (a plain HF folder: a vLLM server serves it at full "
           "speed, as 05_eval.py --server-url needs)")
    a("--save-every", type=int, default=10, help="checkpoint every N steps (and at the end)")
    a("--resume", action="store_true", help="continue exactly from --out-dir/checkpoint")
    a("--overwrite", action="store_true", help="replace what --out-dir holds (default: a folder that holds another "
                                               "run is refused)")
    a("--log-samples", type=int, default=2, help="completions per step written to samples.jsonl")
    a("--seed", type=int, default=0, help="LoRA init, the prompt order and HF generate's sampling (a rollout server "
                                          "samples from its own seed, vLLM's --seed, 0 unless set)")


def check_plumbing_arguments(p: argparse.ArgumentParser, args) -> None:
    verify_lib.check_numbers(p, args, {
        "steps": 1, "prompts_per_step": 1, "max_new_tokens": 1, "num_iterations": 1, "micro_batch_size": 1,
        "save_every": 1, "judge_max_tokens": 1, "lora_r": 1, "max_prompts": 0, "warmup_steps": 0, "log_samples": 0,
        "beta": 0, "weight_decay": 0, "lora_dropout": 0, "judge_max_failure_share": 0},
        positive=("temperature", "lr", "eps", "eps_high", "max_grad_norm", "lora_alpha"))
    if args.tis_cap is not None and not args.rollout_url:
        p.error("--tis-cap corrects for an engine's sampling: it needs --rollout-url")
    if args.select_every < 0:
        p.error(f"--select-every {args.select_every}: a number of steps, or 0 for off")
    if args.merge and args.init_adapter:
        p.error("--merge writes --model + this run's adapter: merge the SFT adapter first (02_sft.py --merge) and pass "
                "the merged folder as --model")
    if args.rollout_url and args.init_adapter:
        p.error("--rollout-url serves --model as it is: merge the SFT adapter first (02_sft.py --merge), serve the "
                "merged folder and pass it as --model")


# ---- heavy imports, after the arguments: --help and a bad flag answer at once, before torch loads (seconds) ----
if __name__ == "__main__":
    parse_args()
verify_lib.quiet_libraries()
import numpy as np  # noqa: E402
import peft  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402


# ======================================================================================================================
# main: setup, the loop, save
# ======================================================================================================================
def main(argv=None):
    args = parse_args(argv)

    # ---- setup ----
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    examples = training_examples(args)
    heldout = selection_examples(args)
    server = rollout_server.connect(args, "04_grpo.py")   # servers are asked before anything heavy loads
    judge = judge_client(args)
    claim_out_dir(args)
    model, tokenizer = build_policy(args)
    stop_ids = verify_lib.stop_token_ids(model, tokenizer)
    optimizer, scheduler = build_optimizer(model, args)
    settings = UpdateSettings.of(args)
    start, data_state, best = start_or_resume(model, optimizer, scheduler, len(examples), args)
    G, saved, step = args.num_generations, start, start

    # ---- the loop ----
    try:
        if heldout and best is None:               # the base model's held-out pass rate, what a selected step must beat
            best = select_checkpoint(model, tokenizer, server, heldout, stop_ids, start, None, args)
            save_checkpoint(model, optimizer, scheduler, start, data_state, args.out_dir, best)
        for step in tqdm(range(start + 1, args.steps + 1), initial=start, total=args.steps, desc="grpo"):
            batch_examples = next_prompts(examples, data_state, args.prompts_per_step, args.seed)

            # ---- rollouts: G answers to each prompt ----
            t0 = time.perf_counter()
            rollout = sample(model, tokenizer, server, batch_examples, stop_ids, step, n=G,
                             temperature=args.temperature, max_new_tokens=args.max_new_tokens, cache=args.rollout_cache)
            t1 = time.perf_counter()

            # ---- rewards (all in verify_lib) and advantages ----
            repeated = [ex for ex in batch_examples for _ in range(G)]                      # N = B * G
            results = verify_lib.verif_reward(repeated, rollout.texts, judge, args.reward_mode,
                                              hard_reduce=args.hard_reduce,
                                              instruction_literal=args.instruction_literal,
                                              max_judge_failure_share=args.judge_max_failure_share)
            for failure in code_check_failures(repeated, results):          # hostile or broken checker code, named
                tqdm.write(f"step {step}: {failure}", file=sys.stderr)
            valid = torch.tensor([r.score is not None for r in results])   # a judge failure: no reward, no loss
            rewards = torch.tensor([0.0 if r.score is None else r.score for r in results])       # [N]
            if args.truncated_reward is not None:                          # TULU 3 / DAPO: cut answers are not paid
                rewards = torch.where(rollout.truncated, args.truncated_reward, rewards)
            advantages = group_advantages(rewards, G, args.adv_norm, valid=valid)                # [N]
            t2 = time.perf_counter()

            # ---- update ----
            loss_mask = rollout.completion_mask * valid.long().unsqueeze(1)                       # [N, L]
            if args.mask_truncated:
                loss_mask = loss_mask * (~rollout.truncated).long().unsqueeze(1)
            update = policy_update(model, optimizer, scheduler, rollout.to(model.device),
                                   advantages.to(model.device), loss_mask.to(model.device), settings)
            t3 = time.perf_counter()

            # ---- log, select, save ----
            row = {"step": step, **reward_metrics(results, rewards, valid, rollout, G), **text_metrics(rollout.texts),
                   **update, "lr": scheduler.get_last_lr()[0], "epoch": data_state["epoch"],
                   "seconds_generate": t1 - t0, "seconds_reward": t2 - t1, "seconds_update": t3 - t2}
            log_step(args.out_dir, row, repeated, rollout.texts, results, args.log_samples)
            selecting = args.select_every and (step % args.select_every == 0 or step == args.steps)
            if selecting:
                best = select_checkpoint(model, tokenizer, server, heldout, stop_ids, step, best, args)
            if selecting or step % args.save_every == 0 or step == args.steps:   # the best adapter lives in it
                save_checkpoint(model, optimizer, scheduler, step, data_state, args.out_dir, best)
                saved = step
    except (rollout_server.RolloutServerError, verify_lib.JudgeError, NonFiniteError) as e:
        sys.exit(f"04_grpo.py: step {step}: {e}\n  the run folder holds steps up to {saved} (its last checkpoint); "
                 "--resume continues from there")
    finally:
        if server is not None:
            server.close()

    # ---- save and report ----
    save_outputs(model, best, args)


# ======================================================================================================================
# One step, in the order main() calls it: sample -> group_advantages -> policy_update -> the loss
# ======================================================================================================================
@dataclasses.dataclass
class Rollout:
    """One rollout batch: N = B * G answers, the G answers of a prompt next to each other.
        input_ids, attention_mask [N, S]: the prompt left-padded to P tokens, then the answer (S = P + L)
        completion_mask [N, L]: the answer's tokens up to and including its stop token, never padding
        truncated [N]: no stop token within max_new_tokens
        texts: the answers, decoded
        engine_logp [N, L]: a rollout server's log-probs of the sampled tokens (None with HF generate)"""
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor
    truncated: torch.Tensor
    texts: list
    engine_logp: torch.Tensor | None = None

    @property
    def n_prompt(self) -> int:
        return self.input_ids.shape[1] - self.completion_mask.shape[1]

    def to(self, device) -> "Rollout":
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                                            if torch.is_tensor(getattr(self, f.name))})


def sample(model, tokenizer, server, examples, stop_ids: list[int], step, *, n: int, temperature: float,
           max_new_tokens: int, cache: str = "dynamic") -> Rollout:
    """n answers to each example from the policy as it is now: the --rollout-url server (rollout_server.py gives it
    the live policy first) or HF generate in this process (appendix). Sampling is softmax(logits / T), nothing else."""
    model.eval()
    if server is not None:
        return Rollout(**rollout_server.rollout(server, model, tokenizer, examples, stop_ids, step, n=n,
                                                temperature=temperature, max_tokens=max_new_tokens))
    return generate(model, tokenizer, examples, stop_ids, n=n, temperature=temperature,
                    max_new_tokens=max_new_tokens, cache=cache)


def group_advantages(rewards: torch.Tensor, group_size: int, norm: str = "group", eps: float = 1e-6,
                     valid: torch.Tensor | None = None) -> torch.Tensor:
    """A_i = (r_i - mean(group)) / (std(group) + eps); norm="none" keeps r_i - mean (Dr. GRPO). rewards [B*G] hold
    groups one after the other; std is unbiased (as torch.std), and an all-equal group gives exactly 0:

    >>> group_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), group_size=2)      # groups [1, 0] and [1, 1]
    tensor([ 0.7071, -0.7071,  0.0000,  0.0000])

    valid [B*G] (default: all) leaves answers without a reward (a failed judge call) out of their group's mean and
    std; they get 0, and so does every answer of a group with fewer than two valid ones. A group of 4 whose third
    judge call failed: the other three are equal, so they get 0, not the +0.5 a made-up 0 reward would give them:

    >>> group_advantages(torch.tensor([1.0, 1.0, 0.0, 1.0]), 4, valid=torch.tensor([True, True, False, True]))
    tensor([0., 0., 0., 0.])
    """
    groups = rewards.view(-1, group_size)                             # [B, G]
    ok = torch.ones_like(groups, dtype=torch.bool) if valid is None else valid.view(-1, group_size)   # [B, G]
    n = ok.sum(dim=1, keepdim=True)                                   # [B, 1] valid answers per group
    mean = (groups * ok).sum(dim=1, keepdim=True) / n.clamp(min=1)    # [B, 1]
    centred = torch.where(ok, groups - mean, 0.0)                     # [B, G]
    if norm == "group":
        std = (centred.pow(2).sum(dim=1, keepdim=True) / (n - 1).clamp(min=1)).sqrt()   # [B, 1], unbiased
        centred = centred / (std + eps)
    return torch.where(n >= 2, centred, 0.0).reshape(-1)              # [B*G]


def policy_update(model, optimizer, scheduler, rollout: Rollout, advantages: torch.Tensor, loss_mask: torch.Tensor,
                  s: UpdateSettings) -> dict:
    """s.num_iterations optimizer steps on one rollout batch (advantages [N]; loss_mask [N, L], the tokens trained).
    Reference log-probs (adapter off) and, for several iterations, the rollout policy's are computed once, first. A
    non-finite loss or gradient norm raises NonFiniteError before the step: no NaN reaches weights or checkpoints."""
    chunks = micro_batches(rollout.input_ids.shape[0], s.micro_batch_size)
    ref_logp, old_logp = [], []
    with torch.no_grad():
        if s.beta > 0:
            with model.disable_adapter():
                ref_logp = [logprobs(model, rollout, c, s) for c in chunks]
        if s.num_iterations > 1:
            old_logp = [logprobs(model, rollout, c, s) for c in chunks]
    model.train()
    for _ in range(s.num_iterations):
        stats = accumulate_gradients(model, rollout, advantages, loss_mask, ref_logp, old_logp, s)
        stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm).item()
        if not (np.isfinite(stats["loss"]) and np.isfinite(stats["grad_norm"])):
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(f"loss {stats['loss']}, gradient norm {stats['grad_norm']}: no optimizer step taken "
                                 "(lower --lr, or check the rewards)")
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return stats  # of the last iteration


def accumulate_gradients(model, rollout: Rollout, advantages, loss_mask, ref_logp: list, old_logp: list,
                         s: UpdateSettings) -> dict:
    """Backward the loss of a whole rollout batch, one micro-batch at a time. Each micro-batch loss is divided by the
    whole batch's sequence and token counts (aggregate_loss), so the accumulated gradient is the full batch's."""
    n_seqs, n_tokens = int((loss_mask.sum(dim=1) > 0).sum()), int(loss_mask.sum())
    engine = rollout.engine_logp                 # [N, L] the server's log-probs of the sampled tokens, or None
    stats = collections.Counter(loss=0.0, kl=0.0, clip_low=0.0, clip_high=0.0)
    for i, c in enumerate(micro_batches(rollout.input_ids.shape[0], s.micro_batch_size)):
        mask = loss_mask[c]                                                                  # [n, L]
        logp = logprobs(model, rollout, c, s)                                                # [n, L]
        old = old_logp[i] if old_logp else logp.detach()  # one update per batch: the rollout policy is the current one
        loss, ratio, low, high = clipped_policy_loss(logp, old, advantages[c], s.eps, s.eps_high)
        if engine is not None and s.tis_cap is not None:
            loss = loss * truncated_is_weights(old, engine[c], s.tis_cap)       # --tis-cap, appendix
        kl = kl_k3(logp, ref_logp[i]) if ref_logp else torch.zeros_like(logp)                # [n, L]
        total = aggregate_loss(loss + s.beta * kl, mask, s.loss_agg, n_seqs, n_tokens, s.max_new_tokens)
        total.backward()
        stats["loss"] += total.item()
        for key, value in (("kl", kl), ("clip_low", low), ("clip_high", high)):   # token sums, made means below
            stats[key] += (value.detach().float() * mask).sum().item()
        if engine is not None:
            stats.update(rollout_server.engine_mismatch(logp, engine[c], mask))
    return {k: v if k == "loss" else v / max(n_tokens, 1) for k, v in stats.items()}


def logprobs(model, rollout: Rollout, rows: slice, s: UpdateSettings) -> torch.Tensor:
    """The completion log-probs [n, L] of rollout rows `rows`: the plain forward, or the same numbers computed
    sharing each distinct prompt's keys and values (appendix)."""
    args = (model, rollout.input_ids[rows], rollout.attention_mask[rows], rollout.n_prompt, s.temperature)
    return shared_prompt_logprobs(*args) if s.share_prompts else sequence_logprobs(*args)


def sequence_logprobs(model, input_ids, attention_mask, n_prompt: int, temperature: float) -> torch.Tensor:
    """Log-probs of the completion tokens (positions >= n_prompt) of left-padded sequences [N, S] -> [N, S - n_prompt].
    Position ids count real tokens only, so left padding does not shift them."""
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)    # [N, S]
    n_completion = input_ids.shape[1] - n_prompt
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
                   logits_to_keep=n_completion + 1).logits[:, :-1]   # [N, L, V]: logits at t predict token t + 1
    return token_logprobs(logits, input_ids[:, n_prompt:], temperature)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """log pi(token_t | prefix) under the sampling distribution softmax(logits / T). logits [N, L, V], tokens [N, L].
    One sequence at a time, so that at most one float32 [L, V] copy exists (large vocabularies, long answers)."""
    rows = []
    for row_logits, row_tokens in zip(logits, tokens):                # [L, V], [L]
        scaled = row_logits.float() / temperature
        picked = scaled.gather(-1, row_tokens.unsqueeze(-1)).squeeze(-1)   # [L]
        rows.append(picked - torch.logsumexp(scaled, dim=-1))
    return torch.stack(rows)                                          # [N, L]


def clipped_policy_loss(logp, old_logp, advantages, eps_low, eps_high):
    """PPO's clipped surrogate, per token: -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A).

    logp, old_logp [N, L]; advantages [N]. Returns (loss [N, L], ratio [N, L], clipped_low [N, L], clipped_high [N, L]):
    the clip binds below 1 - eps_low only when A < 0 and above 1 + eps_high only when A > 0. A token whose probability
    rose 50 % (ratio 1.5) earns at most 1.2 * A when A > 0, and pays the full 1.5 * A when A < 0:

    >>> loss, ratio, low, high = clipped_policy_loss(torch.log(torch.tensor([[1.5, 1.5]])), torch.zeros(1, 2),
    ...                                              torch.tensor([1.0]), 0.2, 0.2)
    >>> loss, high
    (tensor([[-1.2000, -1.2000]]), tensor([[True, True]]))
    >>> clipped_policy_loss(torch.log(torch.tensor([[1.5]])), torch.zeros(1, 1), torch.tensor([-1.0]), 0.2, 0.2)[0]
    tensor([[1.5000]])
    """
    ratio = torch.exp(logp - old_logp)                                 # [N, L]
    adv = advantages.unsqueeze(1)                                     # [N, 1]
    unclipped = ratio * adv
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high) * adv
    loss = -torch.minimum(unclipped, clipped)                         # [N, L]
    return loss, ratio, (ratio < 1 - eps_low) & (adv < 0), (ratio > 1 + eps_high) & (adv > 0)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || pi_ref) per token: exp(ref - logp) - (ref - logp) - 1 >= 0, 0 when equal."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


def aggregate_loss(per_token: torch.Tensor, mask: torch.Tensor, mode: str, n_seqs: int, n_tokens: int,
                   max_new_tokens: int) -> torch.Tensor:
    """Reduce a per-token loss [N, L] over the `mask`ed tokens of one micro-batch, with the *whole* batch's counts
    (n_seqs sequences, n_tokens tokens), so that micro-batch losses add up to the full batch's loss and gradient.

    token_mean:          sum(loss) / n_tokens
    seq_mean_token_mean: sum_i (sum_t loss_it / len_i) / n_seqs
    seq_sum_const:       sum(loss) / (n_seqs * max_new_tokens)

    Two answers of 1 and 3 tokens, each token's loss 1, the first answer's tokens doubled: token_mean weighs every
    token alike, seq_mean_token_mean every answer alike:

    >>> loss, mask = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0]]), torch.tensor([[1, 0, 0], [1, 1, 1]])
    >>> [round(aggregate_loss(loss, mask, m, 2, 4, 3).item(), 3) for m in ("token_mean", "seq_mean_token_mean",
    ...                                                                     "seq_sum_const")]
    [1.25, 1.5, 0.833]
    """
    masked = per_token * mask
    if mode == "token_mean":
        return masked.sum() / max(n_tokens, 1)
    if mode == "seq_mean_token_mean":
        return (masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).sum() / n_seqs
    if mode == "seq_sum_const":
        return masked.sum() / (n_seqs * max_new_tokens)
    raise ValueError(f"unknown loss aggregation {mode!r}")


# ======================================================================================================================
# Appendix: the update's settings, a speed-up, HF generate, data, model, judge, checkpoint selection, the run folder
# ======================================================================================================================
# ---- the update's settings and its failure ----
@dataclasses.dataclass(frozen=True)
class UpdateSettings:
    """The values one update needs, named as in the papers (the flags of the same names)."""
    temperature: float = 1.0
    beta: float = 1e-3                 # k3 KL coefficient; 0 skips the reference model
    eps: float = 0.2                   # clip range below 1
    eps_high: float = 0.2              # clip range above 1
    loss_agg: str = "token_mean"
    max_new_tokens: int = 48           # seq_sum_const's constant
    num_iterations: int = 1            # mu, optimizer steps per rollout batch
    micro_batch_size: int = 16
    max_grad_norm: float = 1.0
    tis_cap: float | None = None       # truncated importance sampling against a rollout server's log-probs
    share_prompts: bool = True         # run each distinct prompt once (off with gradient checkpointing)

    @classmethod
    def of(cls, args) -> "UpdateSettings":
        names = {f.name for f in dataclasses.fields(cls)} - {"share_prompts"}
        return cls(**{k: getattr(args, k) for k in names}, share_prompts=not args.gradient_checkpointing)


class NonFiniteError(FloatingPointError):
    """A loss or gradient norm that is NaN or infinite: the optimizer step is not taken."""


def micro_batches(n: int, size: int) -> list[slice]:
    return [slice(i, i + size) for i in range(0, n, size)]


def shared_prompt_logprobs(model, input_ids, attention_mask, n_prompt: int, temperature: float) -> torch.Tensor:
    """sequence_logprobs, computed faster: the G answers of a group have the same prompt, so each distinct prompt runs
    once and its keys and values serve all of its answers (the same numbers, and the same gradient, as running every
    row in full, at a fraction of the cost when prompts are longer than answers; tests/test_grpo.py checks both).
    Gradient checkpointing drops the cache, so UpdateSettings.share_prompts is off with it."""
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)    # [N, S]
    prompt_rows = torch.cat([input_ids[:, :n_prompt], attention_mask[:, :n_prompt]], dim=1)        # [N, 2P]
    distinct, inverse = torch.unique(prompt_rows, dim=0, return_inverse=True)                      # [U, 2P], [N]
    first = torch.empty(len(distinct), dtype=torch.long, device=input_ids.device)
    first[inverse] = torch.arange(len(inverse), device=input_ids.device)   # one row of each distinct prompt  [U]
    prompt = model(input_ids=input_ids[first, :n_prompt], attention_mask=attention_mask[first, :n_prompt],
                   position_ids=position_ids[first, :n_prompt], use_cache=True, logits_to_keep=1)
    logits = prompt.logits[inverse]                                   # [N, 1, V]: predicts the first answer token
    if input_ids.shape[1] - n_prompt > 1:
        cache = prompt.cache
        cache.reorder_cache(inverse)                                  # keys/values [U, ...] -> [N, ...]
        answer = model(input_ids=input_ids[:, n_prompt:-1], attention_mask=attention_mask[:, :-1],
                       position_ids=position_ids[:, n_prompt:-1], cache=cache, use_cache=True)
        logits = torch.cat([logits, answer.logits], dim=1)            # [N, L, V]
    return token_logprobs(logits, input_ids[:, n_prompt:], temperature)


# ---- rollouts with HF generate, and an engine correction ----
def generate(model, tokenizer, examples, stop_ids: list[int], *, n: int, temperature: float, max_new_tokens: int,
             cache: str = "dynamic") -> Rollout:
    """sample() without a server: n answers to each example with HF generate, in this process."""
    chats = [ex.chat for ex in examples]
    prompts = tokenizer.apply_chat_template(chats, add_generation_prompt=True, padding=True, return_tensors="pt",
                                            return_dict=True).to(model.device)
    prompt_ids = prompts["input_ids"].repeat_interleave(n, dim=0)     # [N, P], N = B * n
    prompt_mask = prompts["attention_mask"].repeat_interleave(n, dim=0)
    with torch.no_grad():   # load_model dropped the model's sampling defaults: only T (greedy at 0) applies
        out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=stop_ids, cache_implementation=cache,
                             **verify_lib.sampling_kwargs(temperature))
    completion = out[:, prompt_ids.shape[1]:]                         # [N, L]
    completion_mask, truncated = completion_mask_from(completion, stop_ids)   # [N, L], [N]
    texts = [tokenizer.decode(row[:k], skip_special_tokens=True) for row, k in zip(completion, completion_mask.sum(1))]
    return Rollout(out, torch.cat([prompt_mask, completion_mask], dim=1), completion_mask, truncated, texts)


def completion_mask_from(completion: torch.Tensor, stop_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Which answer tokens of HF generate's output are trained: everything up to and including the first stop id,
    nothing after it (padding, which may even reuse the EOS id). completion [N, L] -> (mask [N, L], truncated [N]: no
    stop id within L tokens).

    >>> completion_mask_from(torch.tensor([[5, 7, 2, 2, 2], [5, 6, 7, 8, 9]]), stop_ids=[2])
    (tensor([[1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1]]), tensor([False,  True]))
    """
    is_eos = torch.isin(completion, torch.tensor(stop_ids, device=completion.device))
    first_eos = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), completion.shape[1])   # [N]
    positions = torch.arange(completion.shape[1], device=completion.device)                      # [L]
    return (positions.unsqueeze(0) <= first_eos.unsqueeze(1)).long(), ~is_eos.any(dim=1)


def truncated_is_weights(logp: torch.Tensor, engine_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """min(pi_trainer(token) / pi_engine(token), cap) per token [N, L], no gradient: corrects the policy gradient for
    tokens an inference engine sampled with slightly different numbers than the trainer computes (truncated importance
    sampling; Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL training").

    >>> truncated_is_weights(torch.log(torch.tensor([[0.5, 0.9]])), torch.log(torch.tensor([[0.5, 0.3]])), cap=2.0)
    tensor([[1., 2.]])
    """
    return torch.exp(logp.detach() - engine_logp).clamp(max=cap)


# ---- data ----
def training_examples(args) -> list:
    """The examples this run trains on: --data, filtered by --only-constraints, drawn down to --max-prompts."""
    try:
        examples = verify_lib.load_examples(args.data)
    except (OSError, verify_lib.ExampleError) as e:
        sys.exit(f"04_grpo.py: {e}" + ("\n  (make it with: python 01_build_data.py)" if isinstance(e, OSError) else ""))
    if args.only_constraints:
        allowed = set(args.only_constraints)
        kept = [ex for ex in examples if ex.hard and all(h["id"] in allowed for h in ex.hard)]
        print(f"04_grpo.py: training on the {len(kept)} of {len(examples)} examples whose hard constraints are all in "
              f"--only-constraints ({len(allowed)} ids)", file=sys.stderr)
        if not kept:
            sys.exit(f"04_grpo.py: no example of {args.data} has only these constraints: {sorted(allowed)}")
        examples = kept
    if args.max_prompts and len(examples) > args.max_prompts:
        drawn = torch.randperm(len(examples), generator=torch.Generator().manual_seed(args.seed))[:args.max_prompts]
        examples = [examples[i] for i in sorted(drawn.tolist())]
        print(f"04_grpo.py: training on {len(examples)} prompts drawn with seed {args.seed} (--max-prompts)",
              file=sys.stderr)
    return examples


def next_prompts(examples: list, data_state: dict, n: int, seed: int) -> list:
    """The next n examples of a seeded shuffle, reshuffled (seed + epoch) at the end of each epoch; data_state
    {"epoch", "position", "order"} is updated in place and saved with checkpoints."""
    batch = []
    while len(batch) < n:
        if data_state["position"] == len(data_state["order"]):
            data_state.update(epoch=data_state["epoch"] + 1, position=0, order=torch.randperm(
                len(examples), generator=torch.Generator().manual_seed(seed + data_state["epoch"] + 1)).tolist())
        batch.append(examples[data_state["order"][data_state["position"]]])
        data_state["position"] += 1
    return batch


# ---- model and judge ----
def build_policy(args):
    """The base model (with --init-adapter merged in) plus a fresh LoRA adapter; disabling the adapter gives the
    reference model."""
    model, tokenizer = verify_lib.load_model(args.model, load_in_4bit=args.load_in_4bit)
    if args.init_adapter:
        if args.load_in_4bit:
            sys.exit("04_grpo.py: --init-adapter cannot be merged into 4-bit weights; merge it first "
                     "(02_sft.py --merge)")
        model = peft.PeftModel.from_pretrained(model, args.init_adapter).merge_and_unload()
    return verify_lib.add_lora(model, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout,
                               gradient_checkpointing=args.gradient_checkpointing), tokenizer


def build_optimizer(model, args):
    """AdamW on the LoRA weights; linear warmup over --warmup-steps, then constant."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (args.warmup_steps + 1)))
    return optimizer, scheduler


def judge_client(args):
    """The judge of --judge-url, checked (up, serving --judge-model); None without one: soft constraints skipped."""
    if not args.judge_url:
        if args.reward_mode != "rule_only":
            print("04_grpo.py: no --judge-url: soft constraints are skipped (counted as satisfied)", file=sys.stderr)
        return None
    return verify_lib.checked_client(verify_lib.Judge(args.judge_url, args.judge_model,
                                                      max_tokens=args.judge_max_tokens), "04_grpo.py: --judge-url")


# ---- checkpoint selection on held-out prompts (--select-every) ----
def selection_examples(args) -> list:
    """The held-out examples of --select-data that have hard constraints (the selection reads those alone)."""
    if not args.select_every:
        return []
    try:
        examples = [ex for ex in verify_lib.load_examples(args.select_data) if ex.hard]
    except (OSError, verify_lib.ExampleError) as e:
        sys.exit(f"04_grpo.py: --select-data: {e}")
    if not examples:
        sys.exit(f"04_grpo.py: --select-data {args.select_data}: no example has hard constraints to select on")
    return examples


def heldout_pass_rate(model, tokenizer, server, examples, stop_ids, step: int, max_new_tokens: int,
                      instruction_literal: bool = False) -> dict:
    """The policy as it is now answers the held-out examples greedily; its answers are scored on their hard
    constraints alone (exact and cheap; the judge is left out): prompt_level, the share of answers that pass all of
    them, instruction_level, the share of checks passed; and the hacking signs of those answers."""
    rollout = sample(model, tokenizer, server, examples, stop_ids, f"{step}-heldout", n=1, temperature=0.0,
                     max_new_tokens=max_new_tokens)
    results = verify_lib.verif_reward(examples, rollout.texts, None, "rule_only", hard_reduce="all",
                                      instruction_literal=instruction_literal)
    checks = [c.passed for r in results for c in r.hard]
    return {"step": step, "prompt_level": sum(r.score for r in results) / len(results),
            "instruction_level": sum(checks) / len(checks), "truncated_share": rollout.truncated.float().mean().item(),
            **text_metrics(rollout.texts)}


def select_checkpoint(model, tokenizer, server, examples, stop_ids, step: int, best: dict | None, args) -> dict:
    """Measure the policy on the held-out examples, log it to selection.jsonl, and return the best measurement so far
    (prompt level first, instruction level to break ties; the earlier step on a full tie)."""
    row = heldout_pass_rate(model, tokenizer, server, examples, stop_ids, step, args.max_new_tokens,
                            args.instruction_literal)
    key = ("prompt_level", "instruction_level")
    row["best"] = best is None or tuple(row[k] for k in key) > tuple(best[k] for k in key)
    with open(args.out_dir / "selection.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    tqdm.write(f"step {step}: held-out pass rate {row['prompt_level']:.3f} prompts, {row['instruction_level']:.3f} "
               f"checks{' (best so far)' if row['best'] else ''}")
    return row if row["best"] else best


# ---- the run folder: metrics, logs, checkpoints, curves ----
def repeats_a_run(text: str, n: int = 4, times: int = 3) -> bool:
    """Whether some n-gram of the answer's words and punctuation marks occurs `times` times or more: the runs of
    rewarded forms a hacking policy writes (`<<a title>> <<a title>> <<a title>>`, `P.S. P.S. P.S.`).

    >>> repeats_a_run("P.S. hi. P.S. hi. P.S. hi."), repeats_a_run("One, two, three, four; one, two.")
    (True, False)
    """
    tokens = re.findall(r"\w+|[^\w\s]", text.lower())
    counts = collections.Counter(zip(*(tokens[i:] for i in range(n))))
    return bool(counts) and max(counts.values()) >= times


def distinct_2(texts: list[str]) -> float:
    """Distinct word bigrams / all word bigrams over a step's answers (Li et al. 2016's distinct-2): it falls when
    the answers repeat themselves or one another."""
    bigrams = []
    for words in (t.lower().split() for t in texts):
        bigrams += zip(words, words[1:])
    return len(set(bigrams)) / len(bigrams) if bigrams else float("nan")


def text_metrics(texts: list[str]) -> dict:
    """Hacking made visible: the share of answers that repeat a 4-gram three times or more, and distinct-2."""
    return {"repeat_share": sum(map(repeats_a_run, texts)) / max(len(texts), 1), "distinct_2": distinct_2(texts)}


def reward_metrics(results, rewards, valid, rollout: Rollout, group_size: int) -> dict:
    """What practitioners look at: reward and its parts, pass rate per constraint category and kind, lengths,
    zero-variance groups. Rewards count valid answers only (a failed judge call has none); a group with fewer than
    two of them counts as zero-variance (it gets no advantage). reward_std is the population std, as
    verify_lib.reward_summary's."""
    summary = verify_lib.reward_summary(results)
    per_type: dict[str, list[bool]] = {}
    for r in results:
        for check in r.hard:
            kind = check.name.split("[")[0]                       # "code[2]" -> "code"
            for key in {"pass/" + kind.split(":")[0], "pass/" + kind}:
                per_type.setdefault(key, []).append(check.passed)
    lengths = rollout.completion_mask.sum(dim=1).float()                                 # [N]
    done = ~rollout.truncated
    scored = rewards[valid]
    groups, ok = rewards.view(-1, group_size), valid.view(-1, group_size)                # [B, G]
    varied = [(g[m].numel() >= 2 and g[m].std().item() > 0) for g, m in zip(groups, ok)]
    nan = float("nan")
    return {"reward_mean": scored.mean().item() if len(scored) else nan,
            "reward_std": scored.std(correction=0).item() if len(scored) else nan,
            "hard_score_mean": summary["hard_score_mean"], "judge_pass_rate": summary["judge_pass_rate"],
            "judge_asked": summary["judge_asked"], "judge_failed": summary["judge_failed"],
            "zero_variance_groups": 1 - sum(varied) / len(varied),
            "length_mean": lengths.mean().item(),
            "length_terminated_mean": lengths[done].mean().item() if done.any() else nan,
            "truncated_share": rollout.truncated.float().mean().item(),
            "code_check_errors": sum(check.error is not None for r in results for check in r.hard),
            **{k: sum(v) / len(v) for k, v in sorted(per_type.items())}}


def code_check_failures(examples: list, results: list) -> list[str]:
    """"<example id> <check>: <reason>" once per generated check that failed to run on some answer of the step (the
    sandbox refused it, it timed out or crashed, it was too large): hostile or broken rows of the data, by name."""
    failed = dict.fromkeys((ex.id, check.name, check.error) for ex, r in zip(examples, results)
                           for check in r.hard if check.error)                  # distinct, in the batch's order
    return [f"{example_id} {name} failed to run: {error}" for example_id, name, error in failed]


def log_step(out_dir: Path, row: dict, examples: list, texts: list[str], results: list, n_samples: int) -> None:
    """One metrics row; the first n_samples completions plus the step's worst- and best-scoring ones; a console line."""
    scored = [i for i, r in enumerate(results) if r.score is not None]
    picks = [(i, "first") for i in range(min(n_samples, len(texts)))]
    if scored:
        picks += [(min(scored, key=lambda i: results[i].score), "worst"),
                  (max(scored, key=lambda i: results[i].score), "best")]
    with open(out_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    with open(out_dir / "samples.jsonl", "a") as f:
        for i, which in picks:
            f.write(json.dumps({"step": row["step"], "which": which, "prompt": examples[i].instruction,
                                "completion": texts[i], "reward": results[i].score}) + "\n")
    tqdm.write(f"step {row['step']}: reward {row['reward_mean']:.3f} kl {row['kl']:.4f} len {row['length_mean']:.0f} "
               f"cut {row['truncated_share']:.2f} repeats {row['repeat_share']:.2f} "
               f"zero-var {row['zero_variance_groups']:.2f}")


def save_outputs(model, best: dict | None, args) -> None:
    """The run's end: the last adapter, with --merge the merged model(s), the curves, one line saying where."""
    adapter = verify_lib.save_folder_atomically(args.out_dir / "adapter", model.save_pretrained)
    if args.merge:                                  # a plain HF folder: 05_eval.py on a vLLM server, at full speed
        verify_lib.merge_adapter(args.model, adapter, args.out_dir / "merged")
        if best is not None:
            verify_lib.merge_adapter(args.model, args.out_dir / "selected", args.out_dir / "selected_merged")
    plot_curves(args.out_dir, args.out_dir / "curves.png")
    print(f"adapter{', merged model' if args.merge else ''}, metrics and curves in {args.out_dir}"
          + (f"; the best held-out step, {best['step']}, in {args.out_dir / 'selected'}" if best else ""))


def claim_out_dir(args) -> None:
    """--out-dir for this run: a folder that holds another run is refused unless --resume or --overwrite."""
    try:
        verify_lib.claim_run_dir(args.out_dir, overwrite=args.overwrite, resume=args.resume)
    except FileExistsError as e:
        sys.exit(f"04_grpo.py: {e}, or --resume to continue it")


def start_or_resume(model, optimizer, scheduler, n_examples: int, args) -> tuple[int, dict, dict | None]:
    """(last step done, data_state, best held-out measurement or None): a fresh run writes its config and empty logs;
    --resume restores the checkpoint."""
    if args.resume:
        warn_changed_flags(args)
        return load_checkpoint(model, optimizer, scheduler, args.out_dir)
    order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(args.seed)).tolist()
    for log in ("metrics.jsonl", "samples.jsonl") + (("selection.jsonl",) if args.select_every else ()):
        (args.out_dir / log).write_text("")
    (args.out_dir / "config.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))
    return 0, {"epoch": 0, "position": 0, "order": order}, None


def warn_changed_flags(args) -> None:
    """--resume goes on under the flags given now: name those that differ from the run's config.json (a run of
    --setting lasting resumed without it would go on at beta 1e-3 and without selection)."""
    try:
        saved = json.loads((args.out_dir / "config.json").read_text())
    except (OSError, ValueError):
        return
    changed = [f"--{name.replace('_', '-')} {value} (the run: {saved[name]})" for name, value in vars(args).items()
               if name not in ("resume", "overwrite") and name in saved and str(value) != saved[name]]
    if changed:
        print("04_grpo.py: --resume with flags other than the run's (config.json): " + "; ".join(changed),
              file=sys.stderr)


def save_checkpoint(model, optimizer, scheduler, step, data_state, out_dir: Path, best: dict | None = None) -> None:
    """Adapter, optimizer, scheduler, RNG states, step, data position and the best held-out measurement in
    out_dir/checkpoint, with the best adapter so far in checkpoint/selected; swapped in whole for the previous one
    (verify_lib.save_folder_atomically), so that an interruption never leaves a half-written one."""
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp / "adapter")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                    "data": data_state, "best": best, "rng": {"torch": torch.get_rng_state(),
                                                             "python": random.getstate(),
                                                             "numpy": np.random.get_state()}}, tmp / "state.pt")
        if best is not None:    # the adapter of the best step: this one's, or the previous checkpoint's copy
            shutil.copytree(tmp / "adapter" if best["step"] == step else out_dir / "checkpoint/selected",
                            tmp / "selected")
    verify_lib.save_folder_atomically(out_dir / "checkpoint", write)
    publish_selected(out_dir, best)


def publish_selected(out_dir: Path, best: dict | None) -> None:
    """<out-dir>/selected: the checkpoint's best adapter and selection.json (its step and held-out pass rates)."""
    if best is None:
        shutil.rmtree(out_dir / "selected", ignore_errors=True)
        return

    def write(tmp: Path) -> None:
        shutil.copytree(out_dir / "checkpoint/selected", tmp)
        (tmp / "selection.json").write_text(json.dumps(best, indent=1) + "\n")
    verify_lib.save_folder_atomically(out_dir / "selected", write)


def load_checkpoint(model, optimizer, scheduler, out_dir: Path) -> tuple[int, dict, dict | None]:
    """Restore what save_checkpoint wrote; drop log lines written after it. Returns (step, data_state, best)."""
    state = torch.load(out_dir / "checkpoint/state.pt", weights_only=False)
    peft.set_peft_model_state_dict(model, peft.load_peft_weights(out_dir / "checkpoint/adapter"))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    for log in (out_dir / "metrics.jsonl", out_dir / "samples.jsonl", out_dir / "selection.jsonl"):
        if log.exists():
            kept = [line for line in log.read_text().splitlines() if json.loads(line)["step"] <= state["step"]]
            log.write_text("".join(line + "\n" for line in kept))
    publish_selected(out_dir, state.get("best"))
    return state["step"], state["data"], state.get("best")


def plot_curves(out_dir: Path, out_png: Path) -> None:
    """The step metrics, the hacking signs among them, and the held-out pass rate of --select-every."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    selection = out_dir / "selection.jsonl"
    heldout = [json.loads(line) for line in selection.read_text().splitlines()] if selection.exists() else []
    keys = ["reward_mean", "hard_score_mean", "kl", "length_mean", "truncated_share", "repeat_share", "distinct_2",
            "zero_variance_groups", "grad_norm"]
    fig, axes = plt.subplots(2, 5, figsize=(20, 6))
    for ax, key in zip(axes.flat, keys):
        ax.plot([r["step"] for r in rows], [r.get(key, float("nan")) for r in rows])
        ax.set_title(key)
        ax.set_xlabel("step")
    ax = axes.flat[-1]
    for key in ("prompt_level", "instruction_level"):
        ax.plot([r["step"] for r in heldout], [r[key] for r in heldout], marker="o", label=key)
    ax.set_title("held-out pass rate (--select-every)")
    ax.set_xlabel("step")
    if heldout:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
