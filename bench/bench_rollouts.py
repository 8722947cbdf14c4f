"""HF generate vs a vLLM server for 04_grpo.py's rollouts, on this machine, in one run: the CPU demo's step shape (8
prompts x 8 answers, the embedded model, LoRA r 16) at a few answer lengths. Each configuration runs 04_grpo.py itself
for --steps steps; step 1 samples the base model (on the server: no adapter yet), later steps the trained adapter, so
the table shows both; with --rollout-sync weights every step reloads merged weights. Start the policy server first (one-off: ~1 min, ~3 min more the first time for .venv-judge):

    bash scripts/serve_policy.sh "" 8001 &
    python bench/bench_rollouts.py --rollout-url http://127.0.0.1:8001/v1 --max-new-tokens 48 128

Time nothing else on the machine meanwhile: two heavy jobs on 2 cores slow each other several-fold.
"""
import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
grpo = importlib.import_module("04_grpo")


def run(backend_flags: list[str], max_new_tokens: int, steps: int, data: Path | None) -> list[dict]:
    out = Path(tempfile.mkdtemp(prefix="bench-rollouts-"))
    flags = ["--out-dir", str(out), "--steps", str(steps), "--max-new-tokens", str(max_new_tokens), *backend_flags]
    grpo.main(flags + (["--data", str(data)] if data else []))
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rollout-url", required=True,
                   help="scripts/serve_policy.sh's server, e.g. http://127.0.0.1:8001/v1")
    p.add_argument("--max-new-tokens", type=int, nargs="+", default=[48, 128], help="answer lengths (default 48 128)")
    p.add_argument("--backends", nargs="+", choices=["hf", "vllm lora", "vllm weights"],
                   default=["hf", "vllm lora", "vllm weights"], help="which rollout paths to time (default: all three)")
    p.add_argument("--steps", type=int, default=2, help="steps per configuration (default 2: base, then adapter)")
    p.add_argument("--data", type=Path, help="04_grpo.py --data (default: its own)")
    p.add_argument("--out", type=Path, default=Path("rollout_bench.json"))
    a = p.parse_args()

    rows = []
    for n in a.max_new_tokens:
        for backend, flags in (("hf", []), ("vllm lora", ["--rollout-url", a.rollout_url]),
                               ("vllm weights", ["--rollout-url", a.rollout_url, "--rollout-sync", "weights"])):
            if backend not in a.backends:
                continue
            for m in run(flags, n, a.steps, a.data):
                rows.append({"backend": backend, "max_new_tokens": n, "step": m["step"],
                             "sampled_from": "base" if backend == "vllm lora" and m["step"] == 1 else "adapter",
                             "length_mean": m["length_mean"], "seconds_generate": m["seconds_generate"],
                             "seconds_update": m["seconds_update"],
                             "seconds_step": m["seconds_generate"] + m["seconds_reward"] + m["seconds_update"],
                             "engine_logp_diff_mean": m.get("engine_logp_diff_mean")})
    print(f"\n{'backend':<12} {'new tok':>7} {'step':>4} {'sampled':>8} {'mean len':>8} {'generate s':>10} "
          f"{'update s':>8} {'step s':>7} {'|dlogp|':>8}")
    for r in rows:
        diff = "" if r["engine_logp_diff_mean"] is None else f"{r['engine_logp_diff_mean']:.1e}"
        print(f"{r['backend']:<12} {r['max_new_tokens']:>7} {r['step']:>4} {r['sampled_from']:>8} "
              f"{r['length_mean']:>8.1f} {r['seconds_generate']:>10.1f} {r['seconds_update']:>8.1f} "
              f"{r['seconds_step']:>7.1f} {diff:>8}")
    a.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
