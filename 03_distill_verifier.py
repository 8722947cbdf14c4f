"""03_distill_verifier.py — distil a judge into a small student verifier: label, train, evaluate, export.

    python 03_distill_verifier.py                                   # code checkers teach the embedded SmolLM2-135M
    python 03_distill_verifier.py --teacher-url http://127.0.0.1:8000/v1 --teacher-model judge   # an LLM teacher
    bash scripts/serve_judge.sh runs/distill/student                 # then serve the student as the judge

VerIF's IF-Verifier-7B is a student of QwQ-32B: about 130k of QwQ's verdicts (the same judge prompt the RL reward
uses), learnt by supervised fine-tuning of R1-Distill-Qwen-7B (2 epochs, lr 2e-5), so that one GPU serves the judge
instead of eight. This stage does the same, small enough to run and measure on a CPU, in five steps:

  1. label     judge prompts (verify_lib.judge_prompt: instruction, response, constraints) for the examples of
               --data and --eval-data, each with two responses: its reference answer (01_build_data.py) and the
               reference of another example of the same instruction, which was shaped by other constraints and often
               breaks these; or with --responses, your own. The teacher answers each prompt: an OpenAI-compatible
               server (--teacher-url: the soft constraints, as the RL judge sees them), or by default the code
               checkers on the hard constraints, their per-constraint results written as a short rationale in
               <think> ... </think> followed by the verdict, the shape of a reasoning judge's answer.
  2. evaluate  the student before training on the --eval-data prompts (held out: 01_build_data.py splits by source
               instruction): agreement with the teacher (accuracy, precision and recall of [[1]]), share of
               unparseable answers, mean tokens and seconds per verdict, for the student and the teacher.
  3. train     LoRA SFT of the student on the teacher's answers to the --data prompts: 02_sft.py, run in process.
  4. export    the merged student, a plain HF folder that vLLM serves as the judge (scripts/serve_judge.sh).
  5. evaluate  the student after training, as in step 2.
  6. bench     the constraint part of 05_eval.py's judge bench for the trained student and its teacher: IFEval
               instructions of the kit's committed answers (docs/heldout), each judged as if it were soft, against
               the exact rule verdict (balanced accuracy, true-positive and true-negative rates, 95 % intervals,
               beside the floors of a judge that always says "follows" and of a coin). A served student is measured
               the same way by `05_eval.py --judge-bench constraints --judge-url ...`.

Outputs in --out-dir (default runs/distill): labels_train.jsonl and labels_eval.jsonl (chat rows for SFT, with the
teacher's verdict and timing), sft/ (02_sft.py's run), student/ (the export), predictions_{before,after}.jsonl and
report.json (the evaluation; "bench": step 6).
"""
import argparse
import importlib
import json
import random
import shutil
import sys
import time
from pathlib import Path

import verify_lib

HERE = Path(__file__).resolve().parent          # default paths are beside this script, from any working directory


# ---- arguments ----
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=verify_lib.HelpFormatter)
    a = p.add_argument
    a("--data", type=Path, default=HERE / "data/verif_train.jsonl",
      help="examples whose judge prompts train the student")
    a("--eval-data", type=Path, default=HERE / "data/verif_eval.jsonl", help="held-out examples for the evaluation")
    a("--responses", type=Path, nargs="*",
      help='{"id", "response"} files to judge instead of the references (default: <data>_references.jsonl, each '
           "reference paired with its own example and with a sibling of the same instruction)")
    a("--teacher-url", help="OpenAI-compatible teacher, e.g. QwQ-32B on vLLM (default: the code checkers)")
    a("--teacher-model", default="judge", help="the teacher's model name on that server")
    a("--teacher-max-tokens", type=int, default=4096, help="tokens per teacher answer (a reasoning model thinks first)")
    a("--model", type=verify_lib.model_arg, help="the student: HF folder or hub id (default: the embedded SmolLM2-135M-Instruct)")
    a("--out-dir", type=Path, default=HERE / "runs/distill", help="the run folder: labels, sft/, student/, report.json")
    a("--limit", type=int, default=0, help="use only the first N examples of --data and of --eval-data (0: all)")
    a("--epochs", type=int, default=1, help="SFT epochs (IF-Verifier-7B: 2), capped by --max-steps")
    a("--max-steps", type=int, default=40, help="SFT optimizer steps at most (40 x 8 chats: the CPU default, ~14 min "
                                                "on 2 cores; 0: all --epochs)")
    a("--lr", type=float, default=2e-4, help="SFT learning rate for LoRA (IF-Verifier-7B: 2e-5, all weights)")
    a("--batch-size", type=int, default=8, help="SFT sequences per optimizer step")
    a("--max-len", type=int, default=1024, help="SFT tokens per example (longer ones are cut from the right)")
    a("--sft-args", default="", help='more 02_sft.py flags, one string, e.g. "--load-in-4bit --lora-r 32"')
    a("--max-new-tokens", type=int, default=96, help="the student's answer length limit in the evaluation (the code "
                                                     "teacher's answers take 20-60 tokens)")
    a("--eval-batch-size", type=int, default=16, help="judge prompts per generate call in the evaluation")
    a("--skip-before", action="store_true", help="do not evaluate the untrained student")
    a("--bench-constraints", type=int, default=96,
      help="step 6: IFEval constraints of 05_eval.py's judge bench, drawn at random with seed 0 from the 1668 of "
           "docs/heldout's answers, that the trained student and the teacher judge (0: skip step 6)")
    a("--overwrite", action="store_true", help="replace what --out-dir holds (default: a folder that holds another "
                                               "run is refused)")
    a("--seed", type=int, default=0, help="the student's training (passed to 02_sft.py)")
    args = p.parse_args(argv)
    verify_lib.check_numbers(p, args, {     # at once, not after the labels are paid for (--limit -3 drops 3 rows)
        "limit": 0, "max_steps": 0, "bench_constraints": 0, "epochs": 1, "batch_size": 1, "max_len": 1,
        "max_new_tokens": 1, "eval_batch_size": 1, "teacher_max_tokens": 1}, positive=("lr",))
    return args


# ---- heavy imports, after the arguments: --help and a bad flag answer at once, before torch loads (seconds) ----
if __name__ == "__main__":
    parse_args()
verify_lib.quiet_libraries()
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

sft = importlib.import_module("02_sft")  # step 2 is stage 02 itself, called in process
eval05 = importlib.import_module("05_eval")   # step 6 is 05_eval.py's judge bench, its constraint part


# ---- inputs ----
def load_split(path: Path, limit: int):
    """(examples, {id: reference answer}) of one split; the references are 01_build_data.py's <stem>_references.jsonl
    where it exists."""
    examples = verify_lib.load_examples(path)[: limit or None]
    ref_path = path.with_name(path.stem + "_references.jsonl")
    references = read_responses([ref_path]) if ref_path.exists() else {}
    return examples, {key: answers[0] for key, answers in references.items()}


def read_responses(paths) -> dict[str, list[str]]:
    """{id: [responses]} from the {"id", "response"} files (verify_lib.read_responses names a bad row's file and line)."""
    responses: dict[str, list[str]] = {}
    for path in paths:
        for _, id_, response in verify_lib.read_responses(path):
            responses.setdefault(id_, []).append(response)
    return responses


def check_teacher(args) -> None:
    """--teacher-url up and serving --teacher-model, or one line saying why (not a share of dropped labels later)."""
    if args.teacher_url:
        verify_lib.checked_client(verify_lib.ChatClient(args.teacher_url, args.teacher_model),
                                  "03_distill_verifier.py: --teacher-url").close()


# ---- step 1: label ----
def judge_pairs(examples, references, responses):
    """(example, response) pairs to judge. Without --responses: each example with its own reference (it follows every
    hard constraint by construction) and with the reference of a sibling (another example of the same instruction,
    composed with other constraints), so that both verdicts are common. With --responses: those, by id."""
    if responses is not None:
        return [(ex, r) for ex in examples for r in responses.get(ex.id, [])]
    siblings: dict[str, list] = {}
    for ex in examples:
        siblings.setdefault(ex.id.rsplit("-", 1)[0], []).append(ex)
    pairs = []
    for ex in examples:
        if ex.id not in references:
            continue
        pairs.append((ex, references[ex.id]))
        others = [s for s in siblings[ex.id.rsplit("-", 1)[0]] if s.id != ex.id and s.id in references]
        if others:
            pairs.append((ex, references[random.choice(others).id]))
    return pairs


def code_teacher(pairs) -> list[dict]:
    """The code checkers as a teacher: each hard constraint with a text is checked by code; the answer is a short
    rationale, one line per constraint, in <think> ... </think>, then [[1]] if all hold, else [[0]] and the first
    that fails."""
    checkable = [(ex, r, [h for h in ex.hard if h.get("text")]) for ex, r in pairs]
    checkable = [(ex, r, hard) for ex, r, hard in checkable if hard]
    start = time.perf_counter()
    plain = [verify_lib.Example(ex.id, ex.prompt, ex.messages, hard, [], ex.source) for ex, _, hard in checkable]
    results = verify_lib.verif_reward(plain, [r for _, r, _ in checkable], None, "rule_only")
    seconds = (time.perf_counter() - start) / max(len(checkable), 1)
    labels = []
    for (ex, response, hard), result in zip(checkable, results):
        lines = [f"Constraint {i}: {'satisfied' if c.passed else 'not satisfied'}."
                 for i, c in enumerate(result.hard, start=1)]
        failed = [i for i, c in enumerate(result.hard, start=1) if not c.passed]
        verdict = 0 if failed else 1
        reason = f"Constraint {failed[0]} is not satisfied." if failed else "Every constraint is satisfied."
        labels.append(dict(id=ex.id, prompt=verify_lib.judge_prompt(ex.instruction, response, [h["text"] for h in hard]),
                           answer="<think>\n" + "\n".join(lines) + f"\n</think>\n[[{verdict}]] {reason}",
                           verdict=verdict, seconds=seconds))
    return labels


def llm_teacher(pairs, args) -> list[dict]:
    """An LLM teacher behind an OpenAI-compatible API, asked exactly what the RL judge is asked: the soft
    constraints. Answers without a verdict (unparseable, cut off, failed calls) are dropped and counted."""
    asked = [(ex, r) for ex, r in pairs if ex.soft]
    prompts = [verify_lib.judge_prompt(ex.instruction, r, ex.soft) for ex, r in asked]
    with verify_lib.ChatClient(args.teacher_url, args.teacher_model, max_tokens=args.teacher_max_tokens) as teacher:
        start = time.perf_counter()
        completions = teacher.complete(prompts)
        seconds = (time.perf_counter() - start) / max(len(prompts), 1)  # wall time per verdict, calls in parallel
    labels, dropped = [], 0
    for (ex, _), prompt, c in zip(asked, prompts, completions):
        verdict = verify_lib.parse_verdict(c.text or "", truncated=c.finish_reason == "length").value
        if c.error or verdict is None:
            dropped += 1
            continue
        labels.append(dict(id=ex.id, prompt=prompt, answer=c.text, verdict=verdict, seconds=seconds))
    if dropped:
        print(f"03_distill_verifier.py: {dropped} teacher answers without a verdict were dropped", file=sys.stderr)
    return labels


def write_labels(labels, path: Path) -> None:
    """Chat rows that 02_sft.py reads (the judge prompt as the user turn, the teacher's answer as the assistant's),
    with the teacher's verdict and seconds kept for the evaluation; written atomically."""
    rows = [{"id": row["id"], "messages": [{"role": "user", "content": row["prompt"]},
                                           {"role": "assistant", "content": row["answer"]}],
             "verdict": row["verdict"], "teacher_seconds": row["seconds"]} for row in labels]
    verify_lib.save_files_atomically({path: "".join(json.dumps(r) + "\n" for r in rows)})


def label(split: str, examples, references, responses, args) -> list[dict]:
    """Step 1 for one split: pair, ask the teacher, write labels_<split>.jsonl."""
    pairs = judge_pairs(examples, references, responses)
    labels = llm_teacher(pairs, args) if args.teacher_url else code_teacher(pairs)
    if not labels:
        sys.exit(f"03_distill_verifier.py: no {split} prompt to label (the code teacher needs hard constraints "
                 "with a text; an LLM teacher needs soft constraints)")
    write_labels(labels, args.out_dir / f"labels_{split}.jsonl")
    print(f"label {split}: {len(labels)} judge prompts, teacher says [[1]] on {sum(r['verdict'] for r in labels)}")
    return labels


# ---- steps 2 and 5: evaluate the student ----
@torch.no_grad()
def student_verdicts(model, tokenizer, prompts, args) -> list[dict]:
    """Greedy answers of the student to judge prompts, with their verdicts, token counts and seconds per verdict."""
    model.eval()
    rows = []
    for i in tqdm(range(0, len(prompts), args.eval_batch_size), desc="student verdicts"):
        chunk = prompts[i:i + args.eval_batch_size]
        inputs = tokenizer.apply_chat_template([[{"role": "user", "content": p}] for p in chunk],
                                               add_generation_prompt=True, padding=True, return_tensors="pt",
                                               return_dict=True).to(model.device)
        start = time.perf_counter()
        out = model.generate(**inputs, do_sample=False, max_new_tokens=args.max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id)
        seconds = (time.perf_counter() - start) / len(chunk)
        for row in out[:, inputs["input_ids"].shape[1]:]:                # [new tokens]
            ended = (row == tokenizer.eos_token_id).nonzero()
            n = int(ended[0]) + 1 if len(ended) else len(row)
            text = tokenizer.decode(row[:n], skip_special_tokens=True)
            verdict = verify_lib.parse_verdict(text, truncated=not len(ended))
            rows.append({"answer": text, "verdict": verdict.value, "tokens": n, "seconds": seconds})
    return rows


def agreement(predicted, teacher) -> dict:
    """Agreement with the teacher over all held-out prompts; an unparseable answer counts as a disagreement.
    Precision and recall are of the verdict [[1]] (the response passes)."""
    pairs = list(zip(predicted, teacher))
    tp = sum(p == 1 and t == 1 for p, t in pairs)
    said_one, is_one = sum(p == 1 for p, _ in pairs), sum(t == 1 for _, t in pairs)
    return {"n": len(pairs), "accuracy": sum(p == t for p, t in pairs) / max(len(pairs), 1),
            "precision_pass": tp / said_one if said_one else float("nan"),
            "recall_pass": tp / is_one if is_one else float("nan"),
            "unparseable_share": sum(p is None for p, _ in pairs) / max(len(pairs), 1),
            "teacher_pass_share": is_one / max(len(pairs), 1)}


def evaluate(model_dir, labels, args, name: str) -> dict:
    """The student in model_dir against the teacher on the held-out labels; its answers go to predictions_<name>."""
    model, tokenizer = verify_lib.load_model(model_dir)
    rows = student_verdicts(model, tokenizer, [r["prompt"] for r in labels], args)
    with open(args.out_dir / f"predictions_{name}.jsonl", "w", encoding="utf-8") as f:
        for label, row in zip(labels, rows):
            f.write(json.dumps({"id": label["id"], "teacher": label["verdict"], "student": row["verdict"],
                                "answer": row["answer"]}) + "\n")
    teacher_tokens = [len(tokenizer(r["answer"], add_special_tokens=False)["input_ids"]) for r in labels]
    return {**agreement([r["verdict"] for r in rows], [r["verdict"] for r in labels]),
            "student_tokens_per_verdict": sum(r["tokens"] for r in rows) / max(len(rows), 1),
            "student_seconds_per_verdict": sum(r["seconds"] for r in rows) / max(len(rows), 1),
            "teacher_tokens_per_verdict": sum(teacher_tokens) / max(len(labels), 1),
            "teacher_seconds_per_verdict": sum(r["seconds"] for r in labels) / max(len(labels), 1)}


def print_report(report) -> None:
    keys = ["accuracy", "precision_pass", "recall_pass", "unparseable_share", "student_tokens_per_verdict",
            "student_seconds_per_verdict", "teacher_tokens_per_verdict", "teacher_seconds_per_verdict"]
    print(f"{'held-out, vs the teacher':32s}" + "".join(f"{k:>12s}" for k in ("before", "after")))
    for key in keys:
        print(f"{key:32s}" + "".join(f"{report[k][key]:12.4g}" if k in report else f"{'':12s}"
                                     for k in ("before", "after")))
    for who, part in report.get("bench", {}).items():
        eval05.print_bench_part("constraints", part, f"the {who} on the judge bench")


# ---- step 6: the judge bench's constraint part, for the student and the teacher ----
def student_judge(model_dir, args) -> "eval05.BenchJudge":
    """The student in model_dir as a bench judge: its greedy answers to the judge prompts, read by parse_verdict."""
    model, tokenizer = verify_lib.load_model(model_dir)

    def judge(cases):
        rows = student_verdicts(model, tokenizer, [verify_lib.judge_prompt(*c.item) for c in cases], args)
        return [verify_lib.Verdict(r["verdict"], r["answer"], None if r["verdict"] is not None else "unparseable")
                for r in rows]
    return judge


def teacher_judge(args) -> "eval05.BenchJudge":
    """The teacher as a bench judge: a served one through verify_lib.Judge (the RL judge's client and prompt), or the
    code checkers on each case's rule constraint, through code_teacher as in step 1."""
    if args.teacher_url:
        return eval05.served_judge(verify_lib.Judge(args.teacher_url, args.teacher_model,
                                                    max_tokens=args.teacher_max_tokens))

    def judge(cases):
        pairs = [(verify_lib.Example(f"bench-{i}", c.instruction, None, [c.hard], []), c.response)
                 for i, c in enumerate(cases)]
        return [verify_lib.Verdict(label["verdict"], label["answer"]) for label in code_teacher(pairs)]
    return judge


def bench(student_dir, args) -> dict:
    """{"teacher": part, "student": part}: 05_eval.bench_part on --bench-constraints cases of the constraint part."""
    cases = eval05.draw(eval05.constraint_cases(eval05.BENCH_ANSWERS, eval05.IFEVAL_INPUT), args.bench_constraints)
    return {"teacher": eval05.bench_part("constraints", cases, teacher_judge(args)),
            "student": eval05.bench_part("constraints", cases, student_judge(student_dir, args))}


# ---- step 3: train ----
def train_student(args) -> dict:
    """LoRA SFT of the student on labels_train.jsonl, 02_sft.py run in process; its merged model is the student."""
    return sft.main(["--data", str(args.out_dir / "labels_train.jsonl"),
                     "--eval-data", str(args.out_dir / "labels_eval.jsonl"), "--out-dir", str(args.out_dir / "sft"),
                     "--epochs", str(args.epochs), "--max-steps", str(args.max_steps), "--lr", str(args.lr),
                     "--batch-size", str(args.batch_size), "--grad-accum", "1", "--max-len", str(args.max_len),
                     "--seed", str(args.seed), "--eval-every", "1000000",  # held-out loss before and after only
                     "--merge", *([] if args.model is None else ["--model", str(args.model)]),
                     *args.sft_args.split()])


def main(argv=None):
    args = parse_args(argv)

    # ---- setup ----
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    try:
        splits = {"train": load_split(args.data, args.limit), "eval": load_split(args.eval_data, args.limit)}
        responses = read_responses(args.responses) if args.responses else None
    except (OSError, verify_lib.ExampleError, ValueError) as e:
        sys.exit(f"03_distill_verifier.py: {e}" + ("\n  (make the data with: python 01_build_data.py)"
                                                   if isinstance(e, FileNotFoundError) else ""))
    check_teacher(args)
    try:
        verify_lib.claim_run_dir(args.out_dir, overwrite=args.overwrite)
    except FileExistsError as e:
        sys.exit(f"03_distill_verifier.py: {e}")

    # ---- 1. label ----
    labels = {split: label(split, examples, references, responses, args)
              for split, (examples, references) in splits.items()}

    # ---- 2. the student before training ----
    report = {"teacher": args.teacher_url or "code checkers", "student": args.model or verify_lib.EMBEDDED_MODEL,
              "labels": {k: len(v) for k, v in labels.items()}}
    if not args.skip_before:
        report["before"] = evaluate(args.model, labels["eval"], args, "before")

    # ---- 3. train: 02_sft.py on the teacher's answers ----
    trained = train_student(args)

    # ---- 4. export: the merged student, renamed into place ----
    student = args.out_dir / "student"
    shutil.rmtree(student, ignore_errors=True)
    Path(trained["merged"]).rename(student)

    # ---- 5. the student after training ----
    report["after"] = evaluate(student, labels["eval"], args, "after")

    # ---- 6. the judge bench's constraint part: the student and its teacher against the rule verdicts ----
    if args.bench_constraints:
        report["bench"] = bench(student, args)
    verify_lib.save_files_atomically({args.out_dir / "report.json": json.dumps(report, indent=1)})
    print_report(report)
    print(f"student in {student}; serve it as the judge: bash scripts/serve_judge.sh {student}")
    return report


if __name__ == "__main__":
    main()
