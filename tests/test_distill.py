"""03_distill_verifier.py: the code teacher's answers, the pairs it judges, the agreement metrics, and the four steps
end to end on tiny data with a tiny random student (the real vLLM server serving a student: test_distill_server.py)."""
import importlib
import json

import pytest
from scripted_server import ScriptedServer, chat_reply

import verify_lib

distill = importlib.import_module("03_distill_verifier")

LOWER = {"id": "change_case:english_lowercase", "kwargs": {},
         "text": "Your entire response should be in English, and in all lowercase letters."}
NO_COMMA = {"id": "punctuation:no_comma", "kwargs": {}, "text": "Do not use any commas in your response."}


def example(id_, hard, prompt="Describe the sea."):
    return verify_lib.parse_example({"id": id_, "prompt": prompt, "hard": hard, "soft": ["Sound calm."]})


# ---- step 1: label ----
def test_the_code_teacher_writes_a_rationale_then_the_verdict_in_the_judge_prompts_shape():
    ex = example("sea-1", [LOWER, NO_COMMA])
    labels = distill.code_teacher([(ex, "the sea is calm and blue."), (ex, "the sea is calm, and blue.")])
    good, bad = labels
    assert good["prompt"] == verify_lib.judge_prompt(ex.instruction, "the sea is calm and blue.",
                                                     [LOWER["text"], NO_COMMA["text"]])
    assert good["answer"] == ("<think>\nConstraint 1: satisfied.\nConstraint 2: satisfied.\n</think>\n"
                              "[[1]] Every constraint is satisfied.")
    assert bad["answer"].endswith("</think>\n[[0]] Constraint 2 is not satisfied.")
    assert "Constraint 2: not satisfied." in bad["answer"]
    assert [verify_lib.parse_verdict(r["answer"]).value for r in labels] == [r["verdict"] for r in labels] == [1, 0]


def test_the_code_teacher_asks_only_about_hard_constraints_with_a_text():
    untexted = {"id": "punctuation:no_comma", "kwargs": {}}
    labels = distill.code_teacher([(example("a-1", [LOWER, untexted]), "Has, a comma"),
                                   (example("b-1", [untexted]), "whatever")])
    assert len(labels) == 1 and labels[0]["id"] == "a-1"
    assert "\n1. Your entire response" in labels[0]["prompt"] and "\n2. " not in labels[0]["prompt"]
    assert labels[0]["verdict"] == 0  # "Has" is capitalised; the comma is not asked about


def test_each_reference_is_judged_against_its_own_example_and_a_sibling_of_the_same_instruction():
    a1, a2, b1 = example("a-1", [LOWER]), example("a-2", [NO_COMMA]), example("b-1", [NO_COMMA])
    refs = {"a-1": "calm sea", "a-2": "Calm sea", "b-1": "a lake"}
    pairs = distill.judge_pairs([a1, a2, b1], refs, None)
    assert [(ex.id, r) for ex, r in pairs] == [("a-1", "calm sea"), ("a-1", "Calm sea"), ("a-2", "Calm sea"),
                                               ("a-2", "calm sea"), ("b-1", "a lake")]
    assert [(ex.id, r) for ex, r in distill.judge_pairs([a1, b1], refs, {"b-1": ["x", "y"]})] == [("b-1", "x"),
                                                                                                 ("b-1", "y")]


def test_a_bad_responses_row_names_file_and_line(tmp_path):
    bad = tmp_path / "responses.jsonl"
    bad.write_text('{"id": "a", "response": "b"}\n{"id": "a"}\n')
    with pytest.raises(ValueError, match=f"{bad}:2: a reference row is"):
        distill.read_responses([bad])


# ---- step 3: evaluate ----
def test_agreement_counts_unparseable_answers_as_disagreements():
    m = distill.agreement([1, 1, 0, None, 0, 1], [1, 0, 0, 1, 1, 1])
    assert m["n"] == 6 and m["accuracy"] == pytest.approx(3 / 6)
    assert m["precision_pass"] == pytest.approx(2 / 3)   # said [[1]] 3 times, right twice
    assert m["recall_pass"] == pytest.approx(2 / 4)      # the teacher said [[1]] 4 times, the student found 2
    assert m["unparseable_share"] == pytest.approx(1 / 6) and m["teacher_pass_share"] == pytest.approx(4 / 6)


# ---- step 6: the judge bench's constraint part ----
def bench_cases(n):
    return distill.eval05.draw(distill.eval05.constraint_cases(distill.eval05.BENCH_ANSWERS,
                                                               distill.eval05.IFEVAL_INPUT), n)


def test_the_code_teacher_is_the_rule_on_the_bench_s_constraint_part():
    part = distill.eval05.bench_part("constraints", bench_cases(40), distill.teacher_judge(distill.parse_args([])))
    assert part["n"] == 40 and part["judge"]["accuracy"]["value"] == 1.0 and part["no_verdict"] == 0


def test_a_served_teacher_is_benched_through_the_judge_api():
    server = ScriptedServer(lambda prompt, n: (200, chat_reply("[[1]]")))
    try:
        args = distill.parse_args(["--teacher-url", server.url, "--teacher-model", "judge"])
        part = distill.eval05.bench_part("constraints", bench_cases(20), distill.teacher_judge(args))
    finally:
        server.close()
    assert server.requests == 20 and part["judge"]["tpr"]["value"] == 1.0 and part["judge"]["tnr"]["value"] == 0.0


# ---- the four steps ----
def write_split(path, rows):
    path.write_text("".join(json.dumps({"id": r[0], "prompt": r[1], "hard": r[2], "soft": []}) + "\n" for r in rows))
    path.with_name(path.stem + "_references.jsonl").write_text(
        "".join(json.dumps({"id": r[0], "response": r[3]}) + "\n" for r in rows))


@pytest.fixture
def tiny_splits(tmp_path):
    train, held_out = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    write_split(train, [("sea-1", "Describe the sea.", [LOWER], "the sea is calm, and wide."),
                        ("sea-2", "Describe the sea.", [NO_COMMA], "The sea is calm and wide."),
                        ("sky-1", "Describe the sky.", [LOWER], "the sky is blue."),
                        ("sky-2", "Describe the sky.", [NO_COMMA, LOWER], "the sky is blue and high.")])
    write_split(held_out, [("sun-1", "Describe the sun.", [LOWER], "the sun is hot, and bright."),
                           ("sun-2", "Describe the sun.", [NO_COMMA], "The sun is hot and bright.")])
    return train, held_out


def test_label_train_evaluate_export_end_to_end(tiny_model_dir, tiny_splits, tmp_path):
    train, held_out = tiny_splits
    out = tmp_path / "distill"
    report = distill.main(["--data", str(train), "--eval-data", str(held_out), "--model", str(tiny_model_dir),
                           "--out-dir", str(out), "--epochs", "2", "--max-steps", "0", "--batch-size", "2", "--max-len", "512",
                           "--max-new-tokens", "6", "--eval-batch-size", "4", "--bench-constraints", "5"])
    labels = [json.loads(line) for line in (out / "labels_train.jsonl").read_text().splitlines()]
    assert len(labels) == 8  # 4 references on their own examples + 4 on a sibling's
    assert {r["verdict"] for r in labels} == {0, 1}
    assert [m["role"] for m in labels[0]["messages"]] == ["user", "assistant"]
    for split in ("before", "after"):
        assert report[split]["n"] == 4 and 0 <= report[split]["accuracy"] <= 1
        assert report[split]["student_tokens_per_verdict"] <= 6
        assert len((out / f"predictions_{split}.jsonl").read_text().splitlines()) == 4
    assert report["after"]["teacher_pass_share"] == pytest.approx(2 / 4)
    assert report["bench"]["teacher"]["judge"]["accuracy"]["value"] == 1.0   # the code teacher is the rule
    assert report["bench"]["student"]["n"] == 5 and report["bench"]["student"]["verdicts"] == 5
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    model, _ = verify_lib.load_model(out / "student")  # the export is a plain HF folder
    assert not hasattr(model, "peft_config")
    assert not (out / "sft" / "merged").exists()


@pytest.mark.parametrize("flags", [["--limit", "-3"], ["--bench-constraints", "-1"], ["--epochs", "0"],
                                   ["--max-new-tokens", "0"]])
def test_a_count_out_of_range_is_refused_before_any_work(flags, capsys):
    with pytest.raises(SystemExit):
        distill.parse_args(flags)
    assert f"{flags[0]} {flags[1]}: must be at least" in capsys.readouterr().err


def test_missing_data_says_how_to_make_it(tmp_path):
    with pytest.raises(SystemExit, match="01_build_data.py"):
        distill.main(["--data", str(tmp_path / "none.jsonl"), "--out-dir", str(tmp_path / "out")])
