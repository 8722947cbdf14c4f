"""01_build_data.py — VerInstruct-style data: constraint back-translation with an LLM, an offline composer, import.

VerIF trains on VerInstruct (about 22k instructions, 6.2 constraints each, 22 % hard / 78 % soft), made by
*constraint back-translation*: an LLM reads an instruction and a response and writes down constraints that the
response already satisfies; code is written for the hard ones. This stage makes such data in verify_lib's canonical
schema, three ways:

    python 01_build_data.py --backtranslate --llm-url http://127.0.0.1:8000/v1 --llm-model judge   # VerIF's method
    python 01_build_data.py                          # offline: compose constraints onto the seeds in data/
    python 01_build_data.py --input verinstruct.jsonl ifeval.jsonl      # import

Inputs (--input, any mix, one format per row): seeds, {instruction, response} or a chat {messages} ending in the
assistant's reply, optionally with "soft" constraints true of the response and a "title" (data/seeds.jsonl: 289
everyday instructions with reference answers); VerInstruct rows (prompt, checkers, functions); IFEval rows (key,
prompt, instruction_id_list, kwargs); canonical rows. Seeds are composed (default) or back-translated; the others are
converted as they are.

The composer is back-translation without an LLM: it draws 2-4 constraints that never contradict each other, from
IFEval's kinds and the kit's own (verify_lib section 3b: first and last words, numbered lists, headings, sentence
lengths, word order, ...), the least used kinds first and always one that junk text cannot meet; it rewrites the
reference response where a constraint shapes it (a title, a numbered list, a TL;DR line, lowercase, ...), reads
every count off the result with verify_lib's own checker (fewer than N words, the word "X" at least K times), keeps a
constraint only if the reference then follows it, and words each in phrasings of its own (none is IFEval's or
IFBench's). Soft constraints come from the seed (tone, audience, style), written to be true of its reference. So
every prompt has a response that satisfies it: the reference. `--composer ifeval` is the first composer (IFEval's
kinds only, in IFEval-like words), kept so that the data of docs/heldout/train can be rebuilt byte for byte.

Outputs, in --out-dir (default data/; 04_grpo.py reads data/verif_train.jsonl):
    verif_train.jsonl, verif_eval.jsonl            canonical examples, split by source instruction
    verif_train_references.jsonl, verif_eval_...   {"id", "response"}: the reference answer of each row that has one
                                                   (composed: it follows every hard constraint; back-translated: the
                                                   response the constraints were read from), for SFT
    backtranslate_state.jsonl                      back-translation progress: a rerun skips the seeds already done
                                                   (by model, request and response); delete it to start over
"""
import argparse
import ast
import collections
import dataclasses
import hashlib
import json
import random
import re
import statistics
import sys
from pathlib import Path
from typing import Callable

from tqdm import tqdm

import verify_lib
from verify_lib import Example

HERE = Path(__file__).resolve().parent
VERINSTRUCT = {"rows": 22_000, "constraints_per_row": 6.2, "hard_share": 0.22}  # the VerIF paper's figures


# ---- arguments ----
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=verify_lib.HelpFormatter)
    p.add_argument("--input", type=Path, nargs="+", default=[HERE / "data/seeds.jsonl"],
                   help="JSONL files: seeds, VerInstruct, IFEval or canonical rows (default: data/seeds.jsonl, "
                        "289 everyday instructions with reference responses)")
    p.add_argument("--out-dir", type=Path, default=HERE / "data", help="where the outputs go (default: data/)")
    p.add_argument("--seed", type=int, default=0, help="random seed: same seed and inputs, same files")
    p.add_argument("--skip-bad", action="store_true", help="skip and count bad input rows instead of stopping")
    p.add_argument("--limit", type=int, default=0,
                   help="use only the first N seeds (default 0: all; imported rows are not limited)")
    p.add_argument("--eval-share", type=float, default=0.1,
                   help="share of source instructions held out for evaluation (default 0.1)")
    g = p.add_argument_group("composer (the offline default)")
    g.add_argument("--composer", choices=("mixed", "ifeval"), default="mixed",
                   help="mixed: IFEval's kinds and the kit's own (verify_lib 3b), balanced, 2-4 per prompt, at least "
                        "one junk-proof, in wordings of our own (default); ifeval: the first composer, IFEval's 25 "
                        "kinds in IFEval-like wordings, 1-4 per prompt (docs/heldout/train was trained on its output, "
                        "which it rebuilds byte for byte)")
    g.add_argument("--per-seed", type=int, default=3,
                   help="composed prompts per seed instruction, each with other constraints (default 3)")
    g.add_argument("--min-hard", type=int,
                   help="hard constraints per prompt, at least (default 2 mixed, 1 ifeval)")
    g.add_argument("--max-hard", type=int, default=4,
                   help="... and at most (default 4; VerInstruct averages 6.2 constraints with 22 %% hard: ~1.4; "
                        "AllenAI's IF-RLVR found 2-6 per prompt better than 1)")
    g.add_argument("--max-soft", type=int, default=3, help="soft constraints per prompt, at most (default 3)")
    g = p.add_argument_group("back-translation with an LLM (VerIF's method)")
    g.add_argument("--backtranslate", action="store_true", help="ask an LLM for constraints instead of composing")
    g.add_argument("--llm-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--llm-model", help="model name on that server (scripts/serve_judge.sh serves 'judge')")
    g.add_argument("--llm-max-tokens", type=int, default=2048,
                   help="tokens per answer (default 2048; a reasoning model such as QwQ-32B needs more)")
    g.add_argument("--llm-temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    g.add_argument("--llm-concurrency", type=int, default=32, help="requests in flight (default 32)")
    g.add_argument("--llm-timeout", type=float, default=600.0, help="seconds per request (default 600)")
    g.add_argument("--structured", action="store_true",
                   help="constrain answers with vLLM structured outputs (a JSON schema for the list, a regex for "
                        "the function): makes small models usable; leave it off for reasoning models")
    g.add_argument("--batch", type=int, default=32, help="seeds per round; progress is saved after each (default 32)")
    g.add_argument("--max-constraints", type=int, default=8,
                   help="constraints kept per seed, at most (default 8; VerInstruct averages 6.2)")
    args = p.parse_args(argv)
    if args.backtranslate and not (args.llm_url and args.llm_model):
        p.error("--backtranslate needs --llm-url and --llm-model")
    if args.min_hard is None:
        args.min_hard = 2 if args.composer == "mixed" else 1
    if not 1 <= args.min_hard <= args.max_hard:
        p.error("need 1 <= --min-hard <= --max-hard")
    if not 0 <= args.eval_share < 1:
        p.error("--eval-share must be in [0, 1)")
    return args


# ---- inputs: seeds, VerInstruct, IFEval and canonical rows ----
@dataclasses.dataclass
class Seed:
    id: str
    instruction: str                                    # the user's request, without constraints
    response: str                                       # a good answer to it
    context: list = dataclasses.field(default_factory=list)  # chat turns before the request, if any
    soft: dict = dataclasses.field(default_factory=dict)     # {"tone"|"audience"|"style"|...: text true of response}
    title: str = ""                                     # a title for the response (for the <<title>> constraint)


@dataclasses.dataclass
class Row:
    example: Example
    group: str              # the source instruction: rows with the same group land on the same side of the split
    reference: str | None   # a response that satisfies the hard constraints, where one is known
    kinds: list             # one per constraint: an IFEval id, "code[:category]" or "soft[:category]"


class BuildError(ValueError):
    """A bad input row; the message starts with `path:line:`."""


def read_inputs(paths: list[Path], skip_bad: bool) -> tuple[list[Row], list[Seed], list[str], int]:
    """All rows of all inputs: (rows converted as they are, seeds to compose or back-translate, bad rows skipped)."""
    rows, seeds, skipped, untagged = [], [], [], 0
    seen_ids = {}
    for path in paths:
        for where, obj in _jsonl_objects(path, skipped if skip_bad else None):
            try:
                kind, item = _convert(obj, default_id=f"{Path(path).stem}-{where.rsplit(':', 1)[1]}")
                key = item.id if kind == "seed" else item.example.id
                if key in seen_ids:
                    raise ValueError(f"duplicate id {key!r} (first seen at {seen_ids[key]})")
                seen_ids[key] = where
            except ValueError as e:
                if not skip_bad:
                    raise BuildError(f"{where}: {e}") from None
                skipped.append(f"{where}: {e}")
                continue
            if kind == "seed":
                seeds.append(item)
            else:
                untagged += item.kinds.count("untagged")
                item.kinds = [k for k in item.kinds if k != "untagged"]
                rows.append(item)
    return rows, seeds, skipped, untagged


def _jsonl_objects(path, skipped):
    """Yield ("path:line", object) for each non-blank line; malformed JSON raises (or, given a list, is recorded)."""
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise BuildError(f"{path}: {e.strerror}") from None
    with f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield f"{path}:{lineno}", json.loads(line)
                except json.JSONDecodeError as e:
                    if skipped is None:
                        raise BuildError(f"{path}:{lineno}: malformed JSON: {e.msg} (column {e.colno})") from None
                    skipped.append(f"{path}:{lineno}: malformed JSON")


def _convert(obj, default_id):
    """One input row -> ("seed", Seed) or ("row", Row); ValueError says what is wrong with it."""
    if not isinstance(obj, dict):
        raise ValueError(f"a row must be a JSON object, got {type(obj).__name__}")
    if "checkers" in obj or "functions" in obj:
        return "row", _from_verinstruct(obj, default_id)
    if "instruction_id_list" in obj:
        return "row", _from_ifeval(obj)
    messages = obj.get("messages")
    ends_with_reply = bool(messages) and isinstance(messages, list) and isinstance(messages[-1], dict) \
        and messages[-1].get("role") == "assistant"
    if "hard" in obj or "prompt" in obj or ("messages" in obj and not ends_with_reply):
        return "row", _from_canonical(obj)
    if "instruction" in obj or "messages" in obj:
        return "seed", _seed(obj, default_id)
    raise ValueError("cannot tell the format: expected a seed (instruction + response, or messages), VerInstruct "
                     "(prompt, checkers, functions), IFEval (key, prompt, instruction_id_list, kwargs) or a "
                     "canonical row (id, prompt, hard, soft)")


def _from_verinstruct(obj, default_id):
    example, untagged = verify_lib.from_verinstruct({**obj, "id": obj.get("id", default_id)})
    example.id = f"verinstruct-{example.id}"
    kinds = ["code"] * len(example.hard) + ["soft"] * len(example.soft) + ["untagged"] * len(untagged)
    return Row(example, example.prompt, None, kinds)


def _from_ifeval(obj):
    example = verify_lib.from_ifeval(obj)
    for constraint in example.hard:  # validated: now the words, for the judge_only reward mode
        constraint["text"] = phrase(constraint["id"], constraint["kwargs"])
    return Row(example, example.prompt, None, [c["id"] for c in example.hard])


def _from_canonical(obj):
    example = verify_lib.parse_example(obj)
    kinds = [c.get("id", "code") for c in example.hard] + ["soft"] * len(example.soft)
    return Row(example, example.instruction, None, kinds)


def _seed(obj, default_id):
    allowed = {"id", "instruction", "response", "messages", "soft", "title", "category", "source"}
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} in a seed row")
    if "messages" in obj:
        instruction, response, context = _split_chat(obj["messages"])
    else:
        instruction, response, context = obj.get("instruction"), obj.get("response"), []
    for name, value in (("instruction", instruction), ("response", response)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"a seed needs a non-empty string {name!r}")
    soft = obj.get("soft", {})
    if isinstance(soft, list):
        soft = {f"soft{i}": text for i, text in enumerate(soft)}
    if not isinstance(soft, dict) or not all(isinstance(t, str) and t.strip() for t in soft.values()):
        raise ValueError("'soft' must be a list of strings or an object of strings")
    title = obj.get("title", "")
    if not isinstance(title, str) or "\n" in title:
        raise ValueError("'title' must be a one-line string")
    return Seed(str(obj.get("id", default_id)), instruction.strip(), response.strip(), context, soft, title)


def _split_chat(messages):
    """A chat ending [..., user request, assistant reply] -> (request, reply, the turns before the request)."""
    if (not isinstance(messages, list) or len(messages) < 2
            or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)):
        raise ValueError("'messages' must be a list of {role, content} turns")
    if messages[-1].get("role") != "assistant" or messages[-2].get("role") != "user":
        raise ValueError("'messages' must end with a user turn and the assistant's reply")
    if any(m.get("role") not in ("system", "user", "assistant") for m in messages):
        raise ValueError("a message role must be system, user or assistant")
    return messages[-2]["content"], messages[-1]["content"], [dict(m) for m in messages[:-2]]


# ---- back-translation with an LLM ----
CATEGORIES = ("length", "format", "keyword", "style", "content", "other")

CONSTRAINTS_PROMPT = """\
Below are an instruction and a response to it. Write down constraints that the response already satisfies and that \
could have been part of the instruction: on its length, format, keywords, style or content. Give 3 to 8 of them.

Answer with a JSON list only. Each item is an object with three fields:
  "text": the constraint, worded as an instruction to the writer, e.g. "Answer in fewer than 100 words."
  "type": "hard" if a short Python function can check it exactly (length, format, keywords), else "soft"
  "category": one of "length", "format", "keyword", "style", "content", "other"

<instruction>
{instruction}
</instruction>

<response>
{response}
</response>"""

CODE_PROMPT = """\
Write a Python function `check_following(instruction, response)` that returns True if `response` satisfies the \
constraint below and False otherwise. Use only the Python standard library: no files, network or input. Answer with \
the function in one ```python code block.

Constraint: {text}"""

RETRY = "\n\nYour previous answer could not be used ({why}). Answer again, exactly in the format asked for."

# --structured: what vLLM lets the model write (the server's structured outputs), short enough for a small model
FUNCTION_REGEX = r"```python\ndef check_following\(instruction, response\):\n(    [^\n]{1,100}\n){1,10}```"


def constraints_schema(max_items: int) -> dict:
    item = {"type": "object", "additionalProperties": False, "required": ["text", "type", "category"],
            "properties": {"text": {"type": "string", "minLength": 8, "maxLength": 160},
                           "type": {"enum": ["hard", "soft"]}, "category": {"enum": list(CATEGORIES)}}}
    return {"type": "array", "minItems": 1, "maxItems": max_items, "items": item}


def backtranslate(seeds: list[Seed], args: argparse.Namespace, counts: collections.Counter) -> list[Row]:
    """Back-translate every seed, resuming from the state file; returns the Rows of all seeds, in seed order."""
    def client(structured_outputs):
        return verify_lib.ChatClient(args.llm_url, args.llm_model, temperature=args.llm_temperature,
                                     max_tokens=args.llm_max_tokens, concurrency=args.llm_concurrency,
                                     timeout_s=args.llm_timeout,
                                     extra_body={"structured_outputs": structured_outputs} if args.structured else None)
    # Two clients to the same LLM: one asked for constraints (structured as JSON), one for code (a function regex).
    constraint_writer = client({"json": constraints_schema(args.max_constraints)})
    code_writer = client({"regex": FUNCTION_REGEX})
    state_path = args.out_dir / "backtranslate_state.jsonl"
    keys = {seed.id: _seed_key(seed, args.llm_model) for seed in seeds}
    done = {key: record for key, record in _read_state(state_path).items() if key in keys.values()}
    todo = [seed for seed in seeds if keys[seed.id] not in done]
    if done:
        print(f"resuming: {len(done)} of {len(seeds)} seeds already done ({state_path})")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with open(state_path, "a", encoding="utf-8") as state, \
            tqdm(total=len(todo), desc="back-translation", unit="seed") as bar:
        for start in range(0, len(todo), args.batch):
            batch = todo[start:start + args.batch]
            for seed, record in zip(batch, backtranslate_batch(batch, constraint_writer, code_writer, args)):
                done[keys[seed.id]] = record
                state.write(json.dumps({"key": keys[seed.id], **record}, ensure_ascii=False) + "\n")
            state.flush()
            bar.update(len(batch))
    constraint_writer.close(), code_writer.close()
    rows = []
    for seed in seeds:
        record = done[keys[seed.id]]
        counts.update(record["counts"])
        if record["example"] is not None:
            rows.append(Row(verify_lib.parse_example(record["example"]), seed.instruction, seed.response,
                            record["kinds"]))
    return rows


def backtranslate_batch(seeds: list[Seed], constraint_writer: verify_lib.ChatClient, code_writer: verify_lib.ChatClient,
                        args: argparse.Namespace) -> list[dict]:
    """One state record per seed: {"seed", "example" (canonical, or None), "kinds", "counts"}. Counts add up:
    seeds = rows + "seed: ..." drops; proposed = kept_hard + kept_soft + "constraint: ..." and "hard: ..." drops."""
    counts = [collections.Counter(seeds=1) for _ in seeds]

    # 1. the constraints each response satisfies, as JSON (asked twice at most)
    prompts = [CONSTRAINTS_PROMPT.format(instruction=s.instruction, response=s.response) for s in seeds]
    proposals = ask_twice(constraint_writer, prompts, lambda replies, _: [parse_constraints(r) for r in replies])
    items = []  # (seed index, {"text", "type", "category"[, "code"]})
    for i, (proposed, why) in enumerate(proposals):
        if proposed is None:
            counts[i][f"seed: {why}"] += 1
            continue
        valid, dropped = proposed
        counts[i]["proposed"] += len(valid) + sum(dropped.values())
        counts[i].update(dropped)
        if len(valid) > args.max_constraints:
            counts[i]["constraint: over --max-constraints"] += len(valid) - args.max_constraints
        items += [(i, item) for item in valid[:args.max_constraints]]

    # 2. a check_following function for each hard one, kept only if it passes on the response (asked twice at most)
    hard = [(i, item) for i, item in items if item["type"] == "hard"]

    def validate(replies, indices):
        return check_functions(replies, [seeds[hard[k][0]] for k in indices])
    functions = ask_twice(code_writer, [CODE_PROMPT.format(text=item["text"]) for _, item in hard], validate)
    for (i, item), (source, why) in zip(hard, functions):
        if source is None:
            counts[i][f"hard: {why}"] += 1
        else:
            item["code"] = source

    # 3. the example: the request with the kept constraints appended, as VerInstruct does
    records = []
    for i, seed in enumerate(seeds):
        if proposals[i][0] is None:
            records.append({"seed": seed.id, "example": None, "kinds": [], "counts": dict(counts[i])})
            continue
        kept = [item for j, item in items if j == i and (item["type"] == "soft" or "code" in item)]
        records.append(_backtranslated(seed, kept, counts[i]))
    return records


def _backtranslated(seed, kept, counts):
    rng = random.Random(seed.id)
    while True:  # a function may read the instruction: check it again with the final prompt
        example = Example(id=f"{seed.id}-bt", prompt=None, messages=None, source="backtranslate",
                          hard=[{"code": c["code"], "text": c["text"]} for c in kept if c["type"] == "hard"],
                          soft=[c["text"] for c in kept if c["type"] == "soft"])
        _set_prompt(example, seed, assemble_prompt(seed.instruction, [c["text"] for c in kept], rng))
        results = verify_lib.run_code_checks([(c["code"], example.instruction, seed.response) for c in example.hard])
        failed = {c["code"] for c, r in zip(example.hard, results) if not r.passed}
        if not failed:
            break
        counts["hard: fails with the final prompt"] += sum(c.get("code") in failed for c in kept)
        kept = [c for c in kept if c.get("code") not in failed]
    counts["kept_hard"] += len(example.hard)
    counts["kept_soft"] += len(example.soft)
    if not kept:
        counts["seed: nothing kept"] += 1
        return {"seed": seed.id, "example": None, "kinds": [], "counts": dict(counts)}
    kinds = [f"code:{c['category']}" for c in kept if c["type"] == "hard"]
    kinds += [f"soft:{c['category']}" for c in kept if c["type"] == "soft"]
    return {"seed": seed.id, "example": example.to_json(), "kinds": kinds, "counts": dict(counts)}


def ask_twice(llm: verify_lib.ChatClient, prompts: list[str], validate: Callable) -> list[tuple]:
    """Ask each prompt; an answer that `validate` rejects is asked once more, with the reason, then given up.
    validate(completions, indices) -> [(value, None) | (None, why)]. Returns one (value, why) per prompt."""
    replies = llm.complete(prompts) if prompts else []
    results = validate(replies, list(range(len(prompts))))
    redo = [k for k, (value, _) in enumerate(results) if value is None]
    if redo:
        again = llm.complete([prompts[k] + RETRY.format(why=results[k][1]) for k in redo])
        for k, result in zip(redo, validate(again, redo)):
            results[k] = result
    return results


def parse_constraints(reply: verify_lib.Completion) -> tuple:
    """A reply -> ((valid items, Counter of dropped items by reason), None), or (None, why) for no usable list."""
    if reply.error:
        return None, "llm error"
    answer = verify_lib.final_answer(reply.text or "")
    found = _json_list(answer)
    if found is None:
        return None, "truncated answer" if reply.finish_reason == "length" else "no JSON list"
    if not found:
        return None, "empty list"
    valid, dropped, texts = [], collections.Counter(), set()
    for item in found:
        text = item.get("text") if isinstance(item, dict) else None
        if not isinstance(text, str) or not text.strip() or item.get("type") not in ("hard", "soft"):
            dropped["constraint: malformed item"] += 1
        elif text.strip().lower() in texts:
            dropped["constraint: duplicate"] += 1
        else:
            texts.add(text.strip().lower())
            category = item.get("category") if item.get("category") in CATEGORIES else "other"
            valid.append({"text": _sentence(text), "type": item["type"], "category": category})
    return (valid, dropped), None


def _json_list(answer):
    """The JSON list in an answer (bare, fenced, or the outermost [...] in prose; a {"constraints": [...]} too)."""
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", answer.strip())
    candidates = [text]
    if "[" in text and "]" in text:
        candidates.append(text[text.index("["):text.rindex("]") + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("constraints"), list):
            value = value["constraints"]
        if isinstance(value, list):
            return value
    return None


def _sentence(text):
    text = " ".join(text.split())
    return text if text[-1] in ".!?" else text + "."


def check_functions(replies: list[verify_lib.Completion], seeds: list[Seed]) -> list[tuple[str | None, str | None]]:
    """Extract a check_following function from each reply and run it in verify_lib's sandbox on its seed's response
    (with the bare request; the final prompt is checked later): [(source, None) | (None, why)]."""
    sources, results = [], []
    for reply in replies:
        try:
            sources.append(extract_function(reply))
        except ValueError as e:
            sources.append(e)
    runnable = [(s, seed.instruction, seed.response) for s, seed in zip(sources, seeds) if isinstance(s, str)]
    verdicts = iter(verify_lib.run_code_checks(runnable))
    for source in sources:
        if not isinstance(source, str):
            results.append((None, str(source)))
            continue
        verdict = next(verdicts)
        if verdict.passed:
            results.append((source, None))
        else:
            results.append((None, "returned False" if verdict.error is None else verdict.error.split(":")[0]))
    return results


def extract_function(reply: verify_lib.Completion) -> str:
    """The source of a check_following function in a reply; ValueError says why there is none."""
    if reply.error:
        raise ValueError("llm error")
    answer = verify_lib.final_answer(reply.text or "")
    blocks = re.findall(r"```[a-zA-Z]*\n(.*?)(?:```|$)", answer, flags=re.S) + [answer]  # a cut-off block too
    source = next((b for b in blocks if "def check_following" in b), None)
    truncated = reply.finish_reason == "length"
    if source is None:
        raise ValueError("truncated answer" if truncated else "no check_following function")
    try:
        tree = ast.parse(source)
    except SyntaxError:
        raise ValueError("truncated answer" if truncated else "syntax error") from None
    if not any(isinstance(node, ast.FunctionDef) and node.name == "check_following" for node in tree.body):
        raise ValueError("no check_following function")
    return source.strip() + "\n"


def _seed_key(seed, model):
    text = json.dumps([model, seed.context, seed.instruction, seed.response])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _read_state(path):
    """Records by key. A torn last line (an interrupted write) is cut off so that appending can go on after it."""
    if not path.exists():
        return {}
    lines = path.read_bytes().splitlines(keepends=True)
    records, good_end = {}, 0
    for lineno, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            records[record["key"]] = record
        except (ValueError, TypeError, KeyError):
            if lineno < len(lines):
                raise BuildError(f"{path}:{lineno}: not a back-translation record; move the file away to start "
                                 "over") from None
            print(f"note: cutting an incomplete last record off {path}", file=sys.stderr)
            with open(path, "r+b") as f:
                f.truncate(good_end)
            break
        good_end += len(line)
    return records


# ---- phrasings: each IFEval instruction in words ----
# Several natural phrasings per instruction. Every kwarg shows in the words: numbers as digits, right after their
# relation ("fewer than 50"), strings in double quotes. The first phrasing is the plainest: imports use it as the
# constraint's "text". tests/test_build_data.py checks each phrasing against its kwargs.
PHRASINGS = {
    "keywords:existence": [
        "Include the keyword{s} {keywords} in your response.",
        "Make sure your answer mentions {keywords}.",
        "Your response must contain the word{s} {keywords}."],
    "keywords:frequency": [
        'The word "{keyword}" should appear {rel} {frequency} time{s} in your response.',
        'Use the word "{keyword}" {rel} {frequency} time{s}.',
        'Mention "{keyword}" {rel} {frequency} time{s} in your answer.'],
    "keywords:forbidden_words": [
        "Do not include the word{s} {forbidden_words} in your response.",
        "Avoid the word{s} {forbidden_words}.",
        "Never use the word{s} {forbidden_words} in your answer."],
    "keywords:letter_frequency": [
        'The letter "{letter}" should appear {rel} {let_frequency} time{s} in your response.',
        'Use the letter "{letter}" {rel} {let_frequency} time{s}.',
        'In your answer, the letter "{letter}" must appear {rel} {let_frequency} time{s}.'],
    "language:response_language": [
        "Your entire response should be in {language_name}; no other language is allowed.",
        "Answer only in {language_name}.",
        "Write the whole response in {language_name}."],
    "length_constraints:number_sentences": [
        "Your response should contain {rel} {num_sentences} sentence{s}.",
        "Answer in {rel} {num_sentences} sentence{s}.",
        "Use {rel} {num_sentences} sentence{s} in total."],
    "length_constraints:number_paragraphs": [
        "Your response should have exactly {num_paragraphs} paragraph{s}, separated from each other by the markdown "
        "divider ***.",
        "Write exactly {num_paragraphs} paragraph{s} and put the markdown divider *** between consecutive paragraphs.",
        "There should be {num_paragraphs} paragraph{s}. Paragraphs are separated with the markdown divider: ***"],
    "length_constraints:number_words": [
        "Answer with {rel} {num_words} word{s}.",
        "Your response should contain {rel} {num_words} word{s}.",
        "The response must be {rel} {num_words} word{s} long."],
    "length_constraints:nth_paragraph_first_word": [
        "There should be exactly {num_paragraphs} paragraph{s}, separated from each other by a blank line. "
        'Paragraph {nth_paragraph} must start with the word "{first_word}".',
        "Write {num_paragraphs} paragraph{s} separated by blank lines; the {ordinal} paragraph must begin with the "
        'word "{first_word}".',
        "Use exactly {num_paragraphs} paragraph{s} with an empty line between them, and start paragraph "
        '{nth_paragraph} with the word "{first_word}".'],
    "detectable_content:number_placeholders": [
        "The response must contain at least {num_placeholders} placeholder{s} in square brackets, such as [address].",
        "Include at least {num_placeholders} placeholder{s} written in square brackets, like [name].",
        "Leave at least {num_placeholders} placeholder{s} for details to fill in later, in square brackets such as "
        "[date]."],
    "detectable_content:postscript": [
        'At the end of your response, add a postscript starting with "{postscript_marker}".',
        'Finish with a postscript that begins with "{postscript_marker}".',
        'Close your answer with a postscript: a short note that starts with "{postscript_marker}".'],
    "detectable_format:number_bullet_lists": [
        'Your answer must contain exactly {num_bullets} bullet point{s}, in markdown (lines starting with "* " or '
        '"- ").',
        "Use exactly {num_bullets} markdown bullet point{s}.",
        "Include exactly {num_bullets} bullet point{s} in markdown format."],
    "detectable_format:constrained_response": [
        'Answer with one of the following options: "My answer is yes.", "My answer is no.", "My answer is maybe."'],
    "detectable_format:number_highlighted_sections": [
        "Highlight at least {num_highlights} section{s} of your answer with markdown, i.e. *highlighted section*.",
        "Use markdown to highlight at least {num_highlights} part{s} of your response, for example *like this* or "
        "**like this**.",
        "Emphasize at least {num_highlights} key part{s} with markdown highlighting, such as **this**."],
    "detectable_format:multiple_sections": [
        'Your response must have {num_sections} section{s}. Mark the beginning of each section with '
        '"{section_spliter} X", such as "{section_spliter} 1".',
        "Divide your answer into {num_sections} section{s} labelled {labels}.",
        'Organize the response into {num_sections} part{s}, each starting with "{section_spliter}" and its number: '
        "{labels}."],
    "detectable_format:json_format": [
        "Wrap your entire output in JSON format. You can use markdown ticks such as ```.",
        "Your entire response should be valid JSON.",
        "Format the whole answer as JSON."],
    "detectable_format:title": [
        "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>.",
        "Give your answer a title in double angle brackets, like <<my title>>.",
        "Include a title wrapped in double angular brackets, e.g. <<a title>>."],
    "combination:two_responses": [
        "Give two different responses. Responses and only responses should be separated by 6 asterisk symbols: "
        "******."],
    "combination:repeat_prompt": [
        'First repeat the request "{prompt_to_repeat}" word for word without change, then give your answer.',
        "Before answering, repeat the first paragraph of this message word for word, without any change; say "
        "nothing before it.",
        "Start your response by copying the request in the first paragraph exactly as written, then answer it."],
    "startend:end_checker": [
        'Finish your response with this exact phrase: "{end_phrase}". No other words should follow it.',
        'End your answer with the exact phrase "{end_phrase}".',
        'Your last words must be "{end_phrase}", with nothing after them.'],
    "startend:quotation": [
        "Wrap your entire response with double quotation marks.",
        "Put your whole answer inside double quotation marks.",
        "Enclose the entire response in double quotes."],
    "change_case:capital_word_frequency": [
        "Use {rel} {capital_frequency} word{s} in all capital letters.",
        "Words written entirely in capital letters should appear {rel} {capital_frequency} time{s}.",
        "Your response should contain {rel} {capital_frequency} word{s} in ALL CAPS."],
    "change_case:english_capital": [
        "Your entire response should be in English, and in all capital letters.",
        "Write your whole answer in English, using capital letters only.",
        "Respond in English with every letter in uppercase."],
    "change_case:english_lowercase": [
        "Your entire response should be in English, and in all lowercase letters. No capital letters are allowed.",
        "Write everything in lowercase English letters; do not use any capital letters.",
        "Respond in English using only lowercase letters."],
    "punctuation:no_comma": [
        "Do not use any commas in your response.",
        "Refrain from using commas.",
        "Avoid commas entirely in your answer."],
}
assert sorted(PHRASINGS) == sorted(verify_lib.IFEVAL_CHECKERS)

RELATION_WORDS = {"less than": ("fewer than", "less than"), "at least": ("at least", "a minimum of")}
LANGUAGES = {"en": "English", "ar": "Arabic", "bg": "Bulgarian", "bn": "Bengali", "de": "German", "es": "Spanish",
             "fa": "Persian", "fi": "Finnish", "fr": "French", "gu": "Gujarati", "hi": "Hindi", "it": "Italian",
             "ja": "Japanese", "kn": "Kannada", "ko": "Korean", "mr": "Marathi", "ne": "Nepali", "pa": "Punjabi",
             "pt": "Portuguese", "ru": "Russian", "sw": "Swahili", "ta": "Tamil", "te": "Telugu", "th": "Thai",
             "ur": "Urdu", "vi": "Vietnamese", "zh-cn": "Chinese"}
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"]


def phrase(instruction_id: str, kwargs: dict, rng: random.Random | None = None,
           phrasings: dict[str, list[str]] | None = None) -> str:
    """The constraint in words: one of its phrasings (default PHRASINGS) at random, or the first one when rng is None.

    >>> phrase("length_constraints:number_words", {"num_words": 50, "relation": "less than"})
    'Answer with fewer than 50 words.'
    >>> phrase("verif:first_word", {"word": "Sure"}, phrasings=OWN_PHRASINGS)
    'Begin your reply with the word "Sure".'
    """
    templates = (PHRASINGS if phrasings is None else phrasings)[instruction_id]
    template = templates[0] if rng is None else rng.choice(templates)
    return template.format(**_fields(kwargs, rng))


def _fields(kwargs, rng):
    pick = (lambda options: options[0]) if rng is None else rng.choice
    fields = dict(kwargs)
    counts = [v for k, v in kwargs.items() if isinstance(v, int) and k != "nth_paragraph"]
    lists = [v for v in kwargs.values() if isinstance(v, list)]
    fields["s"] = "s" if (len(lists[0]) if lists else counts[0] if counts else 2) != 1 else ""
    for key in ("relation", "let_relation", "capital_relation"):
        if key in kwargs:
            fields["rel"] = pick(RELATION_WORDS[kwargs[key]])
    if "keywords" in kwargs:
        fields["keywords"] = _quoted(kwargs["keywords"], "and")
    if "forbidden_words" in kwargs:
        fields["forbidden_words"] = _quoted(kwargs["forbidden_words"], "or")
    if "language" in kwargs:
        fields["language_name"] = LANGUAGES.get(kwargs["language"], f'the language "{kwargs["language"]}"')
    if "nth_paragraph" in kwargs:
        n = kwargs["nth_paragraph"]
        fields["ordinal"] = ORDINALS[n - 1] if 1 <= n <= len(ORDINALS) else f"number {n}"
    if "section_spliter" in kwargs:
        labels = [f"{kwargs['section_spliter']} {i}" for i in range(1, kwargs["num_sections"] + 1)]
        fields["labels"] = _quoted(labels, "and")
    return fields


def _quoted(words, conjunction):
    quoted = [f'"{w}"' for w in words]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" {conjunction} " + quoted[-1]


# ---- the offline composer ----
# A maker takes (rng, response, seed) and returns (kwargs, response) or None where its instruction cannot apply.
# Shaping makers rewrite the reference response so that it follows them (add a title, lowercase it, ...); measuring
# makers leave it as it is and read their kwargs off it, counting with verify_lib's own checker. The composer runs
# the makers in the order of MAKERS: shaping first, measuring last, so that every count is read off the final response.
# Not composed: combination:two_responses (a second, different answer cannot be made from one), detectable_format:
# constrained_response (needs a yes/no question), response_language other than English (needs a translation).

WORDS = json.loads((HERE / "data/composer_words.json").read_text(encoding="utf-8"))   # the composer's word lists
STOPWORDS = frozenset(WORDS["stopwords"])       # never drawn as a keyword
FILLER_WORDS = WORDS["filler_words"]            # drawn as forbidden words
POSTSCRIPTS, END_PHRASES = WORDS["postscripts"], WORDS["end_phrases"]
SECTION_WORDS = WORDS["section_words"]


def follows(instruction_id: str, kwargs: dict, response: str) -> bool:
    return verify_lib.rule_follows(instruction_id, kwargs, response)


def checker_count(instruction_id: str, kwargs: dict, count_key: str, response: str,
                  relation_key: str | None = None) -> int:
    """What the checker itself counts in `response`: the largest n for which "at least n" holds. Found by asking the
    checker for n = 1, 2, 4, ... until it says no, then bisecting: a few calls, as counts here are small."""
    def at_least(n):
        relation = {relation_key: "at least"} if relation_key else {}
        return follows(instruction_id, {**kwargs, **relation, count_key: n}, response)
    lo, hi = 0, 1  # at_least(lo) holds, at_least(hi) is still to be asked
    while at_least(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if at_least(mid) else (lo, mid)
    return lo


def threshold(rng: random.Random, count: int, *, step: int = 1, least: int = 1, fewest: int = 2) -> tuple[str, int]:
    """A (relation, n) that `count` satisfies, n a multiple of `step`: "less than n" with fewest <= n > count, or
    "at least n" with least <= n <= count (only where count >= least).

    >>> threshold(random.Random(1), 47, step=10)
    ('less than', 50)
    """
    relations = ["less than", "at least"] if count >= max(least, step) else ["less than"]
    if rng.choice(relations) == "less than":
        return "less than", max(fewest, (count // step + 1 + rng.randint(0, 1)) * step)
    n = (count // step - rng.randint(0, 1)) * step
    return "at least", n if n >= max(least, 1) else (count // step) * step


def has_code(text: str) -> bool:
    return "```" in text


def content_words(text: str) -> list[str]:
    """Lowercase words of 4+ letters that carry meaning, in order of first use."""
    words = [w.lower() for w in re.findall(r"\b[A-Za-z]{4,}\b", text)]
    return list(dict.fromkeys(w for w in words if w not in STOPWORDS))


def paragraphs_of(response: str) -> list[str] | None:
    """The response's blank-line paragraphs, a short one (a greeting, a sign-off) joined to its neighbour; None where
    there are fewer than two or a code block (whose blank lines are not paragraph breaks)."""
    if has_code(response):
        return None
    merged = []
    for p in (p.strip() for p in response.split("\n\n")):
        if p and merged and len(merged[-1].split()) < 6:
            merged[-1] += "\n" + p
        elif p:
            merged.append(p)
    if len(merged) >= 2 and len(merged[-1].split()) < 6:
        last = merged.pop()
        merged[-1] += "\n" + last
    return merged if len(merged) >= 2 else None


def plain_sentences(response: str) -> list[tuple[int, int]]:
    """(start, end) of sentences of 3-20 words on prose lines: no list item, heading, code, markup or brackets."""
    spans, offset = [], 0
    if has_code(response):
        return spans
    for line in response.split("\n"):
        if not re.match(r"\s*([-*#>|]|\d+\.|Subject:)", line):
            for m in re.finditer(r"[A-Z][^.!?\n]*[.!?]", line):
                if 3 <= len(m.group().split()) <= 20 and not re.search(r"[*`\[\]<>\"]", m.group()):
                    spans.append((offset + m.start(), offset + m.end()))
        offset += len(line) + 1
    return spans


Made = tuple[dict, str] | None   # a maker's result: (kwargs, the response that now follows them), or None: not here


# -- shaping makers --
def make_number_paragraphs(rng: random.Random, response: str, seed: Seed) -> Made:
    """Split the reference into its paragraphs with *** dividers; count them."""
    paragraphs = paragraphs_of(response)
    if not paragraphs:
        return None
    return {"num_paragraphs": len(paragraphs)}, "\n\n***\n\n".join(paragraphs)


def make_multiple_sections(rng: random.Random, response: str, seed: Seed) -> Made:
    """Head each paragraph "Section 1", "Section 2", ... (or Part / PART / SECTION)."""
    paragraphs, word = paragraphs_of(response), rng.choice(SECTION_WORDS)
    if not paragraphs:
        return None
    sections = "\n\n".join(f"{word} {i}\n{p}" for i, p in enumerate(paragraphs, start=1))
    return {"section_spliter": word, "num_sections": len(paragraphs)}, sections


def make_highlights(rng: random.Random, response: str, seed: Seed) -> Made:
    """Ask for the highlights the reference has, or bold one to three of its plain sentences."""
    have = checker_count("detectable_format:number_highlighted_sections", {}, "num_highlights", response)
    if have:
        return {"num_highlights": rng.randint(1, min(have, 3))}, response
    spans = plain_sentences(response)
    if not spans:
        return None
    chosen = rng.sample(spans, min(len(spans), rng.choice([1, 2, 2, 3])))
    for start, end in sorted(chosen, reverse=True):
        response = response[:start] + "**" + response[start:end] + "**" + response[end:]
    return {"num_highlights": len(chosen)}, response


def make_title(rng: random.Random, response: str, seed: Seed) -> Made:
    """Put the seed's title in <<double angular brackets>> on top."""
    return ({}, f"<<{seed.title}>>\n\n{response}") if seed.title else None


def make_postscript(rng: random.Random, response: str, seed: Seed) -> Made:
    """Add a "P.S." line at the end."""
    return {"postscript_marker": "P.S."}, f"{response}\n\nP.S. {rng.choice(POSTSCRIPTS)}"


def make_end_phrase(rng: random.Random, response: str, seed: Seed) -> Made:
    """End the reference with one of END_PHRASES, which the constraint names."""
    phrase_ = rng.choice(END_PHRASES)
    return {"end_phrase": phrase_}, f"{response}\n\n{phrase_}"


def make_repeat_prompt(rng: random.Random, response: str, seed: Seed) -> Made:
    """Repeat the request word for word before the answer (single-paragraph requests only)."""
    if "\n" in seed.instruction:  # the phrasings point at "the first paragraph": it must be the whole request
        return None
    return {"prompt_to_repeat": seed.instruction}, f"{seed.instruction}\n\n{response}"


def make_json(rng: random.Random, response: str, seed: Seed) -> Made:
    """Wrap the reference as a JSON object, in a ```json fence half of the time."""
    if has_code(response):
        return None
    text = json.dumps({"answer": response}, ensure_ascii=False, indent=2)
    return {}, f"```json\n{text}\n```" if rng.random() < 0.5 else text


def make_lowercase(rng: random.Random, response: str, seed: Seed) -> Made:
    """Lowercase the whole reference (not where it holds code)."""
    return None if "`" in response else ({}, response.lower())  # no code, not even inline: case matters there


def make_capital(rng: random.Random, response: str, seed: Seed) -> Made:
    """Uppercase the whole reference (not where it holds code)."""
    return None if "`" in response else ({}, response.upper())


def make_quotation(rng: random.Random, response: str, seed: Seed) -> Made:
    """Wrap the whole reference in double quotes."""
    return None if has_code(response) else ({}, f'"{response}"')


# -- measuring makers --
def make_number_words(rng: random.Random, response: str, seed: Seed) -> Made:
    """"At least" or "fewer than" N words, N a round number on the right side of the count."""
    count = checker_count("length_constraints:number_words", {}, "num_words", response, "relation")
    relation, n = threshold(rng, count, step=10 if count < 150 else 25)
    return {"num_words": n, "relation": relation}, response


def make_number_sentences(rng: random.Random, response: str, seed: Seed) -> Made:
    """"At least" or "fewer than" N sentences, counted as the checker counts them."""
    if has_code(response):
        return None
    count = checker_count("length_constraints:number_sentences", {}, "num_sentences", response, "relation")
    relation, n = threshold(rng, count, least=2)
    return {"num_sentences": n, "relation": relation}, response


def make_keywords(rng: random.Random, response: str, seed: Seed) -> Made:
    """One to three content words of the reference that the request does not already use."""
    words = content_words(response)
    fresh = [w for w in words if w not in content_words(seed.instruction)] or words
    if not fresh:
        return None
    return {"keywords": rng.sample(fresh, min(len(fresh), rng.choice([1, 2, 2, 3])))}, response


def make_keyword_frequency(rng: random.Random, response: str, seed: Seed) -> Made:
    """A word the reference uses, "at least" or "fewer than" N times."""
    # The checker counts substrings ("art" in "start"): keep words whose substring count is their word count, and
    # prefer words used more than once.
    text = response.lower()
    uses = collections.Counter(re.findall(r"\b[a-z]+\b", text))
    words = [w for w in content_words(response) if text.count(w) == uses[w]]
    if not words:
        return None
    repeated = [w for w in words if uses[w] > 1]
    word = rng.choice(repeated if repeated and rng.random() < 0.8 else words)
    count = checker_count("keywords:frequency", {"keyword": word}, "frequency", response, "relation")
    relation, n = threshold(rng, count)
    return {"keyword": word, "frequency": n, "relation": relation}, response


def make_forbidden_words(rng: random.Random, response: str, seed: Seed) -> Made:
    """One to three filler words the reference does not use."""
    absent = [w for w in FILLER_WORDS if not re.search(rf"\b{w}\b", response, re.I)]
    if not absent:
        return None
    return {"forbidden_words": rng.sample(absent, min(len(absent), rng.choice([1, 2, 3])))}, response


def make_letter_frequency(rng: random.Random, response: str, seed: Seed) -> Made:
    """A consonant seen 1-15 times, "at least" or "fewer than" N times."""
    # Letters seen 1-15 times: counting 60 e's is no instruction anyone gives.
    letters = [c for c in "bcdfghjkmpvwxyz" if 1 <= response.lower().count(c) <= 15]
    if not letters:
        return None
    letter = rng.choice(letters)
    relation, n = threshold(rng, response.lower().count(letter))
    return {"letter": letter, "let_frequency": n, "let_relation": relation}, response


def make_capital_frequency(rng: random.Random, response: str, seed: Seed) -> Made:
    """All-caps words, "at least" or "fewer than" N of them."""
    count = checker_count("change_case:capital_word_frequency", {}, "capital_frequency", response,
                          "capital_relation")
    # The checker counts "I" too; "at least n" only where the response has real all-caps words (DNA, API, ...).
    real = len(re.findall(r"\b[A-Z]{2,}\b", response))
    relation, n = threshold(rng, count, least=1 if real else count + 1)
    return {"capital_frequency": n, "capital_relation": relation}, response


def make_bullets(rng: random.Random, response: str, seed: Seed) -> Made:
    """Exactly the number of markdown bullets the reference has."""
    for n in range(1, response.count("\n") + 2):  # the checker wants an exact count
        if follows("detectable_format:number_bullet_lists", {"num_bullets": n}, response):
            return {"num_bullets": n}, response
    return None


def make_placeholders(rng: random.Random, response: str, seed: Seed) -> Made:
    """At least N of the [placeholders] the reference has."""
    if has_code(response):  # [::-1] is no placeholder
        return None
    count = checker_count("detectable_content:number_placeholders", {}, "num_placeholders", response)
    return ({"num_placeholders": rng.randint(1, min(count, 4))}, response) if count else None


def make_nth_first_word(rng: random.Random, response: str, seed: Seed) -> Made:
    """The n-th paragraph (split on blank lines) starts with the word it starts with."""
    raw = response.split("\n\n")  # as the checker splits: the n-th raw entry, counted without empty ones
    count = sum(1 for p in raw if p.strip())
    if has_code(response) or not 2 <= count <= 8:
        return None
    options = []
    for nth, p in enumerate(raw[:count], start=1):
        word = p.split()[0].lstrip("'").lstrip('"') if p.strip() else ""
        word = re.split(r"""[.,?!'"]""", word, maxsplit=1)[0].lower()
        if word.isalpha():
            options.append((nth, word))
    if not options:
        return None
    nth, word = rng.choice(options)
    return {"num_paragraphs": count, "nth_paragraph": nth, "first_word": word}, response


def make_english(rng: random.Random, response: str, seed: Seed) -> Made:
    """The answer in English (langdetect must agree)."""
    return None if has_code(response) else ({"language": "en"}, response)


def make_no_comma(rng: random.Random, response: str, seed: Seed) -> Made:
    """No commas, where the reference has none."""
    return None if "," in response else ({}, response)


# id -> (maker, weight), in the order the composer applies them: shaping first, then measuring. Weights are chosen
# by hand; those that apply to few seeds (bullets, paragraphs, placeholders, no commas) weigh more.
MAKERS = {
    "length_constraints:number_paragraphs": (make_number_paragraphs, 3),
    "detectable_format:multiple_sections": (make_multiple_sections, 3),
    "detectable_format:number_highlighted_sections": (make_highlights, 2),
    "detectable_format:title": (make_title, 2),
    "detectable_content:postscript": (make_postscript, 2),
    "startend:end_checker": (make_end_phrase, 2),
    "combination:repeat_prompt": (make_repeat_prompt, 1),
    "detectable_format:json_format": (make_json, 0.7),
    "change_case:english_lowercase": (make_lowercase, 1.5),
    "change_case:english_capital": (make_capital, 0.7),
    "startend:quotation": (make_quotation, 1),
    "length_constraints:number_words": (make_number_words, 3),
    "length_constraints:number_sentences": (make_number_sentences, 2),
    "keywords:existence": (make_keywords, 3),
    "keywords:frequency": (make_keyword_frequency, 1.5),
    "keywords:forbidden_words": (make_forbidden_words, 2),
    "keywords:letter_frequency": (make_letter_frequency, 1),
    "change_case:capital_word_frequency": (make_capital_frequency, 1),
    "detectable_format:number_bullet_lists": (make_bullets, 4),
    "detectable_content:number_placeholders": (make_placeholders, 4),
    "length_constraints:nth_paragraph_first_word": (make_nth_first_word, 3),
    "language:response_language": (make_english, 0.5),
    "punctuation:no_comma": (make_no_comma, 4),
}

_JSON_EXCLUDES = ["length_constraints:number_paragraphs", "detectable_format:multiple_sections",
                  "detectable_format:number_highlighted_sections", "detectable_format:title",
                  "detectable_content:postscript", "startend:end_checker", "combination:repeat_prompt",
                  "change_case:english_capital", "startend:quotation", "length_constraints:number_sentences",
                  "detectable_format:number_bullet_lists", "length_constraints:nth_paragraph_first_word"]
CONFLICTS = [  # pairs never composed together: they contradict, or together they ask for something unnatural
    ("change_case:english_lowercase", "change_case:english_capital"),
    ("change_case:english_lowercase", "change_case:capital_word_frequency"),
    ("change_case:english_capital", "change_case:capital_word_frequency"),
    ("change_case:english_lowercase", "detectable_format:multiple_sections"),  # section markers are case-sensitive
    ("change_case:english_capital", "detectable_format:multiple_sections"),
    ("change_case:english_lowercase", "combination:repeat_prompt"),  # "without change" vs a new case
    ("change_case:english_capital", "combination:repeat_prompt"),
    # three ways to separate paragraphs that exclude each other
    ("length_constraints:number_paragraphs", "length_constraints:nth_paragraph_first_word"),
    ("length_constraints:number_paragraphs", "detectable_format:multiple_sections"),
    ("length_constraints:nth_paragraph_first_word", "detectable_format:multiple_sections"),
    # what must come first, or last, or adds a paragraph the count would have to include
    ("startend:quotation", "combination:repeat_prompt"),
    ("detectable_content:postscript", "startend:end_checker"),
    ("length_constraints:nth_paragraph_first_word", "combination:repeat_prompt"),
    ("length_constraints:nth_paragraph_first_word", "detectable_format:title"),
    ("length_constraints:nth_paragraph_first_word", "detectable_content:postscript"),
    ("length_constraints:nth_paragraph_first_word", "startend:end_checker"),
    # the whole response is one JSON value
    *(("detectable_format:json_format", other) for other in _JSON_EXCLUDES),
]
ADDS_TEXT = {"detectable_format:title", "detectable_content:postscript", "startend:end_checker",
             "combination:repeat_prompt", "detectable_format:json_format", "detectable_format:multiple_sections"}


def conflict(a: str, b: str) -> bool:
    return frozenset((a, b)) in _CONFLICTING


# ---- the mixed composer (default): IFEval's kinds and the kit's own, balanced, in wordings of our own ----
# The first composer trained on IFEval's 25 kinds in IFEval's own words, and a policy trained on its data learnt
# those forms and nothing that carried over to IFBench's 58 other kinds (docs/heldout/README.md). This one draws from
# IFEval's kinds and the kit's own (verify_lib section 3b), the least used kinds first so that no kind dominates,
# 2-4 per prompt (AllenAI's IF-RLVR: 2-6 constraints per prompt beat 1), at least one junk-proof kind
# (verify_lib.JUNK_PROOF), and words every constraint anew: no wording below is IFEval's or IFBench's, and
# `05_eval.py --compare` finds no run of 13 words shared with either benchmark's prompts.
OWN_PHRASINGS = {
    "keywords:existence": [
        "Work the word{s} {keywords} into your reply.",
        "Somewhere in the reply, use {keywords}.",
        "Your reply needs to bring up {keywords} at least once."],
    "keywords:frequency": [
        'Say "{keyword}" {rel} {frequency} time{s}.',
        'Use "{keyword}" {rel} {frequency} time{s} across the reply.',
        'The word "{keyword}" belongs in the reply {rel} {frequency} time{s}.'],
    "keywords:forbidden_words": [
        "Keep the word{s} {forbidden_words} out of the reply.",
        "Leave out {forbidden_words} entirely.",
        "Steer clear of the word{s} {forbidden_words}."],
    "keywords:letter_frequency": [
        'Let the letter "{letter}" show up {rel} {let_frequency} time{s}.',
        'Mind the letter "{letter}": use it {rel} {let_frequency} time{s} in all.',
        'The letter "{letter}" has to appear {rel} {let_frequency} time{s} across the reply.'],
    "language:response_language": [
        "Reply in {language_name} only.",
        "Stick to {language_name} from start to finish.",
        "Use no language but {language_name}."],
    "length_constraints:number_sentences": [
        "Write {rel} {num_sentences} sentence{s} in all.",
        "Your reply should run to {rel} {num_sentences} sentence{s}.",
        "Sentence count: {rel} {num_sentences}."],
    "length_constraints:number_paragraphs": [
        "Split the reply into {num_paragraphs} paragraph{s}, with a line of *** between neighbouring ones.",
        "Give {num_paragraphs} paragraph{s}; between each pair, put a line with three asterisks (***).",
        "Use {num_paragraphs} paragraph{s} in total and separate them with *** dividers."],
    "length_constraints:number_words": [
        "Make the reply {rel} {num_words} word{s} long.",
        "Use {rel} {num_words} word{s} in total.",
        "Word budget: {rel} {num_words}."],
    "length_constraints:nth_paragraph_first_word": [
        'Write {num_paragraphs} paragraph{s} with a blank line between each, and open paragraph {nth_paragraph} '
        'with the word "{first_word}".',
        'Lay the reply out as {num_paragraphs} paragraph{s} split by blank lines; the {ordinal} one begins with '
        '"{first_word}".',
        '{num_paragraphs} paragraph{s}, blank lines in between; "{first_word}" is the opening word of paragraph '
        '{nth_paragraph}.'],
    "detectable_content:number_placeholders": [
        "Leave {num_placeholders} or more blank{s} to fill in, written in square brackets like [city].",
        "Put in at least {num_placeholders} bracketed placeholder{s} such as [your name].",
        "Mark at least {num_placeholders} spot{s} to be filled later with square brackets, e.g. [time]."],
    "detectable_content:postscript": [
        'Add a closing note that starts with "{postscript_marker}".',
        'After the main reply, tack on a line beginning "{postscript_marker}".',
        'Sign off with a note introduced by "{postscript_marker}".'],
    "detectable_format:number_bullet_lists": [
        'Give exactly {num_bullets} markdown bullet{s}, each line opening with "* " or "- ".',
        "Present exactly {num_bullets} point{s} as a markdown bulleted list.",
        "The reply holds {num_bullets} markdown bullet line{s}, no more and no fewer."],
    "detectable_format:number_highlighted_sections": [
        "Emphasize at least {num_highlights} passage{s} with markdown asterisks, like *this*.",
        "Mark {num_highlights} or more key phrase{s} in markdown emphasis (*...* or **...**).",
        "Set at least {num_highlights} part{s} in asterisks to make them stand out."],
    "detectable_format:multiple_sections": [
        'Break the reply into {num_sections} section{s}, each headed "{section_spliter}" plus its number ({labels}).',
        "Lay out {num_sections} section{s}, labelled {labels}.",
        'Use {num_sections} numbered section{s}; label each with "{section_spliter}" and its number: {labels}.'],
    "detectable_format:json_format": [
        "Return the reply as JSON (a code fence around it is fine).",
        "Make the whole reply one JSON value.",
        "Reply in JSON and nothing else."],
    "detectable_format:title": [
        "Start with a title enclosed in double angle brackets, for example <<morning notes>>.",
        "Give the reply a heading inside << and >>, like <<a short title>>.",
        "Put a title in double angle brackets, such as <<title here>>, at the top."],
    "combination:repeat_prompt": [
        'Before you reply, copy this request word for word: "{prompt_to_repeat}"; then reply.',
        'Open by restating "{prompt_to_repeat}" verbatim, and only then respond.',
        'First echo the request exactly ("{prompt_to_repeat}"), then give your reply.'],
    "startend:end_checker": [
        'Make "{end_phrase}" the very last words of the reply.',
        'Close with exactly "{end_phrase}" and add nothing after it.',
        'Your final words: "{end_phrase}"'],
    "startend:quotation": [
        'Put the entire reply between one pair of double quotes (").',
        "Enclose everything you write in a single pair of double quotation marks.",
        "Surround the whole reply with double quotes."],
    "change_case:capital_word_frequency": [
        "Write {rel} {capital_frequency} word{s} fully in capitals.",
        "Use all-caps for {rel} {capital_frequency} word{s}.",
        "Count of ALL-CAPS words: {rel} {capital_frequency}."],
    "change_case:english_capital": [
        "Reply in English, all in uppercase.",
        "Use only capital letters, in English.",
        "Every letter of your English reply must be a capital."],
    "change_case:english_lowercase": [
        "Reply in English, all in lowercase; no capitals anywhere.",
        "Use only small letters in your English reply.",
        "Write in English without a single capital letter."],
    "punctuation:no_comma": [
        "Leave out commas.",
        "No commas anywhere in the reply.",
        "Write without using a single comma."],
    "verif:first_word": [
        'Begin your reply with the word "{word}".',
        'The first word you write must be "{word}".',
        'Open with "{word}" as your first word.'],
    "verif:last_word": [
        'End your reply on the word "{word}".',
        'Make "{word}" your final word (punctuation after it is fine).',
        'The last word of the reply has to be "{word}".'],
    "verif:no_repeated_bigram": [
        "Write at least eight words, and never use the same two-word sequence twice.",
        "Do not repeat any pair of neighbouring words anywhere in the reply (eight words or more).",
        "Each two-word run in your reply may appear only once; write eight words or more."],
    "verif:distinct_sentence_openers": [
        "Write at least {min_sentences} sentences, each starting with a different word.",
        "Use {min_sentences} or more sentences, and never open two of them with the same word.",
        "No two sentences may begin with the same word; write at least {min_sentences}."],
    "verif:max_sentence_words": [
        "Write at least two sentences, none over {max_words} words.",
        "Keep every sentence to {max_words} words or fewer, and write more than one.",
        "Short sentences only: {max_words} words at most each, two or more of them."],
    "verif:min_sentence_words": [
        "Write at least two sentences, each with {min_words} words or more.",
        "No sentence shorter than {min_words} words; use at least two.",
        "Make each sentence at least {min_words} words long, with two or more sentences."],
    "verif:numbered_list": [
        'Give your points as a numbered list of exactly {num_items} different items ("1.", "2.", ...), one per line.',
        "Number exactly {num_items} distinct items, 1 to {num_items}, one per line.",
        'Lay out {num_items} numbered lines ("1.", "2." and so on), all different, each a few words long.'],
    "verif:line_count": [
        "Write exactly {num_lines} lines, each holding a few words and no two alike.",
        "Your reply should be {num_lines} different lines of text, no more and no fewer.",
        "Use {num_lines} lines exactly; every line different and more than one word."],
    "verif:markdown_headings": [
        "Organize the reply under {num_headings} markdown heading{s} (lines starting with #), each followed by text.",
        "Use exactly {num_headings} different markdown heading{s} beginning with # and put some text under each.",
        'Include {num_headings} "#" heading{s}, each with a sentence or more beneath it.'],
    "verif:end_with_question": [
        "After your reply, finish with a question.",
        "Close the reply by asking a question of at least three words.",
        "Your last sentence, after at least one other, should be a question."],
    "verif:keyword_order": [
        'Use the words "{first}" and "{second}", with every "{first}" coming before the first "{second}".',
        'Mention "{first}" before you mention "{second}", and both at least once.',
        'Both "{first}" and "{second}" must appear, and "{first}" never after "{second}".'],
    "verif:wrap_in_tag": [
        "Put your whole reply inside <{tag}> and </{tag}>.",
        "Wrap the reply in <{tag}>...</{tag}> tags, with nothing outside them.",
        "Begin with <{tag}> and end with </{tag}>, the reply in between."],
    "verif:tldr_line": [
        'Finish with a one-line summary starting "TL;DR:" in at most {max_words} words.',
        'Add a last line "TL;DR: ..." that sums up the reply in {max_words} words or fewer.',
        'End on a "TL;DR:" line of no more than {max_words} words.'],
    "verif:letter_count": [
        "Use {rel} {num_letters} letters (a-z, each one counted) in the reply.",
        "Letter budget: {rel} {num_letters} letters in total.",
        "The reply should contain {rel} {num_letters} alphabetic characters."],
    "verif:hyphenated_words": [
        'Use at least {num_words} hyphenated word{s}, like "well-known".',
        'Include {num_words} or more different hyphenated term{s} (e.g. "long-term").',
        "Work in at least {num_words} distinct word{s} joined by a hyphen."],
    "verif:comma_every_sentence": [
        "Put a comma in every sentence, and write at least two.",
        "Each of your sentences (two or more) needs at least one comma.",
        "Every sentence must contain a comma; use two sentences or more."],
}
CLOSING_QUESTIONS = ["Does this help with what you needed?", "Which part would you like to explore next?",
                     "Would you like more detail on any step?", "What would you try first?"]
HEADINGS = ["Details", "In practice", "Next steps", "More to know"]
TAGS = ["answer", "reply", "response"]


# -- shaping makers of the kit's kinds --
def prose_sentences(response: str) -> list[str] | None:
    """The reference's sentences, 2-6 of them, where it is plain prose (no code, lists, headings or markup) and
    each has at least two words; None elsewhere."""
    if has_code(response) or re.search(r"^\s*([-*#>|]|\d+[.)])", response, re.M) or re.search(r"[<>*\[\]]", response):
        return None
    sentences = [" ".join(s.split()) for s in verify_lib.split_sentences(response)]
    if not 2 <= len(sentences) <= 6 or any(verify_lib.count_words(s) < 2 for s in sentences):
        return None
    return sentences


def make_numbered_list(rng: random.Random, response: str, seed: Seed) -> Made:
    """One numbered line per sentence of a plain-prose reference."""
    sentences = prose_sentences(response)
    if not sentences:
        return None
    return {"num_items": len(sentences)}, "\n".join(f"{i}. {s}" for i, s in enumerate(sentences, start=1))


def make_line_count(rng: random.Random, response: str, seed: Seed) -> Made:
    """One line per sentence of a plain-prose reference."""
    sentences = prose_sentences(response)
    return ({"num_lines": len(sentences)}, "\n".join(sentences)) if sentences else None


def make_markdown_headings(rng: random.Random, response: str, seed: Seed) -> Made:
    """The seed's title as a "# " heading on top; where the reference has paragraphs, a second heading before the
    last of them."""
    if not seed.title or has_code(response) or re.search(r"^\s*#", response, re.M):
        return None
    paragraphs = paragraphs_of(response)
    if paragraphs and rng.random() < 0.5:
        body = "\n\n".join(paragraphs[:-1]) + f"\n\n## {rng.choice(HEADINGS)}\n{paragraphs[-1]}"
        return {"num_headings": 2}, f"# {seed.title}\n{body}"
    return {"num_headings": 1}, f"# {seed.title}\n{response}"


def make_end_with_question(rng: random.Random, response: str, seed: Seed) -> Made:
    """A closing question after the reference."""
    return None if has_code(response[-200:]) else ({}, f"{response}\n\n{rng.choice(CLOSING_QUESTIONS)}")


def make_tldr_line(rng: random.Random, response: str, seed: Seed) -> Made:
    """A last line "TL;DR: ..." from the words of the reference's first sentence (at most 8 of them)."""
    if "TL;DR" in response:
        return None
    words = re.findall(r"[A-Za-z][A-Za-z'-]*", (verify_lib.split_sentences(response) or [""])[0])[:8]
    if len(words) < 3:
        return None
    return {"max_words": rng.choice([10, 12, 15])}, f"{response}\n\nTL;DR: {' '.join(words).lower()}."


def make_wrap_in_tag(rng: random.Random, response: str, seed: Seed) -> Made:
    """The whole reference inside <tag> and </tag>."""
    tag = rng.choice(TAGS)
    return None if f"<{tag}" in response else ({"tag": tag}, f"<{tag}>\n{response}\n</{tag}>")


# -- measuring makers of the kit's kinds --
def make_first_word(rng: random.Random, response: str, seed: Seed) -> Made:
    """The reference's first word (a word of letters)."""
    words = verify_lib.word_runs(response)
    return ({"word": words[0].lower()}, response) if words and words[0].isalpha() else None


def make_last_word(rng: random.Random, response: str, seed: Seed) -> Made:
    """The reference's last word (a word of letters)."""
    words = verify_lib.word_runs(response)
    return ({"word": words[-1].lower()}, response) if words and words[-1].isalpha() else None


def make_no_repeated_bigram(rng: random.Random, response: str, seed: Seed) -> Made:
    """Where the reference repeats no pair of neighbouring words."""
    return ({}, response) if follows("verif:no_repeated_bigram", {}, response) else None


def make_distinct_sentence_openers(rng: random.Random, response: str, seed: Seed) -> Made:
    """At least N sentences with different first words, N up to the reference's own (2-5)."""
    n = len(verify_lib.split_sentences(response))
    if has_code(response) or n < 2 or not follows("verif:distinct_sentence_openers", {"min_sentences": n}, response):
        return None
    return {"min_sentences": rng.randint(2, min(n, 5))}, response


def _sentence_lengths(response: str) -> list[int] | None:
    sentences = verify_lib.split_sentences(response)
    return None if has_code(response) or len(sentences) < 2 else [verify_lib.count_words(s) for s in sentences]


def make_max_sentence_words(rng: random.Random, response: str, seed: Seed) -> Made:
    """No sentence over K words: K the longest sentence, rounded up to a multiple of 5 (at most 30)."""
    lengths = _sentence_lengths(response)
    if not lengths or max(lengths) > 30:
        return None
    return {"max_words": min(30, 5 * (max(lengths) // 5 + 1 + rng.randint(0, 1)))}, response


def make_min_sentence_words(rng: random.Random, response: str, seed: Seed) -> Made:
    """No sentence under K words: K the shortest sentence or a little less (at least 4)."""
    lengths = _sentence_lengths(response)
    if not lengths or min(lengths) < 4:
        return None
    return {"min_words": max(4, min(lengths) - rng.randint(0, 2))}, response


def make_keyword_order(rng: random.Random, response: str, seed: Seed) -> Made:
    """Two content words of the reference, the one used only before the other's first use."""
    words = content_words(response)
    pairs = [(a, b) for a in words for b in words if a != b and follows("verif:keyword_order",
                                                                        {"first": a, "second": b}, response)]
    return ({"first": (pair := rng.choice(pairs))[0], "second": pair[1]}, response) if pairs else None


def make_letter_count(rng: random.Random, response: str, seed: Seed) -> Made:
    """"At least" or "less than" N letters, N a round number on the right side of the count."""
    count = len(re.findall(r"[A-Za-z]", response))
    relation, n = threshold(rng, count, step=50 if count < 1000 else 100, least=50, fewest=50)
    return {"num_letters": n, "relation": relation}, response


def make_hyphenated_words(rng: random.Random, response: str, seed: Seed) -> Made:
    """At least N of the reference's different hyphenated words (1-3)."""
    count = len({w.lower() for w in re.findall(r"\b[A-Za-z]+(?:-[A-Za-z]+)+\b", response)})
    return ({"num_words": rng.randint(1, min(count, 3))}, response) if count else None


def make_comma_every_sentence(rng: random.Random, response: str, seed: Seed) -> Made:
    """Where every sentence of the reference has a comma."""
    return ({}, response) if not has_code(response) and follows("verif:comma_every_sentence", {}, response) else None


_IFEVAL_MEASURING = list(MAKERS)[list(MAKERS).index("length_constraints:number_words"):]   # MAKERS: shaping first
# id -> maker, in the order the mixed composer applies them: the kit's restructuring first, then IFEval's shaping,
# the kit's additions at the end, the case changes and quotes last of the shaping; then every measuring maker.
MIXED_MAKERS = {
    "verif:numbered_list": make_numbered_list,
    "verif:line_count": make_line_count,
    "verif:markdown_headings": make_markdown_headings,
    **{i: MAKERS[i][0] for i in ("length_constraints:number_paragraphs", "detectable_format:multiple_sections",
                                 "detectable_format:number_highlighted_sections", "detectable_format:title",
                                 "detectable_content:postscript", "startend:end_checker", "combination:repeat_prompt",
                                 "detectable_format:json_format")},
    "verif:end_with_question": make_end_with_question,
    "verif:tldr_line": make_tldr_line,
    "verif:wrap_in_tag": make_wrap_in_tag,
    **{i: MAKERS[i][0] for i in ("change_case:english_lowercase", "change_case:english_capital", "startend:quotation")},
    **{i: MAKERS[i][0] for i in _IFEVAL_MEASURING},                              # in MAKERS' order
    "verif:first_word": make_first_word,
    "verif:last_word": make_last_word,
    "verif:no_repeated_bigram": make_no_repeated_bigram,
    "verif:distinct_sentence_openers": make_distinct_sentence_openers,
    "verif:max_sentence_words": make_max_sentence_words,
    "verif:min_sentence_words": make_min_sentence_words,
    "verif:keyword_order": make_keyword_order,
    "verif:letter_count": make_letter_count,
    "verif:hyphenated_words": make_hyphenated_words,
    "verif:comma_every_sentence": make_comma_every_sentence,
}
assert set(MIXED_MAKERS) == set(MAKERS) | set(verify_lib.KIT_CHECKERS) and len(MIXED_MAKERS) == 39
assert set(OWN_PHRASINGS) == set(MIXED_MAKERS)
_LAYOUTS = ["verif:numbered_list", "verif:line_count", "verif:markdown_headings",
            "length_constraints:number_paragraphs", "detectable_format:multiple_sections",
            "length_constraints:nth_paragraph_first_word", "detectable_format:number_bullet_lists"]
_LAST_THING = ["verif:end_with_question", "verif:tldr_line", "verif:wrap_in_tag", "detectable_content:postscript",
               "startend:end_checker", "startend:quotation", "detectable_format:json_format"]
KIT_CONFLICTS = [  # the kit's kinds: pairs never composed together
    *((a, b) for i, a in enumerate(_LAYOUTS) for b in _LAYOUTS[i + 1:] if a.startswith("verif:")),  # one layout
    *((a, b) for i, a in enumerate(_LAST_THING) for b in _LAST_THING[i + 1:] if a.startswith("verif:")),  # one end
    *(("verif:line_count", other) for other in ("detectable_format:title", "combination:repeat_prompt",
                                                "detectable_content:postscript", "startend:end_checker",
                                                "verif:end_with_question", "verif:tldr_line")),  # lines they add
    *(("verif:numbered_list", other) for other in ("detectable_format:json_format", "startend:quotation")),
    *(("verif:line_count", other) for other in ("detectable_format:json_format", "verif:wrap_in_tag")),
    *(("verif:markdown_headings", other) for other in ("detectable_format:title", "detectable_format:json_format",
                                                       "startend:quotation")),     # a heading starts its line
    *(("verif:wrap_in_tag", other) for other in ("detectable_format:title", "combination:repeat_prompt",
                                                 "change_case:english_capital", "verif:first_word",
                                                 "verif:last_word")),
    *(("verif:tldr_line", other) for other in ("change_case:english_lowercase", "change_case:english_capital")),
    *(("verif:first_word", other) for other in ("detectable_format:json_format", "combination:repeat_prompt")),
    ("verif:last_word", "detectable_format:json_format"),
    ("verif:comma_every_sentence", "punctuation:no_comma"),
    ("verif:max_sentence_words", "verif:min_sentence_words"),
    ("verif:letter_count", "length_constraints:number_words"),
]
_CONFLICTING = {frozenset(pair) for pair in CONFLICTS + KIT_CONFLICTS}   # the first composer never meets the kit's
MIXED_ADDS_TEXT = ADDS_TEXT | {"verif:markdown_headings", "verif:end_with_question", "verif:tldr_line",
                               "verif:wrap_in_tag"}


def compose(seed: Seed, variant: int, args: argparse.Namespace, applicable: list[str],
            counts: collections.Counter) -> Row | None:
    """One composed Row for `seed`, or None. `applicable`: the instruction ids whose makers apply to the seed."""
    rng = random.Random(f"{args.seed}/{seed.id}/{variant}")
    n_hard = rng.randint(args.min_hard, args.max_hard)

    # 1. choose: a random order weighted by MAKERS, skipping what conflicts with a choice already made
    order = sorted(applicable, key=lambda i: rng.random() ** (1 / MAKERS[i][1]), reverse=True)
    chosen = []
    for instruction_id in order:
        if len(chosen) < n_hard and not any(conflict(instruction_id, c) for c in chosen):
            chosen.append(instruction_id)

    return build_row(seed, variant, rng, chosen, {i: m for i, (m, _) in MAKERS.items()}, PHRASINGS, ADDS_TEXT, args,
                     counts)


def build_row(seed: Seed, variant: int, rng: random.Random, chosen: list[str], makers: dict[str, Callable],
              phrasings: dict[str, list[str]], adds_text: set[str], args: argparse.Namespace,
              counts: collections.Counter) -> Row | None:
    """Make the chosen constraints on the seed's reference, keep those it then follows, add soft ones, word them."""
    # 2. make, in the makers' order: shaping makers rewrite the reference, measuring ones read their kwargs off it
    response, made = seed.response, []
    for instruction_id, maker in makers.items():
        if instruction_id in chosen:
            result = maker(rng, response, seed)
            if result is None:
                counts["composer: not applicable after shaping"] += 1
                continue
            kwargs, response = result
            made.append((instruction_id, kwargs))

    # 3. keep what the final reference follows (all of it, unless a later shaping step broke an earlier one)
    hard = [(i, kw) for i, kw in made if follows(i, kw, response)]
    counts["composer: failed on the reference"] += len(made) - len(hard)
    if not hard:
        return None

    # 4. soft constraints from the seed, true of its reference; "style" ones (one sentence, short) only where no
    #    hard constraint added text to the reference
    categories = [c for c in sorted(seed.soft) if c != "style" or not adds_text & set(chosen)]
    soft = rng.sample(categories, min(len(categories), rng.randint(0, args.max_soft)))

    texts = [phrase(i, kw, rng, phrasings) for i, kw in hard]
    example = Example(id=f"{seed.id}-{variant}", prompt=None, messages=None, source="composer",
                      hard=[{"id": i, "kwargs": kw, "text": t} for (i, kw), t in zip(hard, texts)],
                      soft=[seed.soft[c] for c in soft])
    _set_prompt(example, seed, assemble_prompt(seed.instruction, texts + example.soft, rng))
    kinds = [i for i, _ in hard] + [f"soft:{c}" if c in ("tone", "audience", "style") else "soft" for c in soft]
    return Row(example, seed.instruction, response, kinds)


def compose_mixed(seed: Seed, variant: int, args: argparse.Namespace, applicable: list[str],
                  counts: collections.Counter, usage: collections.Counter) -> Row | None:
    """One Row of the mixed composer: 2-4 kinds, the least used so far first (`usage`: kinds kept in earlier rows),
    one of them junk-proof, none conflicting, worded with OWN_PHRASINGS."""
    rng = random.Random(f"{args.seed}/{seed.id}/{variant}/mixed")
    n_hard = rng.randint(args.min_hard, args.max_hard)
    order = sorted(applicable, key=lambda i: usage[i] + 4 * rng.random())
    proof = [i for i in order if i in verify_lib.JUNK_PROOF]
    if not proof:
        counts["composer: no junk-proof kind applies"] += 1
        return None
    chosen = [proof[0]]
    for instruction_id in order:
        if len(chosen) < n_hard and instruction_id not in chosen and not any(conflict(instruction_id, c)
                                                                             for c in chosen):
            chosen.append(instruction_id)
    row = build_row(seed, variant, rng, chosen, MIXED_MAKERS, OWN_PHRASINGS, MIXED_ADDS_TEXT, args, counts)
    if row is not None and not any(c["id"] in verify_lib.JUNK_PROOF for c in row.example.hard):
        counts["composer: the junk-proof constraint failed on the reference"] += 1
        return None
    return row


def compose_all(seeds: list[Seed], args: argparse.Namespace, counts: collections.Counter) -> list[Row]:
    makers = MIXED_MAKERS if args.composer == "mixed" else {i: m for i, (m, _) in MAKERS.items()}
    rows, usage = [], collections.Counter()
    for seed in seeds:
        dry = random.Random(0)  # which makers can apply at all, tried once on the plain reference
        applicable = [i for i, maker in makers.items() if maker(dry, seed.response, seed)]
        seen = set()
        for variant in range(args.per_seed * 3):  # a few extra tries where a draw repeats an earlier one
            if len(seen) == args.per_seed:
                break
            if args.composer == "mixed":
                row = compose_mixed(seed, variant, args, applicable, counts, usage)
            else:
                row = compose(seed, variant, args, applicable, counts)
            key = row and tuple(sorted(c["id"] for c in row.example.hard))
            if row is None or key in seen:
                counts["composer: repeated or empty draw"] += 1
                continue
            seen.add(key)
            usage.update(key)
            row.example.id = f"{seed.id}-{len(seen)}"
            rows.append(row)
    return rows


def assemble_prompt(instruction: str, constraints: list[str], rng: random.Random) -> str:
    """The request, a blank line, then the constraints in random order: as one paragraph or as a list."""
    constraints = list(constraints)
    rng.shuffle(constraints)
    if rng.random() < 0.5:
        return f"{instruction}\n\n" + " ".join(constraints)
    return f"{instruction}\n\nRequirements:\n" + "\n".join(f"- {c}" for c in constraints)


def _set_prompt(example, seed, prompt):
    if seed.context:
        example.messages = [*seed.context, {"role": "user", "content": prompt}]
    else:
        example.prompt = prompt


# ---- split, save, report ----
def split_by_group(rows: list[Row], eval_share: float, seed: int) -> tuple[list[Row], list[Row]]:
    """(train, eval): whole source instructions go to eval, a share `eval_share` of them, drawn with `seed`."""
    groups = sorted({row.group for row in rows})
    random.Random(seed).shuffle(groups)
    n_eval = round(eval_share * len(groups))
    if eval_share > 0 and len(groups) >= 2:
        n_eval = min(max(n_eval, 1), len(groups) - 1)
    held_out = set(groups[:n_eval])
    return [r for r in rows if r.group not in held_out], [r for r in rows if r.group in held_out]


def write_outputs(out_dir: Path, train: list[Row], eval_: list[Row]) -> list[Path]:
    """The four data files, written all at once (verify_lib.save_files_atomically): no file is ever half-written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, rows in (("verif_train", train), ("verif_eval", eval_)):
        files[out_dir / f"{name}.jsonl"] = [r.example.to_json() for r in rows]
        files[out_dir / f"{name}_references.jsonl"] = [{"id": r.example.id, "response": r.reference}
                                                        for r in rows if r.reference is not None]
    return verify_lib.save_files_atomically(
        {path: "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects) for path, objects in files.items()})


def data_statistics(rows: list[Row]) -> dict:
    kinds = collections.Counter(k for row in rows for k in row.kinds)
    n_hard = sum(len(row.example.hard) for row in rows)
    n_all = n_hard + sum(len(row.example.soft) for row in rows)
    prompt_words = [len(re.findall(r"\w+", row.example.instruction)) for row in rows] or [0]
    return {"rows": len(rows), "instructions": len({row.group for row in rows}),
            "constraints_per_row": n_all / max(len(rows), 1), "hard_share": n_hard / max(n_all, 1),
            "prompt_words_mean": statistics.mean(prompt_words), "prompt_words_median": statistics.median(prompt_words),
            "prompt_words_max": max(prompt_words), "kinds": dict(kinds.most_common())}


def print_report(stats, train, eval_, counts, skipped, untagged, paths):
    print(f"\nverif data: {stats['rows']} rows from {stats['instructions']} source instructions "
          f"(train {len(train)}, eval {len(eval_)}; split by instruction)")
    print(f"  {'':28s}{'this run':>16s}{'VerInstruct':>16s}")
    print(f"  {'rows':28s}{stats['rows']:>16,d}{VERINSTRUCT['rows']:>16,d}")
    print(f"  {'constraints per row':28s}{stats['constraints_per_row']:>16.2f}{VERINSTRUCT['constraints_per_row']:>16}")
    ours = f"{100 * stats['hard_share']:.0f} % / {100 - 100 * stats['hard_share']:.0f} %"
    theirs = f"{100 * VERINSTRUCT['hard_share']:.0f} % / {100 - 100 * VERINSTRUCT['hard_share']:.0f} %"
    print(f"  {'hard / soft share':28s}{ours:>16s}{theirs:>16s}")
    words = f"{stats['prompt_words_mean']:.0f} / {stats['prompt_words_median']:.0f} / {stats['prompt_words_max']}"
    print(f"  {'prompt words mean/median/max':28s}{words:>16s}{'n/a':>16s}")
    print("  constraints by type:")
    for kind, n in stats["kinds"].items():
        print(f"    {kind:48s}{n:6d}")
    if counts["seeds"]:
        print(f"  back-translation: {counts['seeds']} seeds, {counts['proposed']} constraints proposed, "
              f"{counts['kept_hard']} hard and {counts['kept_soft']} soft kept")
    dropped = {k: v for k, v in sorted(counts.items()) if ":" in k}
    if dropped:
        print("  dropped, by reason:")
        for reason, n in dropped.items():
            print(f"    {reason:48s}{n:6d}")
    if untagged:
        print(f"  VerInstruct checkers tagged neither [rule] nor [llm], not kept: {untagged}")
    if skipped:
        print(f"  bad input rows skipped (--skip-bad): {len(skipped)}")
        for line in skipped[:5]:
            print(f"    {line}")
    print("  wrote " + ", ".join(str(p) for p in paths))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    # ---- inputs ----
    try:
        rows, seeds, skipped, untagged = read_inputs(args.input, args.skip_bad)
    except BuildError as e:
        sys.exit(f"01_build_data.py: {e}")
    if args.limit:
        seeds = seeds[:args.limit]

    # ---- constraints for the seeds: composed offline, or back-translated by an LLM ----
    counts = collections.Counter()
    if args.backtranslate:
        try:
            rows += backtranslate(seeds, args, counts)
        except BuildError as e:
            sys.exit(f"01_build_data.py: {e}")
    else:
        rows += compose_all(seeds, args, counts)
    if not rows:
        print("01_build_data.py: note: no rows kept; the files written are empty", file=sys.stderr)
    duplicates = [i for i, n in collections.Counter(r.example.id for r in rows).items() if n > 1]
    if duplicates:
        sys.exit(f"01_build_data.py: duplicate example ids {duplicates[:5]}")

    # ---- split, save and report ----
    train, eval_ = split_by_group(rows, args.eval_share, args.seed)
    paths = write_outputs(args.out_dir, train, eval_)
    print_report(data_statistics(rows), train, eval_, counts, skipped, untagged, paths)


if __name__ == "__main__":
    main()
