"""One GRPO step of 04_grpo.py on one GPU, in the shape of ../shared/bench/trl_grpo_bench.py (TRL's GRPOTrainer), so
that the two step times can be compared as a ratio from the same run on the same card.

Model: Qwen2.5-0.5B's shape with random weights and the vocabulary of a tokenizer folder (--tok; default the embedded
SmolLM2 tokenizer), bf16 on a GPU, LoRA r=16 / alpha 32 on every linear layer, beta 1e-3; 32 prompts x 16 samples x
512 new tokens, micro-batches of 32. The reward is the TRL bench's (even number of commas): cheap, and not constant on
random text. Prints generation tokens/s, update tokens/s, step time and peak memory (one JSON object, also --out).

    python bench/bench_grpo_step.py --tok TOKENIZER_DIR                 # the GPU configuration
    python bench/bench_grpo_step.py --small                             # a CPU smoke run: tiny model and batch
"""
import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import verify_lib  # noqa: E402

grpo = importlib.import_module("04_grpo")


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tok", help="tokenizer folder (default: the embedded SmolLM2's)")
    p.add_argument("--small", action="store_true", help="tiny CPU smoke settings")
    p.add_argument("--steps", type=int, default=3, help="steps to time; the first is reported apart (warm-up)")
    p.add_argument("--rollout-cache", choices=["dynamic", "static"], default="static",
                   help="04_grpo.py's --rollout-cache (static: compiled decoding on a GPU)")
    p.add_argument("--out", default="grpo_bench.json")
    a = p.parse_args()

    tok = transformers.AutoTokenizer.from_pretrained(a.tok or verify_lib.embedded_model_dir())
    if a.small:
        shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2)
        prompts, gens, new_tokens, micro = 4, 4, 16, 8
    else:  # Qwen2.5-0.5B
        shape = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                     num_key_value_heads=2, max_position_embeddings=4096, rope_theta=1e6)
        prompts, gens, new_tokens, micro = 32, 16, 512, 32
    config = transformers.Qwen2Config(vocab_size=len(tok), tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, **shape)
    torch.manual_seed(0)
    model_dir = Path(tempfile.mkdtemp(prefix="grpo-bench-")) / "model"
    transformers.Qwen2ForCausalLM(config).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)

    args = grpo.parse_args(["--setting", "paper", "--model", str(model_dir), "--prompts-per-step", str(prompts),
                            "--num-generations", str(gens), "--max-new-tokens", str(new_tokens),
                            "--micro-batch-size", str(micro), "--lr", "1e-5", "--rollout-cache", a.rollout_cache])
    model, tokenizer = grpo.build_policy(args)
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=args.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    texts = [f"Write a short note number {i} about the weather, in all lowercase letters." for i in range(prompts)]
    examples = [verify_lib.parse_example({"id": str(i), "prompt": t, "hard": [], "soft": []}) for i, t in
                enumerate(texts)]

    rows = []
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    for step in range(a.steps):
        sync()
        t0 = time.perf_counter()
        model.eval()
        ids, attn, completion_mask, truncated, answers = grpo.rollout(model, tokenizer, examples, args)
        sync()
        t1 = time.perf_counter()
        rewards = torch.tensor([float(t.count(",") % 2 == 0) for t in answers])
        advantages = grpo.group_advantages(rewards, gens).to(ids.device)
        n_prompt = ids.shape[1] - completion_mask.shape[1]
        grpo.policy_update(model, optimizer, scheduler, {"input_ids": ids, "attention_mask": attn,
                                                         "loss_mask": completion_mask, "advantages": advantages,
                                                         "n_prompt": n_prompt}, args)
        sync()
        t2 = time.perf_counter()
        new = int(completion_mask.sum())
        rows.append({"step": step, "generate_s": t1 - t0, "update_s": t2 - t1, "step_s": t2 - t0,
                     "new_tokens": new, "generate_tok_per_s": new / (t1 - t0),
                     "update_tok_per_s": int(attn.sum()) / (t2 - t1)})
        print(json.dumps(rows[-1]), flush=True)
    after_first = rows[1:] or rows
    result = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "params": sum(q.numel() for q in model.parameters()), "prompts": prompts, "generations": gens,
              "new_tokens": new_tokens, "rollout_cache": a.rollout_cache, "torch": torch.__version__,
              "transformers": transformers.__version__,
              "steps": rows, **{f"mean_{k}_after_first": sum(r[k] for r in after_first) / len(after_first)
                                for k in ("step_s", "generate_s", "update_s", "generate_tok_per_s", "update_tok_per_s")}}
    if torch.cuda.is_available():
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(result, indent=1))
    Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
