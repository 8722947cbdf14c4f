"""One GRPO step of 04_grpo.py on one GPU, in the shape of ../shared/bench/trl_grpo_bench.py (TRL's GRPOTrainer), run
beside it in the same command on the same card, so that step times and peak memories compare as ratios.

Model: Qwen2.5-0.5B's shape with random weights and the vocabulary of a tokenizer folder (--tok; default the embedded
SmolLM2 tokenizer), bf16 on a GPU, LoRA r=16 / alpha 32 on every linear layer, beta 1e-3; 32 prompts x 16 samples x
512 new tokens, micro-batches of 32. The reward is the TRL bench's (even number of commas): cheap, and not constant on
random text. For each rollout path asked for, prints generation tokens/s, update tokens/s, step time and peak memory;
then TRL's, and the ratios (one JSON object, also --out). Targets (issue #12): compiled HF rollouts <= 0.5x TRL's step
time, vLLM rollouts <= 0.25x, peak trainer memory no higher than TRL's.

    python bench/bench_grpo_step.py --tok TOK --rollouts dynamic static --trl-bench ../shared/bench/trl_grpo_bench.py
    python bench/bench_grpo_step.py --model-dir /tmp/qwen-shape --save-only        # the model, for a policy server:
    bash scripts/serve_policy.sh /tmp/qwen-shape 8001 &                            # (its own GPU share, see README)
    python bench/bench_grpo_step.py --model-dir /tmp/qwen-shape --rollouts server --rollout-url http://127.0.0.1:8001/v1
    python bench/bench_grpo_step.py --small --rollouts dynamic                     # a CPU smoke run: tiny model, batch
"""
import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rollout_server  # noqa: E402
import verify_lib  # noqa: E402

grpo = importlib.import_module("04_grpo")


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_model(model_dir: Path, tok, small: bool) -> Path:
    """Qwen2.5-0.5B's shape (or a tiny one) with random weights, saved once in model_dir (reused when it exists)."""
    if (model_dir / "config.json").exists():
        return model_dir
    if small:
        shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2)
    else:  # Qwen2.5-0.5B
        shape = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                     num_key_value_heads=2, max_position_embeddings=4096, rope_theta=1e6)
    config = transformers.Qwen2Config(vocab_size=len(tok), tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, **shape)
    torch.manual_seed(0)
    transformers.Qwen2ForCausalLM(config).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return model_dir


def time_steps(model_dir: Path, rollouts: str, sizes: tuple, a) -> dict:
    """a.steps GRPO steps of 04_grpo.py's own functions with one rollout path: dynamic or static (HF generate; static
    compiles the decoding step on a GPU) or server (a vLLM server at --rollout-url)."""
    prompts, gens, new_tokens, micro = sizes
    flags = ["--setting", "paper", "--model", str(model_dir), "--prompts-per-step", str(prompts),
             "--num-generations", str(gens), "--max-new-tokens", str(new_tokens), "--micro-batch-size", str(micro),
             "--lr", "1e-5", "--rollout-cache", "static" if rollouts == "static" else "dynamic"]
    args = grpo.parse_args(flags + (["--rollout-url", a.rollout_url] if rollouts == "server" else []))
    torch.manual_seed(0)
    model, tokenizer = grpo.build_policy(args)
    stop_ids = verify_lib.stop_token_ids(model, tokenizer)
    server = rollout_server.PolicyServer(a.rollout_url, "policy") if rollouts == "server" else None
    settings = grpo.UpdateSettings.of(args)
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=args.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    texts = [f"Write a short note number {i} about the weather, in all lowercase letters." for i in range(prompts)]
    examples = [verify_lib.parse_example({"id": str(i), "prompt": t, "hard": [], "soft": []}) for i, t in
                enumerate(texts)]
    rows = []
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        for step in range(1, a.steps + 1):
            sync()
            t0 = time.perf_counter()
            r = grpo.sample(model, tokenizer, server, examples, stop_ids, step, n=gens, temperature=args.temperature,
                            max_new_tokens=new_tokens, cache=args.rollout_cache)
            sync()
            t1 = time.perf_counter()
            rewards = torch.tensor([float(t.count(",") % 2 == 0) for t in r.texts])
            grpo.policy_update(model, optimizer, scheduler, r.to(model.device),
                               grpo.group_advantages(rewards, gens).to(model.device),
                               r.completion_mask.to(model.device), settings)
            sync()
            t2 = time.perf_counter()
            new, attn = int(r.completion_mask.sum()), r.attention_mask
            rows.append({"step": step, "generate_s": t1 - t0, "update_s": t2 - t1, "step_s": t2 - t0,
                         "new_tokens": new, "generate_tok_per_s": new / (t1 - t0),
                         "update_tok_per_s": int(attn.sum()) / (t2 - t1)})
            print(rollouts, json.dumps(rows[-1]), flush=True)
    finally:
        if server is not None:
            server.close()
    after_first = rows[1:] or rows
    result = {"rollouts": rollouts, "steps": rows, **{f"mean_{k}_after_first": sum(r[k] for r in after_first) /
              len(after_first) for k in ("step_s", "generate_s", "update_s", "generate_tok_per_s", "update_tok_per_s")}}
    if torch.cuda.is_available():
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del model, optimizer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tok", help="tokenizer folder (default: the embedded SmolLM2's)")
    p.add_argument("--small", action="store_true", help="tiny CPU smoke settings")
    p.add_argument("--steps", type=int, default=3, help="steps to time; the first is reported apart (warm-up)")
    p.add_argument("--rollouts", nargs="+", choices=["dynamic", "static", "server"], default=["dynamic", "static"],
                   help="rollout paths to time, one after the other: HF generate with a dynamic or a static cache "
                        "(compiled decoding on a GPU), or a vLLM server (--rollout-url)")
    p.add_argument("--rollout-url", help="scripts/serve_policy.sh serving --model-dir, for --rollouts server")
    p.add_argument("--model-dir", type=Path, help="where the random model is saved (default: a temporary folder)")
    p.add_argument("--save-only", action="store_true", help="save the model in --model-dir and stop")
    p.add_argument("--trl-bench", type=Path, help="../shared/bench/trl_grpo_bench.py: run it after ours, print ratios")
    p.add_argument("--out", default="grpo_bench.json")
    a = p.parse_args()
    if "server" in a.rollouts and not (a.rollout_url and a.model_dir):
        p.error("--rollouts server needs --rollout-url and the --model-dir that server serves")

    tok = transformers.AutoTokenizer.from_pretrained(a.tok or verify_lib.embedded_model_dir())
    model_dir = bench_model(a.model_dir or Path(tempfile.mkdtemp(prefix="grpo-bench-")) / "model", tok, a.small)
    if a.save_only:
        print(f"model saved in {model_dir}")
        return
    sizes = (4, 4, 16, 8) if a.small else (32, 16, 512, 32)
    result = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "prompts, generations, new tokens, micro-batch": sizes, "torch": torch.__version__,
              "transformers": transformers.__version__,
              "ours": [time_steps(model_dir, r, sizes, a) for r in a.rollouts]}
    if a.trl_bench:
        trl_out = Path(a.out).with_name("trl_bench.json")
        subprocess.run([sys.executable, str(a.trl_bench), "--tok", str(model_dir), "--steps", str(a.steps),
                        "--out", str(trl_out)] + (["--small"] if a.small else []), check=True)
        trl = json.loads(trl_out.read_text())
        result["trl"] = {k: trl[k] for k in ("trl", "trl_step_s", "trl_step_s_after_first", "trl_peak_gib",
                                             "hf_generate_tok_per_s") if k in trl}
        for ours in result["ours"]:
            ours["step_time_vs_trl"] = ours["mean_step_s_after_first"] / trl["trl_step_s_after_first"]
            if "peak_gib" in ours and "trl_peak_gib" in trl:
                ours["peak_memory_vs_trl"] = ours["peak_gib"] / trl["trl_peak_gib"]
    print(json.dumps(result, indent=1))
    for ours in result["ours"]:
        print(f"{ours['rollouts']:>8}: step {ours['mean_step_s_after_first']:.2f} s"
              + (f", {ours['step_time_vs_trl']:.2f}x TRL's" if "step_time_vs_trl" in ours else "")
              + (f", peak {ours['peak_gib']:.1f} GiB" if "peak_gib" in ours else "")
              + (f" ({ours['peak_memory_vs_trl']:.2f}x TRL's)" if "peak_memory_vs_trl" in ours else ""))
    Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
