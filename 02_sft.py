"""02_sft.py — supervised fine-tuning with LoRA or QLoRA, loss on the assistant's tokens only.

    python 02_sft.py                  # CPU demo: LoRA on the embedded SmolLM2-135M, data/verif_train.jsonl + references
    python 02_sft.py --load-in-4bit   # QLoRA: nf4 base weights (bitsandbytes; runs on the CPU too)
    python 02_sft.py --merge          # also <out-dir>/merged: a full HF folder for 04_grpo.py --model and vLLM
    python 02_sft.py --data chats.jsonl --eval-data held_out.jsonl   # chat rows {"messages": [...]}, assistant last

Input, detected per file: (a) canonical examples (verify_lib.load_examples) joined by "id" with a references file of
{"id", "response"} rows (default: <stem>_references.jsonl beside it; 01_build_data.py writes both), the chat being the
example's prompt or messages plus the reference as the assistant turn; or (b) chat rows {"messages": [...]} that end in
an assistant turn. A bad row stops the run before anything is written, naming path:line and the problem.

Every assistant turn is trained, its end-of-turn token included (so the model learns to stop); system and user turns,
the template's role headers and padding are not (labels -100, see tokenize_chat). One optimizer step sees
--batch-size x --grad-accum chats; its loss is the summed token NLL over the number of trained tokens in the whole
accumulated batch, so micro-batching does not change the gradient. AdamW, linear warmup then cosine decay to 0,
gradient clipping at 1.0. CPU demo: 24 steps of 8 chats (a quarter of an epoch of the 780 training chats); give
--max-steps 0 to run all --epochs. VerIF's IF-Verifier distillation trained all weights at lr 2e-5 for 2 epochs;
LoRA usually needs 10x that (2e-4 here).
Outputs in --out-dir: metrics.jsonl (one row per optimizer step: step, epoch, loss, lr, grad_norm, tokens = trained
tokens, seconds, and eval_loss on eval steps; step 0 holds the held-out loss before training), loss.png, config.json,
adapter/ (PEFT adapter + tokenizer) and, with --merge, merged/ (both written to a temporary folder, then renamed).
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import verify_lib
from verify_lib import ExampleError

HERE = Path(__file__).resolve().parent          # default paths are beside this script, from any working directory

DEFAULT_DATA, DEFAULT_EVAL = HERE / "data/verif_train.jsonl", HERE / "data/verif_eval.jsonl"
ROLES = ("system", "user", "assistant")


# ---- arguments ----
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=verify_lib.HelpFormatter)
    a = p.add_argument
    a("--data", type=Path, default=DEFAULT_DATA, help="canonical examples or chat rows (see above)")
    a("--references", type=Path, help="{id, response} rows for canonical --data (default: <stem>_references.jsonl)")
    a("--eval-data", help=f"held-out rows, same kinds (default: {DEFAULT_EVAL} with the default --data, if it exists; "
                          "'none' or otherwise: hold out --eval-share of --data)")
    a("--eval-references", type=Path, help="references for canonical --eval-data (default: <stem>_references.jsonl)")
    a("--eval-share", type=float, default=0.05, help="share of --data held out when there is no --eval-data (0: none)")
    a("--model", type=verify_lib.model_arg, help="HF folder or hub id (default: the embedded SmolLM2-135M-Instruct)")
    a("--out-dir", type=Path, default=HERE / "runs/sft", help="the run folder: adapter/, metrics.jsonl, loss.png")
    a("--epochs", type=int, default=1, help="passes over the data (VerIF's IF-Verifier: 2), capped by --max-steps")
    a("--max-steps", type=int, default=24,
      help="stop after N optimizer steps (24: the CPU demo, ~6 min on 2 cores; 0: no cap, all --epochs)")
    a("--batch-size", type=int, default=4, help="chats per forward/backward (a micro-batch)")
    a("--grad-accum", type=int, default=2, help="micro-batches per optimizer step (4 x 2 = 8 chats a step)")
    a("--lr", type=float, default=2e-4, help="AdamW peak lr (2e-4: LoRA; VerIF's IF-Verifier: 2e-5, all weights)")
    a("--warmup-ratio", type=float, default=0.1, help="linear warmup over this share of the steps, then cosine to 0 "
                                                       "(0.1 and cosine: LLaMA-Factory's SFT recipes)")
    a("--weight-decay", type=float, default=0.0, help="AdamW weight decay (0: HF Trainer's default)")
    a("--max-grad-norm", type=float, default=1.0, help="gradient clipping (1.0: HF Trainer, verl)")
    a("--max-len", type=int, default=1024, help="tokens per chat; longer chats lose their right end")
    verify_lib.lora_arguments(a, dropout=0.05, dropout_help="LoRA dropout")
    a("--eval-every", type=int, default=12, help="held-out loss every N steps, before the first and after the last")
    a("--limit", type=int, help="train on the first N chats only (quick runs)")
    a("--merge", action="store_true",
      help="also save base + adapter merged (in float32, saved in the base's dtype) in <out-dir>/merged")
    a("--overwrite", action="store_true", help="replace what --out-dir holds (default: a folder that holds another "
                                               "run is refused)")
    a("--seed", type=int, default=0, help="LoRA init, dropout and the order of the chats")
    args = p.parse_args(argv)
    verify_lib.check_numbers(p, args, dict.fromkeys(("epochs", "batch_size", "grad_accum", "eval_every", "max_len",
                                                     "lora_r"), 1))
    return args


# ---- heavy imports, after the arguments: --help and a bad flag answer at once, before torch loads (seconds) ----
if __name__ == "__main__":
    parse_args()
verify_lib.quiet_libraries()
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402


# ---- data: files -> chats -> (input_ids, labels) ----
def load_chats(path: Path, references: Path | None = None) -> tuple[list[tuple[str, list[dict]]], int]:
    """Chats of a file as [(where, messages)], where = "path:line", and how many examples had no reference.
    A file is canonical examples if its first row has "prompt", "hard" or "soft"; otherwise it is chat rows."""
    path = Path(path)
    if not path.is_file():
        raise ExampleError(f"{path}: no such file (python 01_build_data.py makes data/verif_*.jsonl)")
    rows = list(verify_lib.read_jsonl(path, error=ExampleError))
    if not rows:
        raise ExampleError(f"{path}: no rows")
    if not (isinstance(rows[0][1], dict) and {"prompt", "hard", "soft"} & set(rows[0][1])):
        return [(f"{path}:{line}", checked_chat(row, f"{path}:{line}")) for line, row in rows], 0
    examples = verify_lib.load_examples(path)
    references = references or path.with_name(f"{path.stem}_references.jsonl")
    responses = load_references(references, path, {ex.id for ex in examples})
    chats = []
    for (line, _), ex in zip(rows, examples):
        if ex.id in responses:
            answer = {"role": "assistant", "content": responses[ex.id]}
            row = {"messages": ex.chat + [answer]}
            chats.append((f"{path}:{line}", checked_chat(row, f"{path}:{line}")))
    return chats, len(examples) - len(chats)


def load_references(path: Path, examples_path: Path, ids: set[str]) -> dict[str, str]:
    """{id: response} from {"id", "response"} rows; every id must name an example of examples_path."""
    if not path.is_file():
        raise ExampleError(f"{path}: no such file: the references of {examples_path} (01_build_data.py writes both; "
                           "or pass --references)")
    responses = {}
    for line, id_, response in verify_lib.read_responses(path):
        if id_ not in ids:
            raise ExampleError(f"{path}:{line}: reference id {id_!r} is not in {examples_path}")
        if id_ in responses:
            raise ExampleError(f"{path}:{line}: duplicate reference id {id_!r}")
        responses[id_] = response
    return responses


def checked_chat(row, where: str) -> list[dict]:
    """The messages of a chat row, validated: roles system/user/assistant, a user turn before the first assistant
    turn, the last turn the assistant's. ExampleError names `where` and the problem."""
    def bad(problem):
        return ExampleError(f"{where}: {problem}")
    if not isinstance(row, dict) or "messages" not in row:
        raise bad(f"a chat row is {{'messages': [{{'role': ..., 'content': ...}}, ...]}}, got {row!r:.80}")
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise bad(f"messages[{i}] must be {{'role': ..., 'content': str}}, got {m!r:.80}")
        if m.get("role") not in ROLES:
            raise bad(f"messages[{i}]: unknown role {m.get('role')!r} (system, user or assistant)")
    if messages[-1]["role"] != "assistant":
        raise bad(f"the last turn must be the assistant's (what SFT learns), not {messages[-1]['role']!r}")
    first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    if not any(m["role"] == "user" for m in messages[:first]):
        raise bad(f"messages[{first}]: an assistant turn before any user turn")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def tokenize_chat(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one chat: labels copy the ids of each assistant turn's content and end-of-turn token
    and are -100 everywhere else.

    Assistant turn k spans from the end of render(messages[:k], add_generation_prompt=True) to the end of
    render(messages[:k+1]); both must be token prefixes of render(messages), else the template cannot be trained on
    this way (ValueError). The turn's tokens after its last EOS are the template's separator and are not trained.
    SmolLM2 on [user "Hi", assistant "Yo"] (its template adds a system turn):
        tokens  <|im_start|>system\\n ... Hi<|im_end|>\\n<|im_start|>assistant\\n  Yo  <|im_end|>  \\n
        labels  -100 ............................................................. Yo  <|im_end|>  -100
    """
    def render(msgs, generation_prompt=False):
        return tokenizer.apply_chat_template(msgs, add_generation_prompt=generation_prompt, return_dict=False)
    ids = render(messages)
    labels = [-100] * len(ids)
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, through = render(messages[:k], True), render(messages[:k + 1])
        start, end = len(before), len(through)
        if ids[:start] != before or ids[:end] != through or end <= start:
            raise ValueError(f"the chat template of {tokenizer.name_or_path} renders turn {k} differently in a prefix "
                             "of the chat than in the whole chat, so its assistant tokens cannot be located")
        eos = [i for i in range(start, end) if ids[i] == tokenizer.eos_token_id]
        end = eos[-1] + 1 if eos else end
        labels[start:end] = ids[start:end]
    return ids, labels


def tokenize_all(tokenizer, chats, max_len: int) -> tuple[list[tuple[list[int], list[int]]], int, int]:
    """Tokenized chats cut to max_len tokens from the right; returns (rows, truncated, dropped): a chat whose trained
    tokens all fell off is dropped."""
    rows, truncated, dropped = [], 0, 0
    for where, messages in chats:
        try:
            ids, labels = tokenize_chat(tokenizer, messages)
        except ValueError as e:
            raise ExampleError(f"{where}: {e}") from None
        truncated += len(ids) > max_len
        ids, labels = ids[:max_len], labels[:max_len]
        if all(label == -100 for label in labels[1:]):   # the first token is never predicted
            dropped += 1
        else:
            rows.append((ids, labels))
    return rows, truncated, dropped


def pad_batch(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad (input_ids, labels) rows to the longest: padding has attention 0 and label -100. Padding on the right
    keeps each real token at position 0..n-1, as in generation; the tokenizer keeps load_model's left padding.

    >>> batch = pad_batch([([5, 6, 7], [-100, 6, 7]), ([5, 8], [-100, 8])], pad_id=2)
    >>> batch["input_ids"].tolist(), batch["attention_mask"].tolist()
    ([[5, 6, 7], [5, 8, 2]], [[1, 1, 1], [1, 1, 0]])
    >>> batch["labels"].tolist()
    [[-100, 6, 7], [-100, 8, -100]]
    """
    width = max(len(ids) for ids, _ in rows)
    pad = [width - len(ids) for ids, _ in rows]
    return {"input_ids": torch.tensor([ids + [pad_id] * n for (ids, _), n in zip(rows, pad)]),          # [B, S]
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * n for (ids, _), n in zip(rows, pad)]),
            "labels": torch.tensor([labels + [-100] * n for (_, labels), n in zip(rows, pad)])}


# ---- the loss ----
def token_nll_sum(model, batch: dict) -> tuple[torch.Tensor, int]:
    """Summed -log p(label) over the labelled tokens of a batch, and their count. Logits at t predict token t + 1, and
    are computed only from the batch's first labelled token on (prompts need none: less time and memory)."""
    batch = {k: v.to(model.device) for k, v in batch.items()}
    labels = batch["labels"]                                          # [B, S]
    first = int((labels != -100).int().argmax(dim=1).min())           # earliest trained position in the batch
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                   logits_to_keep=labels.shape[1] - first + 1).logits[:, :-1]   # [B, S-first, V]
    targets = labels[:, first:]                                       # [B, S-first]
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="sum")
    return nll, int((targets != -100).sum())


def accumulate_gradients(model, micro_batches: list[dict]) -> tuple[float, int]:
    """Backward the loss of one accumulated batch, a micro-batch at a time: each micro-batch's summed NLL is divided by
    the trained-token count of the WHOLE batch, so the gradient does not depend on the split. Returns (loss, tokens)."""
    n_tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro_batches)
    loss = 0.0
    for batch in micro_batches:
        nll, _ = token_nll_sum(model, batch)
        (nll / n_tokens).backward()
        loss += nll.item() / n_tokens
    return loss, n_tokens


@torch.no_grad()
def evaluate(model, rows, batch_size: int, pad_id: int) -> float:
    """Held-out loss: summed NLL over all trained tokens of `rows` / their number (batches of similar lengths)."""
    eval_mode(model)
    rows = sorted(rows, key=lambda r: len(r[0]))
    nll, n = 0.0, 0
    for i in range(0, len(rows), batch_size):
        s, k = token_nll_sum(model, pad_batch(rows[i:i + batch_size], pad_id))
        nll, n = nll + s.item(), n + k
    model.train()
    return nll / max(n, 1)


def eval_mode(model) -> None:
    """model.eval() except bitsandbytes' 4-bit layers: on the CPU their first eval-mode forward repacks the weights for
    an inference kernel (bitsandbytes 0.50) that autograd does not know, so later training steps would backpropagate
    through it (PyTorch warns of silently wrong gradients); it also fails on layers narrower than 64. They hold no
    dropout, so keeping them in train mode changes nothing else."""
    model.eval()
    for module in model.modules():
        if type(module).__module__.startswith("bitsandbytes."):
            module.training = True


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """lr multiplier for optimizer step `step` (0-based): linear warmup to 1 over `warmup` steps, then cosine to 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


# ---- the model ----
def build_model(args):
    """The base model (nf4 with --load-in-4bit) with a fresh LoRA adapter on every linear layer."""
    model, tokenizer = verify_lib.load_model(args.model, load_in_4bit=args.load_in_4bit)
    return verify_lib.add_lora(model, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout,
                               gradient_checkpointing=args.gradient_checkpointing), tokenizer


def plot_loss(metrics_path: Path, out_png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    if train:
        steps, losses = zip(*train)
        k = max(1, len(losses) // 5)                                  # moving-average window
        ax.plot(steps, losses, color="C0", alpha=0.3, label="train, per step")
        ax.plot(steps[k - 1:], [sum(losses[i + 1 - k:i + 1]) / k for i in range(k - 1, len(losses))], color="C0",
                label=f"train, mean of {k} steps")
    held_out = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    if held_out:
        ax.plot(*zip(*held_out), "o-", color="C1", label="held-out")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats per assistant token)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def train_and_held_out_chats(args):
    """((train chats, skipped), (held-out chats, skipped), where the held-out ones come from): --eval-data, the default
    eval split beside the default --data, or a seeded --eval-share of --data. --limit cuts the training chats."""
    train_chats, skipped = load_chats(args.data, args.references)
    default_eval = args.eval_data is None and args.data == DEFAULT_DATA and DEFAULT_EVAL.is_file()
    eval_path = DEFAULT_EVAL if default_eval else (
        None if args.eval_data in (None, "none", "None") else Path(args.eval_data))
    if eval_path:
        held_out = load_chats(eval_path, args.eval_references)
    else:  # hold out a seeded share of the training chats
        order = torch.randperm(len(train_chats), generator=torch.Generator().manual_seed(args.seed)).tolist()
        n_eval = round(args.eval_share * len(train_chats))
        held_out = [train_chats[i] for i in sorted(order[:n_eval])], 0
        train_chats = [train_chats[i] for i in sorted(order[n_eval:])]
    return (train_chats[:args.limit], skipped), held_out, eval_path or f"{args.eval_share:.0%} of {args.data}"


def step_schedule(n_rows: int, args) -> list[tuple[float, list[int]]]:
    """(epochs done after the step, row indices) per optimizer step: each epoch a seeded shuffle (seed + epoch) cut
    into steps of batch_size x grad_accum rows, the last one shorter; at most --max-steps steps.

    >>> step_schedule(5, argparse.Namespace(batch_size=2, grad_accum=1, epochs=1, seed=0, max_steps=0))
    [(0.4, [4, 0]), (0.8, [1, 3]), (1.0, [2])]
    """
    per_step = args.batch_size * args.grad_accum
    orders = [torch.randperm(n_rows, generator=torch.Generator().manual_seed(args.seed + e)).tolist()
              for e in range(args.epochs)]
    schedule = [(epoch + min(i + per_step, len(order)) / len(order), order[i:i + per_step])
                for epoch, order in enumerate(orders) for i in range(0, len(order), per_step)]
    return schedule[:args.max_steps or None]


def main(argv=None) -> dict:
    """Train; returns {"out_dir", "adapter", "merged" (None without --merge), "metrics", "steps", "train_rows",
    "eval_rows", "train_loss" (last step), "eval_loss" (last evaluation, None without held-out rows)}."""
    args = parse_args(argv)

    # ---- setup: every input is read and checked before anything is written ----
    torch.manual_seed(args.seed)                                      # LoRA init and dropout
    (train_chats, skipped), (eval_chats, eval_skipped), held_out = train_and_held_out_chats(args)
    try:
        verify_lib.claim_run_dir(args.out_dir, overwrite=args.overwrite)
    except FileExistsError as e:
        sys.exit(f"02_sft.py: {e}")
    model, tokenizer = build_model(args)
    train_rows, truncated, dropped = tokenize_all(tokenizer, train_chats, args.max_len)
    eval_rows, eval_truncated, eval_dropped = tokenize_all(tokenizer, eval_chats, args.max_len)
    if not train_rows:
        raise ExampleError(f"{args.data}: no chat left to train on")
    for name, source, rows, counts in (("train", args.data, train_rows, (skipped, truncated, dropped)),
                                       ("held-out", held_out, eval_rows, (eval_skipped, eval_truncated, eval_dropped))):
        print(f"{name}: {len(rows)} chats from {source} ({counts[0]} examples without a reference skipped, "
              f"{counts[1]} cut to {args.max_len} tokens, {counts[2]} dropped: no trained token left)")

    schedule = step_schedule(len(train_rows), args)
    warmup = round(args.warmup_ratio * len(schedule))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                                  weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, len(schedule)))
    (args.out_dir / "config.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))
    metrics_path = args.out_dir / "metrics.jsonl"
    metrics_path.write_text("")
    pad_id = tokenizer.pad_token_id

    def log(row: dict) -> None:
        with open(metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    eval_loss = evaluate(model, eval_rows, args.batch_size, pad_id) if eval_rows else None
    if eval_rows:
        log({"step": 0, "epoch": 0.0, "eval_loss": eval_loss})

    # ---- the loop ----
    model.train()
    bar = tqdm(schedule, desc="sft")
    for step, (epoch, indices) in enumerate(bar, start=1):
        t0 = time.perf_counter()
        chats = [train_rows[i] for i in indices]
        micro = [pad_batch(chats[i:i + args.batch_size], pad_id) for i in range(0, len(chats), args.batch_size)]
        loss, n_tokens = accumulate_gradients(model, micro)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm).item()
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        row = {"step": step, "epoch": epoch, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": n_tokens,
               "seconds": time.perf_counter() - t0}
        if eval_rows and (step % args.eval_every == 0 or step == len(schedule)):
            eval_loss = row["eval_loss"] = evaluate(model, eval_rows, args.batch_size, pad_id)
        log(row)
        bar.set_postfix(loss=f"{loss:.3f}", eval=f"{eval_loss:.3f}" if eval_rows else "-")

    # ---- save and report ----
    adapter = verify_lib.save_folder_atomically(args.out_dir / "adapter",
                                                lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))
    plot_loss(metrics_path, args.out_dir / "loss.png")
    merged = None
    if args.merge:
        del model, optimizer, scheduler
        merged = verify_lib.merge_adapter(args.model, adapter, args.out_dir / "merged")
    print(f"adapter{', merged model' if merged else ''}, metrics and loss curve in {args.out_dir}")
    return {"out_dir": args.out_dir, "adapter": adapter, "merged": merged, "metrics": metrics_path,
            "steps": len(schedule), "train_rows": len(train_rows), "eval_rows": len(eval_rows),
            "train_loss": loss if schedule else None, "eval_loss": eval_loss}


if __name__ == "__main__":
    try:
        main()
    except ExampleError as e:
        sys.exit(f"02_sft.py: {e}")
