"""05_eval.py as specifications: the GPT-4 reference numbers, resuming, generation with a tiny model, the server
backend against a scripted server, held-out VerIF scores, and the side-by-side report. All on CPU in seconds."""
import importlib.util
import json

import pytest
from conftest import ROOT
from scripted_server import ScriptedServer, chat_reply, quoted_response

import verify_lib

spec = importlib.util.spec_from_file_location("eval05", ROOT / "05_eval.py")
eval05 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(eval05)

GPT4 = ROOT / "data/ifeval/input_response_data_gpt4_20231107_145030.jsonl"
NO_COMMA = {"id": "punctuation:no_comma", "kwargs": {}}


@pytest.fixture
def verif_eval(tmp_path):
    """A held-out file in the canonical schema: one prompt, one chat; hard and soft constraints."""
    rows = [{"id": "p", "prompt": "Say hi.", "hard": [NO_COMMA], "soft": ["The tone is warm."], "source": "test"},
            {"id": "m", "messages": [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "Name a colour."}],
             "hard": [], "soft": ["It names a colour."], "source": "test"}]
    path = tmp_path / "verif_eval.jsonl"
    path.write_text("".join(json.dumps(verify_lib.parse_example(r).to_json()) + "\n" for r in rows))
    return path


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- IFEval scoring of a responses file ----
def test_gpt4_responses_give_the_published_numbers_but_for_the_random_letter_prompt(tmp_path, capsys):
    eval05.main(["--responses", str(GPT4), "--out", str(tmp_path / "m.json")])
    out = capsys.readouterr().out
    for line in ("prompt-level strict        77.08", "instruction-level strict   83.69",
                 "prompt-level loose         79.67", "instruction-level loose    85.61"):
        assert line in out
    assert "keys 1122 and 1129" in out and "76.89 / 83.57 published" in out
    metrics = json.loads((tmp_path / "m.json").read_text())
    strict = {p["key"]: p["strict"] for p in metrics["per_prompt"]}
    assert all(strict[1122])  # GPT-4's four '#' count as the letter given; the 2023 reference drew a random one
    prompts_passed = sum(all(v) for v in strict.values())
    instructions = sum(map(len, strict.values()))
    passed = sum(map(sum, strict.values()))
    assert f"{100 * (prompts_passed - 1) / 541:.2f}" == "76.89"  # the published numbers, with 1122 failing
    assert f"{100 * (passed - 1) / instructions:.2f}" == "83.57"


def test_ifbench_sample_outputs_are_recognised_and_scored_as_the_reference_does(tmp_path, capsys, shared_ifbench):
    """AllenAI's sample answers, against the 294-prompt file they answer: told apart from IFEval by their prompts,
    joined by prompt text, and scored with the reference's verdicts (tests/fixtures/ifbench)."""
    eval05.main(["--responses", str(shared_ifbench / "sample_output.jsonl"), "--ifbench-input",
                 str(shared_ifbench / "IFBench_test_v2025.jsonl"), "--out", str(tmp_path / "m.json")])
    out = capsys.readouterr().out
    assert "IFBench on 294 prompts" in out and "keys 1122" not in out
    metrics = json.loads((tmp_path / "m.json").read_text())
    reference = json.loads((ROOT / "tests/fixtures/ifbench/reference_sample_output.json").read_text())
    assert {p["key"]: p["loose"] for p in metrics["per_prompt"]} == {k: v["loose"] for k, v in reference.items()}
    strict = sum(all(v["strict"]) for v in reference.values()) / len(reference)
    assert metrics["prompt_strict"] == strict and f"prompt-level strict       {100 * strict:6.2f}" in out


def test_a_responses_file_that_answers_neither_benchmark_is_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"prompt": "What is 2 + 2?", "response": "4"}\n')
    with pytest.raises(SystemExit, match=r"cannot tell which benchmark it answers .*IFEval's prompts or keys: 0, "
                                         r"IFBench's: 0\); pass --benchmark"):
        eval05.main(["--responses", str(path)])
    with pytest.raises(SystemExit, match=r"no response for the prompt of key\(s\) \['0', '1'"):
        eval05.main(["--responses", str(path), "--benchmark", "ifbench"])


def test_ifbench_answers_missing_from_a_file_are_named(tmp_path):
    rows = [json.loads(line) for line in eval05.IFBENCH_INPUT.read_text().splitlines()]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps({"prompt": r["prompt"] + "  ", "response": "ok"}) + "\n" for r in rows[:299]))
    with pytest.raises(SystemExit, match=rf"299 rows for 300 prompts, and no response for the prompt of key\(s\) "
                                         rf"\['{rows[299]['key']}'\]"):
        eval05.main(["--responses", str(path)])
    path.write_text(path.read_text() + json.dumps({"prompt": rows[299]["prompt"], "response": "ok"}) + "\n")
    eval05.main(["--responses", str(path), "--out", str(tmp_path / "m.json")])   # spaces around a prompt: the same
    assert json.loads((tmp_path / "m.json").read_text())["n"] == 300


# ---- responses on disk, resumed by key ----
class CountingBackend:
    """A stand-in model: answers 'answer to <last user turn>' and remembers what it was asked."""

    def __init__(self):
        self.asked = []

    def __call__(self):
        def generate(chats):
            self.asked += [c[-1]["content"] for c in chats]
            return [eval05.Generation(f"answer to {c[-1]['content']}") for c in chats]
        return generate


def items(n):
    return eval05.prompt_items([{"key": k, "prompt": f"prompt {k}"} for k in range(n)])


def test_resuming_skips_finished_prompts(tmp_path):
    path, backend = tmp_path / "r.jsonl", CountingBackend()
    eval05.generate_into(path, items(3), "key", backend, batch_size=2)
    rows = eval05.generate_into(path, items(5), "key", backend, batch_size=2)
    assert backend.asked == ["prompt 0", "prompt 1", "prompt 2", "prompt 3", "prompt 4"]
    assert [r["key"] for r in rows] == [0, 1, 2, 3, 4] and len(rows_of(path)) == 5
    assert eval05.generate_into(path, items(5), "key", backend, batch_size=2) == rows
    assert len(backend.asked) == 5


def test_a_cut_off_last_line_is_dropped_and_generated_again(tmp_path, capsys):
    path, backend = tmp_path / "r.jsonl", CountingBackend()
    eval05.generate_into(path, items(3), "key", backend, batch_size=3)
    path.write_text(path.read_text()[:-20])  # a crash in the middle of writing the third row
    rows = eval05.generate_into(path, items(3), "key", backend, batch_size=3)
    assert "removed a cut-off last line (line 3)" in capsys.readouterr().err
    assert backend.asked[3:] == ["prompt 2"]
    assert rows_of(path) == rows and [r["key"] for r in rows] == [0, 1, 2]


def test_a_bad_row_in_a_responses_file_names_file_and_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"key": 0, "response": "a"}\n{"key": 1}\n{"key": 2, "response": "c"}\n')
    with pytest.raises(SystemExit, match=rf"{path}:2: a responses row needs 'key'"):
        eval05.generate_into(path, items(3), "key", CountingBackend(), batch_size=2)
    path.write_text('{"key": 0, "response": "a"}\n{"key": 1, \n{"key": 2, "response": "c"}\n')
    with pytest.raises(SystemExit, match=rf"{path}:2: malformed JSON"):
        eval05.generate_into(path, items(3), "key", CountingBackend(), batch_size=2)


def test_a_failed_prompt_is_not_saved_and_the_run_exits_nonzero(tmp_path):
    def backend():
        return lambda chats: [eval05.Generation(None, error="HTTP 400: too long") if "1" in c[-1]["content"]
                              else eval05.Generation("ok") for c in chats]
    path = tmp_path / "r.jsonl"
    with pytest.raises(SystemExit, match=r"no response for 1 prompt\(s\) \(first: 1: HTTP 400: too long\)"):
        eval05.generate_into(path, items(3), "key", backend, batch_size=3)
    assert [r["key"] for r in rows_of(path)] == [0, 2]


# ---- generation with a tiny model (HF backend) ----
def test_a_tiny_model_writes_well_formed_responses_and_metrics(tmp_path, tiny_model_dir, verif_eval, capsys):
    run = tmp_path / "run"
    eval05.main(["--model", str(tiny_model_dir), "--limit", "3", "--max-new-tokens", "5", "--batch-size", "2",
                 "--verif-eval", str(verif_eval), "--run-dir", str(run)])
    ifeval = rows_of(run / "ifeval_responses.jsonl")
    keys = [json.loads(line)["key"] for line in eval05.IFEVAL_INPUT.read_text().splitlines()[:3]]
    assert [r["key"] for r in ifeval] == keys
    for r in ifeval:
        assert set(r) == {"key", "prompt", "response", "truncated"} and isinstance(r["response"], str)
    verif = rows_of(run / "verif_responses.jsonl")
    assert [(r["id"], "prompt" in r, "messages" in r) for r in verif] == [("p", True, False), ("m", False, True)]
    metrics = json.loads((run / "ifeval_metrics.json").read_text())
    assert metrics["n"] == 3 and len(metrics["per_prompt"]) == 3
    assert {"prompt_strict", "inst_strict", "prompt_loose", "inst_loose", "per_category"} <= set(metrics)
    verif_metrics = json.loads((run / "verif_metrics.json").read_text())
    assert (verif_metrics["n"], verif_metrics["n_with_hard"], verif_metrics["soft_pass_rate"]) == (2, 1, None)
    config = json.loads((run / "config.json").read_text())
    assert (config["model"], config["max_new_tokens"], config["temperature"]) == (str(tiny_model_dir), 5, 0.0)
    out = capsys.readouterr().out
    assert "IFEval on 3 prompts" in out and "VerIF held-out on 2 examples" in out and "no judge" in out


def test_tasks_ifbench_answers_the_ifbench_prompts_into_its_own_files(tmp_path, tiny_model_dir, capsys):
    run = tmp_path / "run"
    eval05.main(["--model", str(tiny_model_dir), "--tasks", "ifbench", "--limit", "2", "--max-new-tokens", "4",
                 "--run-dir", str(run)])
    answers = rows_of(run / "ifbench_responses.jsonl")
    assert [r["key"] for r in answers] == ["0", "1"] and not (run / "ifeval_responses.jsonl").exists()
    metrics = json.loads((run / "ifbench_metrics.json").read_text())
    assert metrics["n"] == 2 and {"count", "words"} >= set(metrics["per_category"])
    assert "IFBench on 2 prompts" in capsys.readouterr().out


def test_greedy_generation_is_repeatable_and_decodes_only_new_tokens(tiny_model_dir):
    import transformers

    args = eval05.parse_args(["--model", str(tiny_model_dir), "--max-new-tokens", "4"])
    generate = eval05.hf_backend(args)
    chats = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "A much longer prompt than the other"}]]
    first = generate(chats)
    assert generate(chats) == first  # greedy
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    for g in first:  # at most the 4 new tokens, never the prompt
        assert len(tokenizer(g.text, add_special_tokens=False).input_ids) <= 4


def test_greedy_means_the_argmax_whatever_the_model_s_generation_config(opinionated_model_dir):
    """The model's generation_config.json asks for a repetition penalty and no repeated tokens, which would change
    even greedy answers; 05_eval.py's answer is the plain argmax, token by token."""
    import torch
    import transformers

    args = eval05.parse_args(["--model", str(opinionated_model_dir), "--max-new-tokens", "24"])
    chat = [{"role": "user", "content": "Name a colour."}]
    (answer,) = eval05.hf_backend(args)([chat])
    tokenizer = transformers.AutoTokenizer.from_pretrained(opinionated_model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(opinionated_model_dir)
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    with torch.no_grad():
        for _ in range(24):                                 # argmax by hand, no logits processor at all
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    n_prompt = ids.shape[1] - 24
    expected = ids[0, n_prompt:]
    stops = (expected == tokenizer.eos_token_id).nonzero()
    expected = expected[:stops[0, 0] + 1] if len(stops) else expected
    assert answer.text == tokenizer.decode(expected, skip_special_tokens=True)
    with torch.no_grad():   # the model as transformers loads it, greedy: its penalty changes the answer
        raw = model.generate(input_ids=ids[:, :n_prompt], do_sample=False, max_new_tokens=24)[0, n_prompt:]
    assert raw.tolist() != ids[0, n_prompt:].tolist()


def lora_adapter(model_dir, out):
    import peft
    import torch
    import transformers

    torch.manual_seed(1)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft.get_peft_model(model, config).save_pretrained(out)
    return out


def test_adapters_are_merged_in_training_order(tmp_path, tiny_model_dir):
    sft = lora_adapter(tiny_model_dir, tmp_path / "sft")
    grpo = lora_adapter(tiny_model_dir, tmp_path / "grpo/adapter")  # 04_grpo.py's layout: <out-dir>/adapter
    command = ["--model", str(tiny_model_dir), "--adapter", str(sft), str(grpo), "--tasks", "ifeval",
               "--limit", "2", "--max-new-tokens", "3"]
    assert eval05.default_run_dir(eval05.parse_args(command)).name == f"{tiny_model_dir.name}+sft+grpo"
    eval05.main(command + ["--run-dir", str(tmp_path / "run")])
    config = json.loads((tmp_path / "run/config.json").read_text())
    assert config["adapter"] == [str(sft), str(grpo)]
    assert len(rows_of(tmp_path / "run/ifeval_responses.jsonl")) == 2
    with pytest.raises(SystemExit):  # vLLM takes one LoRA: refused before anything loads
        eval05.parse_args(command + ["--backend", "vllm"])


@pytest.mark.parametrize("flags, message", [
    (["--limit", "0"], "--limit 0: must be at least 1"), (["--max-new-tokens", "-1"], "--max-new-tokens -1: must be"),
    (["--batch-size", "0"], "--batch-size 0: must be"), (["--top-p", "0"], "--top-p 0.0: must be above 0"),
    (["--top-p", "1.5"], "--top-p 1.5: must be at most 1"), (["--temperature", "nan"], "--temperature nan: must be")])
def test_a_number_out_of_range_is_refused_before_anything_loads(flags, message, capsys):
    with pytest.raises(SystemExit):
        eval05.parse_args(flags)
    assert message in capsys.readouterr().err


def test_a_rerun_with_other_generation_settings_is_refused(tmp_path, tiny_model_dir):
    run = ["--model", str(tiny_model_dir), "--limit", "1", "--max-new-tokens", "3", "--run-dir", str(tmp_path / "run"),
           "--tasks", "ifeval"]
    eval05.main(run)
    eval05.main(run + ["--limit", "2"])  # more prompts, same settings: resumes
    assert len(rows_of(tmp_path / "run/ifeval_responses.jsonl")) == 2
    with pytest.raises(SystemExit, match=r"other settings \(max_new_tokens: 3 -> 4\)"):
        eval05.main(run + ["--max-new-tokens", "4"])


def test_vllm_backend_without_vllm_names_the_install_command(tmp_path):
    if importlib.util.find_spec("vllm"):
        pytest.skip("vllm is installed here")
    with pytest.raises(SystemExit, match=r"-m pip install vllm") as e:
        eval05.main(["--backend", "vllm", "--run-dir", str(tmp_path / "run")])
    assert "--backend vllm needs the vllm package" in str(e.value)
    assert not (tmp_path / "run").exists()


# ---- the server backend and the judge, against scripted servers ----
def test_server_backend_sends_whole_chats_greedy_and_without_a_seed(tmp_path, verif_eval):
    server = ScriptedServer(lambda prompt, n: (200, chat_reply("Hello there.")))
    try:
        eval05.main(["--server-url", server.url, "--server-model", "policy", "--limit", "2", "--max-new-tokens", "7",
                     "--verif-eval", str(verif_eval), "--run-dir", str(tmp_path / "run")])
    finally:
        server.close()
    assert len(server.bodies) == 4
    for body in server.bodies:
        assert (body["model"], body["temperature"], body["max_tokens"]) == ("policy", 0.0, 7)
        assert "seed" not in body
        # every sampling field explicit and neutral, whatever the server's --generation-config
        assert (body["top_p"], body["top_k"], body["min_p"], body["repetition_penalty"], body["presence_penalty"],
                body["frequency_penalty"]) == (1.0, 0, 0.0, 1.0, 0.0, 0.0)
    assert [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}] in \
        [b["messages"] for b in server.bodies]
    assert [r["response"] for r in rows_of(tmp_path / "run/verif_responses.jsonl")] == ["Hello there."] * 2


def test_verif_scores_hard_and_soft_pass_rates_and_the_reward(tmp_path, verif_eval):
    # the policy answers with a comma to 'Say hi.'; the judge passes every response that names a colour
    policy = ScriptedServer(lambda prompt, n: (200, chat_reply("Hi, friend." if prompt == "Say hi." else "Blue.")))
    judge = ScriptedServer(lambda prompt, n: (200, chat_reply("[[1]]" if "Blue" in quoted_response(prompt)
                                                              else "[[0]]")))
    try:
        eval05.main(["--server-url", policy.url, "--server-model", "policy", "--tasks", "verif", "--verif-eval",
                     str(verif_eval), "--judge-url", judge.url, "--run-dir", str(tmp_path / "run")])
    finally:
        policy.close(), judge.close()
    m = json.loads((tmp_path / "run/verif_metrics.json").read_text())
    assert (m["hard_pass_rate"], m["soft_pass_rate"], m["soft_failed"]) == (0.0, 0.5, 0)
    assert [(e["id"], e["reward"], e["soft"]) for e in m["per_example"]] == [("p", 0.0, 0), ("m", 1.0, 1)]
    assert m["reward_mean"] == 0.5 and m["mode"] == "product"
    assert judge.requests == 2  # 'p' has hard score 0: the reward skips it, the soft pass rate asks it once


# ---- the side-by-side report ----
def ifeval_run(run_dir, responses):
    rows = [{"key": k, "prompt": "No commas.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
            for k in range(len(responses))]
    eval05.write_json(run_dir / "ifeval_metrics.json",
                     eval05.score_prompts(eval05.BENCHMARKS["ifeval"], rows, responses, run_dir))
    eval05.write_json(run_dir / "config.json", {"model": run_dir.name, "backend": "hf"})


def test_the_compare_report_puts_two_runs_side_by_side_with_deltas(tmp_path):
    ifeval_run(tmp_path / "base", ["a, b", "c, d"])
    ifeval_run(tmp_path / "grpo", ["a b", "c, d"])
    eval05.write_json(tmp_path / "grpo/verif_metrics.json", {"n": 4, "mode": "product", "hard_pass_rate": 0.75,
                                                             "reward_mean": 0.6})
    eval05.main(["--compare", str(tmp_path / "base"), str(tmp_path / "grpo"), "--out", str(tmp_path / "report")])
    table = (tmp_path / "report/compare.md").read_text()
    assert "| metric | base | grpo |" in table
    assert "| IFEval prompt-level strict | 0.00 | 50.00 (+50.00) |" in table
    assert "| IFEval punctuation (instruction strict) | 0.00 | 50.00 (+50.00) |" in table
    assert "| VerIF hard pass rate | – | 75.00 |" in table
    assert (tmp_path / "report/compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_compare_report_puts_ifbench_beside_ifeval_with_intervals(tmp_path):
    rows = [{"key": str(k), "prompt": "p", "instruction_id_list": ["format:no_whitespace"], "kwargs": [{}]}
            for k in range(20)]
    for name, answers in (("base", ["a b"] * 20), ("grpo", ["ab"] * 10 + ["a b"] * 10)):
        ifeval_run(tmp_path / name, ["a, b"] * 20)
        eval05.write_json(tmp_path / name / "ifbench_metrics.json",
                          eval05.score_prompts(eval05.BENCHMARKS["ifbench"], rows, answers, tmp_path / name))
    eval05.main(["--compare", str(tmp_path / "base"), str(tmp_path / "grpo"), "--out", str(tmp_path / "r"),
                 "--bootstrap", "300"])
    table = (tmp_path / "r/compare.md").read_text()
    assert "| IFBench prompt-level loose | 0.00 | 50.00 (+50.00) |" in table
    assert "| IFBench format (instruction strict) | 0.00 | 50.00 (+50.00) |" in table
    ifbench = table.split("## grpo vs base: IFBench on the 20 prompts both scored")[1]
    assert "| prompt-level loose | 0.00 | 50.00 | +50.00 | [+" in ifbench and "| format | 20 | 0.0 | 50.0 |" in ifbench
    assert "| IFEval prompt-level loose | 0.00 | 0.00 (+0.00) |" in table


def test_the_compare_report_warns_when_runs_scored_different_prompt_sets(tmp_path):
    ifeval_run(tmp_path / "a", ["x"])
    ifeval_run(tmp_path / "b", ["x", "y"])
    eval05.main(["--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "report")])
    assert "different numbers of IFEval prompts ([1, 2])" in (tmp_path / "report/compare.md").read_text()


def test_compare_refuses_a_folder_without_metrics(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="empty: no ifeval_metrics.json, ifbench_metrics.json or verif_metrics.json"):
        eval05.main(["--compare", str(tmp_path / "empty"), "--out", str(tmp_path / "report")])


def test_the_compare_report_gives_paired_differences_with_bootstrap_intervals(tmp_path):
    ifeval_run(tmp_path / "base", ["a, b"] * 10 + ["a b"] * 10)      # 10 of 20 prompts followed
    ifeval_run(tmp_path / "grpo", ["a b"] * 20)                        # all 20
    ifeval_run(tmp_path / "same", ["a, b"] * 10 + ["a b"] * 10)
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"id": "t", "prompt": "Say hi.", "soft": [],
                                 "hard": [{"id": "punctuation:no_comma", "kwargs": {}}]}) + "\n")
    eval05.main(["--compare", *(str(tmp_path / r) for r in ("base", "grpo", "same")), "--out", str(tmp_path / "r"),
                 "--train-data", str(train), "--bootstrap", "500"])
    table = (tmp_path / "r/compare.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| prompt-level loose | 50.00 | 100.00 |"))
    low, high = (float(x) for x in row.split("[")[1].rstrip(" |]").split(", "))
    assert row.split(" | ")[3] == "+50.00" and 20 <= low < 50 < high <= 80    # ~ +50 +- 2 x 11 points
    assert "| prompt-level strict | 50.00 | 50.00 | +0.00 | [+0.00, +0.00] |" in table.split("## same vs base")[1]
    assert "| punctuation:no_comma* | 20 | 50.0 | 100.0 | +50.0 |" in table
    category = next(line for line in table.splitlines()
                    if line.startswith("| punctuation | 20 | 50.0 | 100.0 | +50.0 |"))
    assert "worse" not in category
    assert "0 of the 541 IFEval prompts appear in it word for word, 0 share a run of 13 words with it" in table
    assert "0 of the 300 IFBench prompts appear in it word for word, 0 share a run of 13 words with it" in table


def test_a_category_whose_whole_interval_is_below_zero_is_marked_worse():
    # 40 prompts, each with a punctuation and a length instruction: length falls 30 -> 0 of 40, punctuation rises
    rows = [{"instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"]} for _ in range(40)]
    base = [dict(r, loose=[False, i < 30]) for i, r in enumerate(rows)]
    other = [dict(r, loose=[i < 20, False]) for i, r in enumerate(rows)]
    stats = eval05.category_bootstrap(base, other, draws=500)
    n, a, b, d, low, high = stats["length_constraints"]
    assert (n, a, b, d) == (40, 75.0, 0.0, -75.0) and -90 < low < -75 < high < -60
    assert stats["punctuation"][1:4] == (0.0, 50.0, 50.0) and stats["punctuation"][4] > 0
    lines = eval05.difference_markdown([{"ifeval": {"per_prompt": [dict(r, key=i, strict=r["loose"])
                                                                    for i, r in enumerate(x)]}} for x in (base, other)],
                                       ["base", "grpo"], 500, None)
    assert any(line.startswith("| length_constraints | 40 | 75.0 | 0.0 | -75.0 |") and line.endswith("worse |")
               for line in lines)
    assert not any(line.startswith("| punctuation | 40") and "worse" in line for line in lines)


def test_ifeval_prompts_in_the_training_data_are_found(tmp_path):
    ifeval = eval05.read_prompts(eval05.IFEVAL_INPUT)
    rows = [{"id": "copied", "prompt": "  " + ifeval[3]["prompt"].upper() + " ", "soft": [], "hard": []},
            {"id": "quoted", "prompt": "Answer this: " + " ".join(ifeval[7]["prompt"].split()[:14]), "soft": [],
             "hard": []}]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    overlap = eval05.training_overlap(train)
    assert overlap["ifeval"]["same_text"] == [ifeval[3]["key"]]
    assert set(overlap["ifeval"]["shared_13_gram"]) >= {ifeval[3]["key"], ifeval[7]["key"]}
    assert overlap["ifbench"] == {"prompts": 300, "same_text": [], "shared_13_gram": []}
