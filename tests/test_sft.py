"""02_sft.py on the CPU with a tiny randomly initialised model: which tokens are trained (assistant content and its
end-of-turn token, nothing else), micro-batching, QLoRA, the merged model, both input kinds, and bad input."""
import importlib
import json
import subprocess
import sys

import peft
import pytest
import torch

import verify_lib
from conftest import ROOT

sft = importlib.import_module("02_sft")

CHATS = [
    [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}],
    [{"role": "user", "content": "Count to three."}, {"role": "assistant", "content": "One, two, three."}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Capital of France?"},
     {"role": "assistant", "content": "Paris"}],
    [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"},
     {"role": "user", "content": "Louder."}, {"role": "assistant", "content": "HI!"}],
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return verify_lib.load_model(tiny_model_dir)[1]


@pytest.fixture(scope="module")
def chat_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("chats") / "chats.jsonl", [{"messages": m} for m in CHATS])


def train(tiny_model_dir, data, out_dir, *flags):
    return sft.main(["--model", str(tiny_model_dir), "--data", str(data), "--out-dir", str(out_dir),
                     "--lora-r", "4", "--lora-alpha", "8", "--batch-size", "2", "--grad-accum", "2", *map(str, flags)])


def trained_runs(labels):
    """The runs of consecutive trained (label != -100) positions, as lists of positions."""
    runs, current = [], []
    for i, label in enumerate(labels):
        if label != -100:
            current.append(i)
        elif current:
            runs, current = runs + [current], []
    return runs + ([current] if current else [])


# ---- which tokens are trained ----
@pytest.mark.parametrize("messages", [CHATS[0], CHATS[2], CHATS[3]], ids=["single-turn", "system", "multi-turn"])
def test_labels_are_exactly_the_assistant_content_and_end_of_turn(tokenizer, messages):
    ids, labels = sft.tokenize_chat(tokenizer, messages)
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    runs = trained_runs(labels)
    assert [tokenizer.decode([ids[i] for i in run]) for run in runs] == [a + "<|im_end|>" for a in answers]
    assert all(labels[i] == ids[i] for run in runs for i in run)
    n_trained = sum(len(tokenizer(a + "<|im_end|>", add_special_tokens=False)["input_ids"]) for a in answers)
    assert sum(label != -100 for label in labels) == n_trained      # everything else (headers, user turns) is -100
    assert all(tokenizer.decode(ids[:run[0]]).endswith("<|im_start|>assistant\n") for run in runs)


def test_padding_is_never_trained():
    batch = sft.pad_batch([([5, 6, 7], [-100, 6, 7]), ([5, 8], [-100, 8])], pad_id=2)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 8, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, 8, -100]]


def test_a_chat_whose_answer_is_cut_off_entirely_is_dropped_and_counted(tokenizer):
    short, long = CHATS[0], [{"role": "user", "content": "word " * 60}, {"role": "assistant", "content": "Yes."}]
    labels = sft.tokenize_chat(tokenizer, long)[1]
    n_prompt = next(i for i, label in enumerate(labels) if label != -100)    # cut there, the whole answer falls off
    rows, truncated, dropped = sft.tokenize_all(tokenizer, [("a:1", short), ("a:2", long)], max_len=n_prompt)
    assert (len(rows), truncated, dropped) == (1, 1, 1)
    cut, _, _ = sft.tokenize_all(tokenizer, [("a:2", long)], max_len=n_prompt + 1)   # one answer token survives
    assert len(cut[0][0]) == n_prompt + 1 and sum(label != -100 for label in cut[0][1]) == 1


def test_a_template_that_breaks_the_prefix_property_is_refused(tokenizer):
    broken = tokenizer.chat_template.replace("message['content']", "(message['content'] if loop.last else 'old')")
    tokenizer_copy = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    tokenizer_copy.chat_template = broken
    with pytest.raises(ValueError, match="renders turn 1 differently"):
        sft.tokenize_chat(tokenizer_copy, CHATS[3])


# ---- the loss and the schedule ----
def test_one_batch_or_three_micro_batches_give_the_same_gradient(tiny_model_dir, tokenizer):
    args = sft.parse_args(["--model", str(tiny_model_dir), "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0"])
    torch.manual_seed(0)
    model, _ = sft.build_model(args)
    for name, p in model.named_parameters():
        if "lora_B" in name:   # B starts at 0; give both LoRA factors a gradient
            torch.nn.init.normal_(p, std=0.05)
    rows, _, _ = sft.tokenize_all(tokenizer, [("x", m) for m in CHATS], 1024)

    def gradient(micro_batches):
        model.zero_grad()
        batches = [sft.pad_batch(rows, tokenizer.pad_token_id) for rows in micro_batches]
        loss, tokens = sft.accumulate_gradients(model, batches)
        return loss, tokens, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    whole, split = gradient([rows]), gradient([rows[:1], rows[1:3], rows[3:]])
    assert whole[1] == split[1] == sum(sum(label != -100 for label in labels[1:]) for _, labels in rows)
    assert whole[0] == pytest.approx(split[0], abs=1e-6)
    for name in whole[2]:
        torch.testing.assert_close(split[2][name], whole[2][name], atol=1e-6, rtol=1e-5)
    assert any(g.abs().max() > 1e-4 for g in whole[2].values())


def test_warmup_then_cosine_to_zero():
    lr = [sft.warmup_cosine(s, warmup=2, total=6) for s in range(6)]
    assert lr[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert lr[3] == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi / 4)).item()))
    assert all(a > b for a, b in zip(lr[2:], lr[3:])) and sft.warmup_cosine(6, 2, 6) == pytest.approx(0.0)


# ---- a training run ----
@pytest.fixture(scope="module")
def learnable_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with its (tied) embeddings scaled by 20: at their initial std of 0.02 they cap every logit near
    +-0.6, so that no adapter could take the loss far below ln(vocab size)."""
    model, tokenizer = verify_lib.load_model(tiny_model_dir)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(20)
    out = tmp_path_factory.mktemp("learnable")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def run(learnable_model_dir, chat_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "sft"
    result = train(learnable_model_dir, chat_file, out, "--eval-data", chat_file, "--epochs", 30, "--max-steps", 0,
                   "--lr", 1e-2, "--eval-every", 10, "--merge")
    return result, [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_few_dozen_steps_lower_the_training_and_held_out_loss(run):
    result, rows = run
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == result["steps"] == 30                     # 4 chats, 4 a step, 30 epochs
    assert losses[-1] < losses[0] - 3                               # nats per token: 13.1 -> 8.9
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    assert [step for step, _ in evals] == [0, 10, 20, 30]
    assert evals[-1][1] < evals[0][1] - 3 and result["eval_loss"] == evals[-1][1]


def test_the_run_writes_metrics_curve_and_adapter(run, tokenizer):
    result, rows = run
    out = result["out_dir"]
    assert {"step", "epoch", "loss", "lr", "grad_norm", "tokens", "seconds"} <= set(rows[1])
    trained = sum(sum(label != -100 for label in labels[1:])
                  for _, labels in sft.tokenize_all(tokenizer, [("x", m) for m in CHATS], 1024)[0])
    assert rows[1]["tokens"] == trained and rows[-1]["epoch"] == 30.0
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "adapter/adapter_config.json").read_text())["r"] == 4
    assert result["adapter"] == out / "adapter" and not (out / "adapter.tmp").exists()


def test_the_merged_folder_equals_base_plus_adapter(run, learnable_model_dir, tokenizer):
    result, _ = run
    assert not (result["merged"] / "adapter_config.json").exists()
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in result["merged"].iterdir()}
    ids = torch.tensor([sft.tokenize_chat(tokenizer, CHATS[3])[0]])
    base, _ = verify_lib.load_model(learnable_model_dir)
    with torch.no_grad():
        expected = peft.PeftModel.from_pretrained(base, result["adapter"]).eval()(input_ids=ids).logits
        merged, _ = verify_lib.load_model(result["merged"])
        got = merged(input_ids=ids).logits
        plain = verify_lib.load_model(learnable_model_dir)[0](input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert (plain - expected).abs().max() > 1e-2                   # the adapter did change the model


def test_qlora_trains_a_few_steps_on_the_cpu(tiny_model_dir, chat_file, tmp_path):
    result = train(tiny_model_dir, chat_file, tmp_path / "q", "--load-in-4bit", "--epochs", 3, "--lr", 1e-2,
                   "--eval-data", chat_file, "--limit", 2)
    assert (result["steps"], result["train_rows"], result["eval_rows"]) == (3, 2, 4) and result["eval_loss"] > 0
    weights = peft.load_peft_weights(result["adapter"])
    assert any("lora_B" in name and w.abs().max() > 0 for name, w in weights.items())   # B moved off its zero init


# ---- the two input kinds ----
def test_canonical_examples_with_references_train_like_chat_rows(tiny_model_dir, tmp_path, capsys):
    examples = [{"id": f"e{i}", "prompt": m[0]["content"], "hard": [], "soft": []} for i, m in enumerate(CHATS[:2])]
    examples.append({"id": "e2", "messages": CHATS[2][:2], "soft": ["terse"]})
    examples.append({"id": "no-reference", "prompt": "Unanswered.", "hard": []})
    data = write_jsonl(tmp_path / "ex.jsonl", examples)
    write_jsonl(tmp_path / "ex_references.jsonl", [{"id": f"e{i}", "response": CHATS[i][-1]["content"]}
                                                   for i in range(3)])
    chats, skipped = sft.load_chats(data)
    assert [m for _, m in chats] == CHATS[:3] and skipped == 1
    assert [where for where, _ in chats] == [f"{data}:1", f"{data}:2", f"{data}:3"]
    result = train(tiny_model_dir, data, tmp_path / "out", "--eval-data", "none", "--eval-share", 0.34)
    assert (result["train_rows"], result["eval_rows"]) == (2, 1)
    assert "1 examples without a reference skipped" in capsys.readouterr().out


EXAMPLE = '{"id": "a", "prompt": "x", "hard": []}'
CHAT = '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}'


@pytest.mark.parametrize("bad_file, rows, problem", [
    ("chats", [CHAT, '{"messages": [{"role": "user", "content": "x"}'], ":2: malformed JSON"),
    ("chats", [CHAT, '{"conversation": []}'], ":2: a chat row is {'messages'"),
    ("chats", ['{"messages": [{"role": "user", "content": "x"}]}'], ":1: the last turn must be the assistant's"),
    ("chats", ['{"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "{}"}, '
               '{"role": "assistant", "content": "y"}]}'], ":1: messages[1]: unknown role 'tool'"),
    ("chats", ['{"messages": [{"role": "assistant", "content": "y"}]}'], ":1: messages[0]: an assistant turn before"),
    ("examples", [EXAMPLE, '{"id": "b", "prompt": "x", "hard": [{"id": "no:such"}]}'], ":2: hard[0]"),
    ("references", ['{"id": "a", "response": "y"}', '{"id": "zzz", "response": "y"}'], ":2: reference id 'zzz' is not"),
    ("references", ['{"id": "a"}'], ":1: a reference row is {'id': str, 'response': str}"),
])
def test_bad_input_names_file_and_line_and_writes_nothing(tiny_model_dir, tmp_path, bad_file, rows, problem):
    bad = tmp_path / f"{bad_file}.jsonl"
    bad.write_text("".join(row + "\n" for row in rows))
    data = bad if bad_file != "references" else tmp_path / "examples.jsonl"
    if bad_file == "references":
        data.write_text(EXAMPLE + "\n")
    with pytest.raises(verify_lib.ExampleError) as error:
        train(tiny_model_dir, data, tmp_path / "out", "--references", tmp_path / "references.jsonl")
    assert f"{bad}{problem}" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_the_command_line_reports_bad_input_in_one_line(tmp_path):
    bad = write_jsonl(tmp_path / "chats.jsonl", [{"messages": [{"role": "user", "content": "x"}]}])
    out = subprocess.run([sys.executable, "02_sft.py", "--data", bad, "--out-dir", tmp_path / "out"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and not (tmp_path / "out").exists()
    assert out.stderr.strip().splitlines()[-1] == f"02_sft.py: {bad}:1: the last turn must be the assistant's " \
                                                  "(what SFT learns), not 'user'"


def test_a_folder_write_that_fails_leaves_the_previous_folder_whole(tmp_path):
    final = tmp_path / "adapter"
    verify_lib.save_folder_atomically(final, lambda tmp: (tmp.mkdir(), (tmp / "w").write_text("old")))

    def broken(tmp):
        tmp.mkdir()
        (tmp / "w").write_text("half")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        verify_lib.save_folder_atomically(final, broken)
    assert (final / "w").read_text() == "old"
    verify_lib.save_folder_atomically(final, lambda tmp: (tmp.mkdir(), (tmp / "w").write_text("new")))
    assert (final / "w").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
