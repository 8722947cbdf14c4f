"""Benchmark: how fast ifbench_lib scores IFBench responses, strict + loose (as 05_eval.py does).

    .venv/bin/python bench/bench_ifbench.py [RESPONSES.jsonl ...]

Default: the kit's committed answers to the 300 prompts (docs/heldout/base and docs/heldout/rerun/grpo). Target:
300 responses in under 2 s on 2 cores. The first pass is reported separately: it imports nltk, emoji and syllapy and
loads the Punkt model and the POS tagger once per process; the timed passes clear verify_lib's tokenization caches.
"""
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import ifbench_lib  # noqa: E402
import verify_lib  # noqa: E402


def read(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def main(paths):
    rows = read(ifbench_lib.IFBENCH_INPUT)
    paths = paths or [ROOT / f"docs/heldout/{run}/ifbench_responses.jsonl" for run in ("base", "rerun/grpo")]
    for i, path in enumerate(paths):
        answers = {r["key"]: r["response"] for r in read(path)}
        responses = [answers[r["key"]] for r in rows]
        t = time.perf_counter()
        ifbench_lib.score_ifbench(rows, responses)
        first = time.perf_counter() - t
        best = float("inf")
        for _ in range(3):   # warm imports and models, cold caches: every text is tokenized again
            verify_lib.split_sentences.cache_clear(), verify_lib.word_tokenize.cache_clear()
            t = time.perf_counter()
            ifbench_lib.score_ifbench(rows, responses)
            best = min(best, time.perf_counter() - t)
        label = "first pass (imports, models) + " if i == 0 else ""
        print(f"{path}: {label}300 strict+loose {first:.2f} s; then best of 3 {best:.3f} s "
              f"({300 / best:,.0f} responses/s)")


if __name__ == "__main__":
    main(sys.argv[1:])
