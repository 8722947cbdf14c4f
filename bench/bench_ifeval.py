"""Benchmark: how fast verify_lib scores IFEval responses.

    .venv/bin/python bench/bench_ifeval.py

(1) all 541 GPT-4 responses, strict + loose (score_ifeval, as 05_eval.py does);
(2) 512 responses of a typical RL step, strict only: every hard constraint of every response through ifeval_follows,
    as the reward does. Target: well under a second on 2 cores.
The first pass is reported separately: it imports nltk and langdetect and loads their models once per process.
"""
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import verify_lib  # noqa: E402

DATA = ROOT / "data/ifeval"


def read(name):
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def rl_step(rows, responses):
    return [all(verify_lib.ifeval_follows(i, kw, r) for i, kw in zip(row["instruction_id_list"], row["kwargs"]))
            for row, r in zip(rows, responses)]


def timed(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    rows, responses = read("input_data.jsonl"), [r["response"] for r in read("input_response_data_gpt4_20231107_145030.jsonl")]
    t = time.perf_counter()
    verify_lib.score_ifeval(rows, responses)
    print(f"first pass (imports + model loading + 541 strict+loose): {time.perf_counter() - t:.2f} s")
    cold = lambda: (verify_lib._detect_language.cache_clear(), verify_lib.split_sentences.cache_clear(),  # noqa: E731
                    verify_lib.word_tokenize.cache_clear())   # warm imports, cold caches: every text analysed again

    full = timed(lambda: (cold(), verify_lib.score_ifeval(rows, responses)), 3)
    print(f"541 responses strict+loose: {full:.3f} s  ({541 / full:,.0f} responses/s)")
    step_rows, step_responses = rows[:512], responses[:512]
    step = timed(lambda: (cold(), rl_step(step_rows, step_responses)), 5)
    n_checks = sum(len(r["instruction_id_list"]) for r in step_rows)
    print(f"RL step, 512 responses strict ({n_checks} checks): {step:.3f} s  ({512 / step:,.0f} responses/s)")


if __name__ == "__main__":
    main()
