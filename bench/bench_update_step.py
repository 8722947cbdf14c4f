"""Where the update of a CPU GRPO step goes (issue #25: in docs/heldout/train the update took 82 s of a ~132 s step).

The embedded SmolLM2-135M with 04_grpo.py's LoRA (r 16) on one rollout batch of the heldout setting's shape (8 prompts
x 8 answers; prompt and answer lengths by flag, default those of the committed runs): times, in one process,
  - the forward of the completion log-probs, plain (sequence_logprobs) and sharing each prompt (shared_prompt_logprobs),
  - the part of that forward spent in the log-softmax over the vocabulary (token_logprobs on the same logits),
  - a whole policy_update (reference forward, forward, backward, optimizer step),
each in float32 and under torch.autocast(bfloat16) (these CPUs have AMX), and prints one JSON object (also --out).
Run it on a quiet machine: two heavy jobs on 2 cores slow each other several-fold.

    .venv/bin/python bench/bench_update_step.py
    .venv/bin/python bench/bench_update_step.py --answer-tokens 40 --repeats 3 --out docs/update_step_cpu.json
"""
import argparse
import contextlib
import importlib
import json
import sys
import timeit
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import verify_lib  # noqa: E402

grpo = importlib.import_module("04_grpo")


def timed(fn, repeats: int) -> float:
    """The best of `repeats` wall times of fn(), in seconds, after one call that warms up."""
    fn()
    return min(timeit.repeat(fn, number=1, repeat=repeats))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--prompt-tokens", type=int, default=120, help="tokens per prompt, chat template included")
    p.add_argument("--answer-tokens", type=int, default=90, help="answer tokens (the heldout runs: 30-100)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path)
    a = p.parse_args()

    args = grpo.parse_args(["--setting", "heldout"])
    torch.manual_seed(0)
    model, tokenizer = grpo.build_policy(args)
    n, length = a.prompts * a.generations, a.prompt_tokens + a.answer_tokens
    prompts = torch.randint(100, 40000, (a.prompts, a.prompt_tokens)).repeat_interleave(a.generations, dim=0)
    ids = torch.cat([prompts, torch.randint(100, 40000, (n, a.answer_tokens))], dim=1)            # [N, S]
    attn = torch.ones_like(ids)
    rollout = grpo.Rollout(ids, attn, attn[:, a.prompt_tokens:], torch.zeros(n, dtype=torch.bool), [""] * n)
    advantages, mask = torch.linspace(-1, 1, n), rollout.completion_mask
    optimizer, scheduler = grpo.build_optimizer(model, args)
    settings = grpo.UpdateSettings.of(args)
    result = {"shape": {"sequences": n, "prompt_tokens": a.prompt_tokens, "answer_tokens": a.answer_tokens,
                        "vocabulary": model.config.vocab_size}, "threads": torch.get_num_threads()}
    for precision in ("float32", "bfloat16"):
        cast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bfloat16" else contextlib.nullcontext())
        with cast:
            with torch.no_grad():
                plain = timed(lambda: grpo.sequence_logprobs(model, ids, attn, a.prompt_tokens, 1.0), a.repeats)
                shared = timed(lambda: grpo.shared_prompt_logprobs(model, ids, attn, a.prompt_tokens, 1.0), a.repeats)
                logits = model(input_ids=ids, attention_mask=attn, logits_to_keep=a.answer_tokens + 1).logits[:, :-1]
                softmax = timed(lambda: grpo.token_logprobs(logits, ids[:, a.prompt_tokens:], 1.0), a.repeats)
            update = timed(lambda: grpo.policy_update(model, optimizer, scheduler, rollout, advantages, mask, settings),
                           a.repeats)
        result[precision] = {"forward_plain_s": plain, "forward_shared_prompt_s": shared,
                             "log_softmax_s": softmax, "log_softmax_share_of_plain_forward": softmax / plain,
                             "policy_update_s": update}
        print(precision, json.dumps(result[precision]), flush=True)
    result["bf16_speedup_update"] = result["float32"]["policy_update_s"] / result["bfloat16"]["policy_update_s"]
    print(json.dumps(result, indent=1))
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    verify_lib.quiet_libraries()
    main()
