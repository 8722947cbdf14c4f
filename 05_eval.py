"""05_eval.py — IFEval and held-out VerIF evaluation.

Built so far: scoring an existing responses file on IFEval (`--responses FILE`), with the four IFEval metrics
(prompt/instruction level x strict/loose) and accuracy per instruction category, all from verify_lib.

    python 05_eval.py --responses data/ifeval/input_response_data_gpt4_20231107_145030.jsonl

Not built yet (issue #7): generating responses with a model (HF / vLLM / an OpenAI-compatible server), held-out VerIF
scores on 01_build_data.py's eval file, and the side-by-side report (--compare).
"""
import argparse
import json
import sys
from pathlib import Path

import verify_lib

HERE = Path(__file__).resolve().parent


# ---- arguments ----
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--responses", type=Path,
                   help="JSONL of responses to score, one per prompt: {'prompt', 'response'} (or {'key', 'response'})")
    p.add_argument("--input", type=Path, default=HERE / "data/ifeval/input_data.jsonl",
                   help="IFEval prompts with instruction ids and kwargs (default: the 541 IFEval prompts in data/)")
    p.add_argument("--out", type=Path, help="write metrics and per-prompt verdicts here as JSON")
    return p.parse_args(argv)


# ---- joining responses to prompts ----
def align_responses(input_rows: list[dict], response_rows: list[tuple[int, dict]], path: Path) -> list[str]:
    """responses[i] answers input_rows[i]: joined by `key` when every response row has one, else by position when
    both files have the same length (the IFEval convention: the published GPT-4 file has an older wording of one
    prompt), else by prompt text."""
    for lineno, row in response_rows:
        if not isinstance(row, dict) or not isinstance(row.get("response"), str):
            sys.exit(f"{path}:{lineno}: each row needs a string 'response'")
    if all("key" in row for _, row in response_rows):
        by_key = {row["key"]: row["response"] for _, row in response_rows}
        missing = [r["key"] for r in input_rows if r["key"] not in by_key]
        if missing:
            sys.exit(f"{path}: no response for key(s) {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        return [by_key[r["key"]] for r in input_rows]
    if len(response_rows) == len(input_rows):
        differ = sum(row.get("prompt", r["prompt"]) != r["prompt"] for (_, row), r in zip(response_rows, input_rows))
        if differ:
            print(f"note: joined by position; {differ} prompt text(s) differ from {path.name}'s", file=sys.stderr)
        return [row["response"] for _, row in response_rows]
    by_prompt = {row.get("prompt"): row["response"] for _, row in response_rows}
    missing = [r["key"] for r in input_rows if r["prompt"] not in by_prompt]
    if missing:
        sys.exit(f"{path}: {len(response_rows)} rows for {len(input_rows)} prompts, and no response for the prompt "
                 f"of key(s) {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    return [by_prompt[r["prompt"]] for r in input_rows]


# ---- report ----
def print_report(metrics: dict, n: int) -> None:
    print(f"IFEval on {n} prompts")
    print(f"  prompt-level strict       {100 * metrics['prompt_strict']:6.2f}")
    print(f"  instruction-level strict  {100 * metrics['inst_strict']:6.2f}")
    print(f"  prompt-level loose        {100 * metrics['prompt_loose']:6.2f}")
    print(f"  instruction-level loose   {100 * metrics['inst_loose']:6.2f}")
    print("  per category (instruction-level strict / loose, count):")
    for category, acc in metrics["per_category"].items():
        print(f"    {category:22s} {100 * acc['strict']:6.2f} {100 * acc['loose']:6.2f}  {acc['total']:4d}")


def main(argv=None):
    args = parse_args(argv)
    if args.responses is None:
        sys.exit("05_eval.py: generating responses with a model is not built yet (issue #7); "
                 "score an existing file with --responses FILE")

    # ---- setup ----
    try:
        input_rows = [row for _, row in verify_lib.read_jsonl(args.input)]
        response_rows = list(verify_lib.read_jsonl(args.responses))
    except (OSError, ValueError) as e:
        sys.exit(f"05_eval.py: {e}")
    responses = align_responses(input_rows, response_rows, args.responses)

    # ---- score ----
    try:
        metrics = verify_lib.score_ifeval(input_rows, responses)
    except ValueError as e:
        sys.exit(f"05_eval.py: {args.input}: {e}")

    # ---- save and report ----
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(metrics, indent=1))
        tmp.replace(args.out)
    print_report(metrics, len(input_rows))


if __name__ == "__main__":
    main()
