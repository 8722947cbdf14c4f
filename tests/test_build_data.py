"""01_build_data.py as specifications: the default run writes canonical train/eval files split by instruction; every
composed constraint is worded as its kwargs say and its reference follows it; imports of each format; bad input names
file and line and writes nothing; back-translation against a scripted server keeps its accounts and resumes."""
import collections
import contextlib
import hashlib
import importlib
import importlib.util
import io
import json
import re
import subprocess
import sys

import pytest
from conftest import ROOT, read_jsonl
from scripted_server import ScriptedServer, chat_reply

import verify_lib

build = importlib.import_module("01_build_data")


def run_main(*args):
    """main() in this process; returns what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        build.main([str(a) for a in args])
    return out.getvalue()


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def first_paragraph(example):
    return example.instruction.split("\n\n")[0]


def composed_run(out_dir, *flags):
    printed = run_main("--out-dir", out_dir, *flags)
    train, eval_ = (verify_lib.load_examples(out_dir / f"verif_{s}.jsonl") for s in ("train", "eval"))
    refs = {r["id"]: r["response"] for s in ("train", "eval")
            for r in read_jsonl(out_dir / f"verif_{s}_references.jsonl")}
    return out_dir, printed, train, eval_, refs


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default run (data/seeds.jsonl, seed 0, the mixed composer), written to a temporary folder."""
    return composed_run(tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The first composer's run (--composer ifeval), which docs/heldout/train was trained on."""
    return composed_run(tmp_path_factory.mktemp("first"), "--composer", "ifeval")


# ---- the default run ----
def test_default_run_writes_canonical_train_and_eval_files(default_run):
    _, _, train, eval_, refs = default_run
    assert len(train) > 600 and len(eval_) > 50
    assert {e.source for e in train + eval_} == {"composer"}
    assert set(refs) == {e.id for e in train + eval_}
    seeds = read_jsonl(ROOT / "data/seeds.jsonl")
    assert len(seeds) >= 250 and len({s["instruction"] for s in seeds}) == len(seeds)


def test_no_source_instruction_is_in_both_train_and_eval(default_run):
    _, _, train, eval_, _ = default_run
    assert not {first_paragraph(e) for e in train} & {first_paragraph(e) for e in eval_}


@pytest.mark.parametrize("run", ["default_run", "first_run"])
def test_every_reference_response_scores_1_on_the_hard_constraints_of_its_prompt(run, request):
    _, _, train, eval_, refs = request.getfixturevalue(run)
    examples = train + eval_
    results = verify_lib.verif_reward(examples, [refs[e.id] for e in examples], None, "rule_only")
    assert all(r.score == 1.0 for r in results), [e.id for e, r in zip(examples, results) if r.score != 1.0][:5]


@pytest.mark.parametrize("run", ["default_run", "first_run"])
def test_composed_prompts_have_1_to_4_hard_constraints_and_the_seeds_soft_ones(run, request):
    _, _, train, eval_, _ = request.getfixturevalue(run)
    seeds = {s["instruction"]: s for s in read_jsonl(ROOT / "data/seeds.jsonl")}
    for e in train + eval_:
        assert 1 <= len(e.hard) <= 4
        assert set(e.soft) <= set(seeds[first_paragraph(e)]["soft"].values())
        for text in [c["text"] for c in e.hard] + e.soft:
            assert text in e.prompt


def test_the_report_shows_the_statistics_beside_verinstructs(default_run):
    _, printed, train, eval_, _ = default_run
    n_sources = len({first_paragraph(e) for e in train + eval_})   # 255 of 289 seeds; the rest hold no junk-proof kind
    assert f"{len(train) + len(eval_)} rows from {n_sources} source instructions" in printed and n_sources > 250
    for line in ("rows", "constraints per row", "hard / soft share", "prompt words", "constraints by type"):
        assert line in printed
    assert "22,000" in printed and "6.2" in printed and "22 % / 78 %" in printed
    assert re.search(r"keywords:existence\s+\d+", printed) and re.search(r"soft:tone\s+\d+", printed)


def test_the_same_seed_gives_the_same_files_and_another_seed_other_files(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        run_main("--limit", 12, "--seed", seed, "--out-dir", tmp_path / name)
    a, b, c = ((tmp_path / n / "verif_train.jsonl").read_bytes() for n in "abc")
    assert a == b and a != c


def test_the_command_line_runs_and_exits_zero(tmp_path):
    out = subprocess.run([sys.executable, "01_build_data.py", "--limit", "4", "--out-dir", tmp_path], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "verif data: 12 rows from 4 source instructions" in out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["verif_eval.jsonl", "verif_eval_references.jsonl",
                                                          "verif_train.jsonl", "verif_train_references.jsonl"]


# ---- phrasings and kwargs agree ----
REL = {"less than": r"(fewer|less) than", "at least": r"(at least|a minimum of)"}
ORDINAL = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]


def must_show(instruction_id, kw):
    """Regexes the words of a constraint must match, written from the IFEval semantics of each kwarg."""
    q = lambda s: '"' + re.escape(s) + '"'  # noqa: E731  a string kwarg appears in double quotes
    rel = lambda relation, n, unit: rf"{REL[relation]} {n} {unit}"  # noqa: E731  "fewer than 50 words"
    return {
        "keywords:existence": lambda: [q(w) for w in kw["keywords"]],
        "keywords:frequency": lambda: [q(kw["keyword"]), rel(kw["relation"], kw["frequency"], "times?")],
        "keywords:forbidden_words": lambda: [r"(do not|avoid|never)"] + [q(w) for w in kw["forbidden_words"]],
        "keywords:letter_frequency": lambda: ["letter " + q(kw["letter"]),
                                              rel(kw["let_relation"], kw["let_frequency"], "times?")],
        "language:response_language": lambda: [{"en": "English", "de": "German"}[kw["language"]]],
        "length_constraints:number_sentences": lambda: [rel(kw["relation"], kw["num_sentences"], "sentences?")],
        "length_constraints:number_paragraphs": lambda: [rf"\b{kw['num_paragraphs']} paragraphs?", r"\*\*\*"],
        "length_constraints:number_words": lambda: [rel(kw["relation"], kw["num_words"], "words?")],
        "length_constraints:nth_paragraph_first_word": lambda: [
            rf"\b{kw['num_paragraphs']} paragraphs", rf"(paragraph {kw['nth_paragraph']}\b|"
            rf"{ORDINAL[kw['nth_paragraph'] - 1]} paragraph)", "word " + q(kw["first_word"]), "(blank|empty) line"],
        "detectable_content:number_placeholders": lambda: [rf"at least {kw['num_placeholders']} placeholders?",
                                                           "square brackets"],
        "detectable_content:postscript": lambda: ["postscript", q(kw["postscript_marker"])],
        "detectable_format:number_bullet_lists": lambda: [rf"exactly {kw['num_bullets']} (markdown )?bullet points?"],
        "detectable_format:constrained_response": lambda: ["My answer is yes", "My answer is no", "My answer is maybe"],
        "detectable_format:number_highlighted_sections": lambda: [rf"at least {kw['num_highlights']} ",
                                                                  "(highlight|markdown)"],
        "detectable_format:multiple_sections": lambda: [rf"\b{kw['num_sections']} (sections?|parts?)",
                                                        q(f"{kw['section_spliter']} 1")],
        "detectable_format:json_format": lambda: ["JSON"],
        "detectable_format:title": lambda: ["title", "<<.+>>"],
        "combination:two_responses": lambda: ["two different responses", r"\*{6}"],
        "combination:repeat_prompt": lambda: [r"repeat|copying"],
        "startend:end_checker": lambda: [q(kw["end_phrase"])],
        "startend:quotation": lambda: ["double (quotation marks|quotes)"],
        "change_case:capital_word_frequency": lambda: [
            rel(kw["capital_relation"], kw["capital_frequency"], "(words?|times?)"), "(capital letters|ALL CAPS)"],
        "change_case:english_capital": lambda: ["English", "(capital letters|uppercase)"],
        "change_case:english_lowercase": lambda: ["English", "lowercase"],
        "punctuation:no_comma": lambda: ["commas"],
    }[instruction_id]()


def must_not_show(kw):
    """The opposite relation never appears beside a count."""
    relation = kw.get("relation") or kw.get("let_relation") or kw.get("capital_relation")
    return [REL["at least" if relation == "less than" else "less than"]] if relation else []


def assert_agree(instruction_id, kw, text):
    for pattern in must_show(instruction_id, kw):
        assert re.search(pattern, text, flags=re.I), (instruction_id, kw, text, pattern)
    for pattern in must_not_show(kw):
        assert not re.search(pattern, text, flags=re.I), (instruction_id, kw, text, pattern)


class Pick:
    """An rng stand-in whose choice() takes the k-th option: walks every phrasing and every relation word."""
    def __init__(self, k):
        self.k = k

    def choice(self, options):
        return options[self.k % len(options)]


SAMPLE_KWARGS = {
    "keywords:existence": [{"keywords": ["garden"]}, {"keywords": ["tide", "moon", "ocean"]}],
    "keywords:frequency": [{"keyword": "water", "frequency": 3, "relation": "at least"},
                           {"keyword": "tea", "frequency": 2, "relation": "less than"}],
    "keywords:forbidden_words": [{"forbidden_words": ["very"]}, {"forbidden_words": ["just", "really"]}],
    "keywords:letter_frequency": [{"letter": "k", "let_frequency": 4, "let_relation": "less than"},
                                  {"letter": "z", "let_frequency": 1, "let_relation": "at least"}],
    "language:response_language": [{"language": "en"}, {"language": "de"}],
    "length_constraints:number_sentences": [{"num_sentences": 5, "relation": "less than"},
                                            {"num_sentences": 3, "relation": "at least"}],
    "length_constraints:number_paragraphs": [{"num_paragraphs": 3}],
    "length_constraints:number_words": [{"num_words": 120, "relation": "less than"},
                                        {"num_words": 40, "relation": "at least"}],
    "length_constraints:nth_paragraph_first_word": [{"num_paragraphs": 4, "nth_paragraph": 2, "first_word": "then"}],
    "detectable_content:number_placeholders": [{"num_placeholders": 2}],
    "detectable_content:postscript": [{"postscript_marker": "P.S."}, {"postscript_marker": "P.P.S"}],
    "detectable_format:number_bullet_lists": [{"num_bullets": 5}],
    "detectable_format:constrained_response": [{}],
    "detectable_format:number_highlighted_sections": [{"num_highlights": 2}],
    "detectable_format:multiple_sections": [{"section_spliter": "SECTION", "num_sections": 3}],
    "detectable_format:json_format": [{}],
    "detectable_format:title": [{}],
    "combination:two_responses": [{}],
    "combination:repeat_prompt": [{"prompt_to_repeat": "Write a haiku about rain."}],
    "startend:end_checker": [{"end_phrase": "Is there anything else I can help with?"}],
    "startend:quotation": [{}],
    "change_case:capital_word_frequency": [{"capital_frequency": 3, "capital_relation": "less than"},
                                           {"capital_frequency": 2, "capital_relation": "at least"}],
    "change_case:english_capital": [{}],
    "change_case:english_lowercase": [{}],
    "punctuation:no_comma": [{}],
}


@pytest.mark.parametrize("instruction_id", sorted(verify_lib.IFEVAL_CHECKERS))
def test_every_phrasing_of_every_instruction_shows_its_kwargs(instruction_id):
    for kw in SAMPLE_KWARGS[instruction_id]:
        for k in range(6):  # 6 covers 3 phrasings x 2 relation words
            assert_agree(instruction_id, kw, build.phrase(instruction_id, kw, Pick(k)))


def test_composed_instructions_have_several_phrasings():
    assert all(len(build.PHRASINGS[i]) >= 3 for i in build.MAKERS)
    assert all(len(build.OWN_PHRASINGS[i]) >= 3 for i in build.MIXED_MAKERS)


def test_every_composed_constraint_is_worded_as_its_kwargs_say(first_run):
    _, _, train, eval_, _ = first_run
    for e in train + eval_:
        for c in e.hard:
            assert_agree(c["id"], c["kwargs"], c["text"])
            if c["id"] == "combination:repeat_prompt":  # "the request" is the first paragraph, or quoted
                assert c["kwargs"]["prompt_to_repeat"] == first_paragraph(e)


@pytest.mark.parametrize("run", ["default_run", "first_run"])
def test_contradictory_instructions_are_never_composed_together(run, request):
    _, _, train, eval_, _ = request.getfixturevalue(run)
    known = [("change_case:english_lowercase", "change_case:capital_word_frequency"),
             ("change_case:english_lowercase", "change_case:english_capital"),
             ("change_case:english_capital", "change_case:capital_word_frequency"),
             ("length_constraints:number_paragraphs", "length_constraints:nth_paragraph_first_word"),
             ("detectable_format:json_format", "detectable_format:title"),
             ("startend:quotation", "combination:repeat_prompt")]
    assert all(build.conflict(a, b) for a, b in known)
    for e in train + eval_:
        ids = [c["id"] for c in e.hard]
        assert len(set(ids)) == len(ids)
        assert not [(a, b) for a in ids for b in ids if build.conflict(a, b)], e.id


def test_composed_data_uses_most_of_the_registry(first_run, default_run):
    _, printed, _, _, _ = first_run
    used = {i for i in verify_lib.IFEVAL_CHECKERS if re.search(rf"{i}\s+\d+", printed)}
    assert used == set(build.MAKERS)
    assert len(used) >= 22
    _, printed, _, _, _ = default_run
    used = {i for i in verify_lib.RULE_CHECKERS if re.search(rf"{i}\s+\d+", printed)}
    assert used == set(build.MIXED_MAKERS) and len(used) == 39


# ---- the mixed composer ----
def shows_kwargs(instruction_id, kw, text):
    """What the kit's own wordings must show: numbers as digits (or an ordinal), each string kwarg in double quotes
    (a tag as <tag>, a language by name), a relation as its words."""
    wanted = []
    for key, value in kw.items():
        if key in ("relation", "let_relation", "capital_relation"):
            wanted.append(REL[value])
        elif key == "nth_paragraph":
            wanted.append(rf"(paragraph {value}\b|{ORDINAL[value - 1]} one)")
        elif key == "section_spliter":
            wanted.append(re.escape(f'"{value} 1"'))
        elif key == "language":
            wanted.append({"en": "English", "de": "German"}[value])
        elif key == "tag":
            wanted += [re.escape(f"<{value}>"), re.escape(f"</{value}>")]
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            wanted.append(rf"\b{value}\b")
        elif isinstance(value, list):
            wanted += [re.escape(f'"{v}"') for v in value]
        else:
            wanted.append(re.escape(f'"{value}"'))
    for pattern in wanted + must_not_show(kw):
        found = re.search(pattern, text, flags=re.I)
        assert (found is not None) == (pattern in wanted), (instruction_id, kw, text, pattern)


KIT_SAMPLE_KWARGS = {
    "verif:first_word": [{"word": "today"}], "verif:last_word": [{"word": "tomorrow"}],
    "verif:no_repeated_bigram": [{}], "verif:distinct_sentence_openers": [{"min_sentences": 3}],
    "verif:max_sentence_words": [{"max_words": 15}], "verif:min_sentence_words": [{"min_words": 6}],
    "verif:numbered_list": [{"num_items": 4}], "verif:line_count": [{"num_lines": 3}],
    "verif:markdown_headings": [{"num_headings": 2}, {"num_headings": 1}], "verif:end_with_question": [{}],
    "verif:keyword_order": [{"first": "flour", "second": "oven"}], "verif:wrap_in_tag": [{"tag": "reply"}],
    "verif:tldr_line": [{"max_words": 12}],
    "verif:letter_count": [{"num_letters": 300, "relation": "at least"}, {"num_letters": 150, "relation": "less than"}],
    "verif:hyphenated_words": [{"num_words": 2}], "verif:comma_every_sentence": [{}],
}


@pytest.mark.parametrize("instruction_id", list(build.MIXED_MAKERS))
def test_every_own_wording_shows_its_kwargs(instruction_id):
    samples = {**SAMPLE_KWARGS, **KIT_SAMPLE_KWARGS}[instruction_id]
    for kw in samples:
        for k in range(6):
            shows_kwargs(instruction_id, kw, build.phrase(instruction_id, kw, Pick(k), build.OWN_PHRASINGS))


def test_every_mixed_constraint_is_worded_as_its_kwargs_say(default_run):
    _, _, train, eval_, _ = default_run
    for e in train + eval_:
        for c in e.hard:
            shows_kwargs(c["id"], c["kwargs"], c["text"])


def test_mixed_prompts_carry_several_kinds_one_of_them_junk_proof(default_run):
    _, _, train, eval_, _ = default_run
    examples = train + eval_
    assert all(any(c["id"] in verify_lib.JUNK_PROOF for c in e.hard) for e in examples)
    assert sum(len(e.hard) >= 2 for e in examples) >= 0.95 * len(examples)
    assert all(len({c["id"] for c in e.hard}) == len(e.hard) for e in examples)


def test_mixed_kinds_are_balanced(default_run):
    """No kind dominates (the first composer gave startend:quotation 71 of its 780 prompts): every kind is under 8 %
    of all hard constraints, and 30 or more of the 39 kinds are used at least 25 times."""
    _, _, train, eval_, _ = default_run
    kinds = collections.Counter(c["id"] for e in train + eval_ for c in e.hard)
    total = sum(kinds.values())
    assert max(kinds.values()) < 0.08 * total, kinds.most_common(3)
    assert sum(n >= 25 for n in kinds.values()) >= 30 and kinds["startend:quotation"] < 0.03 * total


def test_no_mixed_prompt_shares_a_run_of_13_words_with_ifeval_or_ifbench(default_run):
    out_dir, _, _, _, _ = default_run
    spec = importlib.util.spec_from_file_location("eval05", ROOT / "05_eval.py")
    eval05 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval05)
    for split in ("train", "eval"):
        overlap = eval05.training_overlap(out_dir / f"verif_{split}.jsonl")
        assert {b: (o["same_text"], o["shared_13_gram"]) for b, o in overlap.items() if b != "train_file"} == {
            "ifeval": ([], []), "ifbench": ([], [])}


def test_the_first_composer_still_writes_the_files_docs_heldout_train_was_trained_on(first_run):
    """--composer ifeval rebuilds, byte for byte, the data of the committed held-out run (docs/heldout/train)."""
    out_dir, _, _, _, _ = first_run
    digests = {name: hashlib.sha256((out_dir / name).read_bytes()).hexdigest()[:16]
               for name in ("verif_train.jsonl", "verif_eval.jsonl")}
    assert digests == {"verif_train.jsonl": "19d91e38a502dc89", "verif_eval.jsonl": "b3f3309cfa417a94"}


# ---- imports ----
CHECK_SHORT = "def check_following(instruction, response):\n    return len(response.split()) <= 20\n"
VERINSTRUCT_ROW = {"id": 7, "prompt": "Describe the sea in at most 20 words, in a calm tone.",
                   "checkers": ["[rule] Length: at most 20 words.", "[llm] Style: a calm tone.", "Hierarchical"],
                   "functions": [CHECK_SHORT, "", ""]}
IFEVAL_ROW = {"key": 11, "prompt": "Write a riddle. Use no commas and fewer than 30 words.",
              "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
              "kwargs": [{}, {"num_words": 30, "relation": "less than", "keyword": None, "letter": None}]}
CANONICAL_ROW = {"id": "c1", "prompt": "Say hi.", "hard": [{"id": "punctuation:no_comma", "kwargs": {}}],
                 "soft": ["Be warm."]}


def test_verinstruct_rows_import_with_their_code_and_soft_constraints(tmp_path):
    rows, seeds, skipped, untagged = build.read_inputs([write_jsonl(tmp_path / "v.jsonl", [VERINSTRUCT_ROW])], False)
    (row,) = rows
    assert not seeds and not skipped and untagged == 1
    assert row.example.id == "verinstruct-7" and row.example.source == "verinstruct"
    assert row.example.hard == [{"code": CHECK_SHORT, "text": "Length: at most 20 words."}]
    assert row.example.soft == ["Style: a calm tone."] and row.kinds == ["code", "soft"]


def test_ifeval_rows_import_with_nulls_dropped_and_their_words_as_text(tmp_path):
    rows, *_ = build.read_inputs([write_jsonl(tmp_path / "i.jsonl", [IFEVAL_ROW])], False)
    (row,) = rows
    assert row.example.id == "ifeval-11" and row.example.prompt == IFEVAL_ROW["prompt"]
    assert row.example.hard == [
        {"id": "punctuation:no_comma", "kwargs": {}, "text": "Do not use any commas in your response."},
        {"id": "length_constraints:number_words", "kwargs": {"num_words": 30, "relation": "less than"},
         "text": "Answer with fewer than 30 words."}]


def test_imported_ifeval_scores_gpt4_as_the_ifeval_scorer_does(ifeval_rows, gpt4_responses):
    rows, *_ = build.read_inputs([ROOT / "data/ifeval/input_data.jsonl"], False)
    assert len(rows) == 541
    results = verify_lib.verif_reward([r.example for r in rows], gpt4_responses, None, "rule_only")
    prompt_strict = sum(r.score == 1.0 for r in results) / len(results)
    assert prompt_strict == pytest.approx(verify_lib.score_ifeval(ifeval_rows, gpt4_responses)["prompt_strict"])


def test_seeds_import_as_instruction_response_pairs_and_as_chats(tmp_path):
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."},
                         {"role": "assistant", "content": "Blue is a calm color."}], "soft": ["Keep it short."]}
    path = write_jsonl(tmp_path / "s.jsonl", [{"instruction": "Name a fruit.", "response": "An apple a day."}, chat])
    rows, (plain, chatted), *_ = build.read_inputs([path], False)
    assert not rows
    assert (plain.id, plain.instruction, plain.response, plain.context) == ("s-1", "Name a fruit.",
                                                                            "An apple a day.", [])
    assert (chatted.instruction, chatted.response) == ("Name a color.", "Blue is a calm color.")
    assert chatted.context == [{"role": "system", "content": "Be brief."}] and chatted.soft == {"soft0":
                                                                                              "Keep it short."}


def test_a_chat_seed_composes_into_a_chat_example(tmp_path):
    chat = {"id": "chat", "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                       {"role": "user", "content": "Explain tides."},
                                       {"role": "assistant", "content": read_jsonl(ROOT / "data/seeds.jsonl")[0]
                                        ["response"]}]}
    run_main("--input", write_jsonl(tmp_path / "c.jsonl", [chat]), "--out-dir", tmp_path, "--eval-share", 0)
    examples = verify_lib.load_examples(tmp_path / "verif_train.jsonl")
    assert len(examples) == 3
    for e in examples:
        assert e.prompt is None and e.messages[0]["role"] == "system" and e.messages[-1]["role"] == "user"
        assert e.instruction.startswith("Explain tides.\n\n")


def test_formats_mix_in_one_run_and_canonical_rows_pass_through(tmp_path):
    v = write_jsonl(tmp_path / "v.jsonl", [VERINSTRUCT_ROW])
    mixed = write_jsonl(tmp_path / "m.jsonl", [IFEVAL_ROW, CANONICAL_ROW])
    printed = run_main("--input", v, mixed, ROOT / "data/seeds.jsonl", "--limit", 2, "--out-dir", tmp_path)
    examples = verify_lib.load_examples(tmp_path / "verif_train.jsonl") + \
        verify_lib.load_examples(tmp_path / "verif_eval.jsonl")
    assert {e.source for e in examples} == {"verinstruct", "ifeval", "", "composer"}
    assert next(e for e in examples if e.id == "c1").to_json() == {**CANONICAL_ROW, "source": ""}
    assert "9 rows from 5 source instructions" in printed
    assert "tagged neither [rule] nor [llm], not kept: 1" in printed


# ---- bad input ----
@pytest.mark.parametrize("bad, problem", [
    ('{"instruction": "x", "response": ', "malformed JSON"),
    ({"instruction": "Say hi."}, "a seed needs a non-empty string 'response'"),
    ({"instruction": "Say hi.", "response": "Hi.", "input": ""}, r"unknown field\(s\) \['input'\]"),
    ({"messages": [{"role": "assistant", "content": "Hi."}]}, "must be a list of|must end with a user turn"),
    ({"question": "Say hi."}, "cannot tell the format"),
    ({**IFEVAL_ROW, "kwargs": [{}, {"num_words": "thirty", "relation": "less than"}]}, r"hard\[1\].*num_words"),
    ({**VERINSTRUCT_ROW, "functions": []}, "same length"),
    ({"id": "s-1", "instruction": "Say hi.", "response": "Hi."}, "duplicate id 's-1'"),
    ([1, 2], "must be a JSON object"),
])
def test_a_bad_row_stops_the_run_naming_file_and_line_and_nothing_is_written(tmp_path, bad, problem):
    path = write_jsonl(tmp_path / "s.jsonl", [{"instruction": "Name a fruit.", "response": "An apple."}, bad])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "verif_train.jsonl").write_text("earlier output\n")
    with pytest.raises(SystemExit) as stop:
        run_main("--input", path, "--out-dir", out_dir)
    assert re.match(rf"01_build_data.py: {re.escape(str(path))}:2: .*({problem})", str(stop.value)), stop.value
    assert sorted(p.name for p in out_dir.iterdir()) == ["verif_train.jsonl"]
    assert (out_dir / "verif_train.jsonl").read_text() == "earlier output\n"


def test_a_missing_input_file_is_named():
    with pytest.raises(SystemExit, match="01_build_data.py: /nonexistent.jsonl: No such file"):
        run_main("--input", "/nonexistent.jsonl")


def test_skip_bad_skips_and_counts_bad_rows(tmp_path):
    good = read_jsonl(ROOT / "data/seeds.jsonl")[:2]
    path = write_jsonl(tmp_path / "s.jsonl", [good[0], "{not json", {"instruction": "x"}, good[1], [1]])
    printed = run_main("--input", path, "--out-dir", tmp_path, "--skip-bad")
    assert "bad input rows skipped (--skip-bad): 3" in printed
    assert f"{path}:2: malformed JSON" in printed and f"{path}:3: a seed needs" in printed
    assert "6 rows from 2 source instructions" in printed


# ---- back-translation, against a scripted OpenAI-compatible server ----
SEEDS = [{"id": "a", "instruction": "Greet a new neighbor.", "response": "Welcome to the street! Come by anytime."},
         {"id": "b", "instruction": "Name a planet.", "response": "Mars is a red planet."},
         {"id": "c", "instruction": "Say something about rain.", "response": "Rain makes the garden green."},
         {"id": "d", "instruction": "Describe tea.", "response": "Tea is a warm and calming drink."}]
CODE = {  # constraint text -> (first answer, answer to the retry)
    "Use fewer than 20 words.": ("```python\ndef check_following(instruction, response):\n"
                                 "    return len(response.split()) < 20\n```",) * 2,
    "Use no exclamation marks.": ("```python\ndef check_following(instruction, response):\n"
                                  "    return '!' not in response\n```",) * 2,
    "Mention the color.": ("def check_following(instruction, response:\n    return True",
                           "```python\ndef check_following(instruction, response):\n"
                           "    return 'green' in response or 'red' in response\n```"),
    "Start with the subject.": ("```python\ndef check_following(instruction, response):\n    return 1 / 0\n```",) * 2,
}
CONSTRAINTS = {  # seed instruction -> (first answer, answer to the retry)
    "Greet a new neighbor.": [json.dumps([
        {"text": "Use fewer than 20 words", "type": "hard", "category": "length"},
        {"text": "Use no exclamation marks.", "type": "hard", "category": "format"},
        {"text": "Keep a friendly tone.", "type": "soft", "category": "style"},
        {"text": "", "type": "soft"}])] * 2,
    "Name a planet.": ["Sure! Here are some constraints: the answer is short.",
                       "```json\n" + json.dumps([{"text": "Mention the color.", "type": "hard", "category": "keyword"},
                                                 {"text": "Be factual.", "type": "soft", "category": "bogus"}])
                       + "\n```"],
    "Say something about rain.": ["no idea", "still no idea"],
    "Describe tea.": [json.dumps({"constraints": [
        {"text": "Start with the subject.", "type": "hard", "category": "format"},
        {"text": "Use fewer than 20 words.", "type": "hard", "category": "length"}]})] * 2,
}


def scripted(prompt, n):
    retry = "could not be used" in prompt
    if "Write down constraints" in prompt:
        instruction = re.search(r"<instruction>\n(.*)\n</instruction>", prompt).group(1)
        return 200, chat_reply(CONSTRAINTS[instruction][retry])
    constraint = re.search(r"Constraint: (.*?)(\n|$)", prompt).group(1)
    return 200, chat_reply(CODE[constraint][retry])


@pytest.fixture
def server():
    s = ScriptedServer(scripted)
    yield s
    s.close()


def backtranslate(server, out_dir, seeds_path):
    return run_main("--backtranslate", "--llm-url", server.url, "--llm-model", "scripted", "--input", seeds_path,
                    "--out-dir", out_dir, "--eval-share", 0)


def test_backtranslation_keeps_what_passes_and_counts_every_drop_by_reason(server, tmp_path):
    printed = backtranslate(server, tmp_path, write_jsonl(tmp_path / "seeds.jsonl", SEEDS))
    examples = {e.id: e for e in verify_lib.load_examples(tmp_path / "verif_train.jsonl")}
    assert sorted(examples) == ["a-bt", "b-bt", "d-bt"]
    a, b, d = examples["a-bt"], examples["b-bt"], examples["d-bt"]
    assert [c["text"] for c in a.hard] == ["Use fewer than 20 words."] and a.soft == ["Keep a friendly tone."]
    assert [c["text"] for c in b.hard] == ["Mention the color."] and b.soft == ["Be factual."]  # after a retry
    assert [c["text"] for c in d.hard] == ["Use fewer than 20 words."] and not d.soft
    assert a.prompt.startswith("Greet a new neighbor.\n\n") and "Keep a friendly tone." in a.prompt
    for reason, n in [("seed: no JSON list", 1), ("constraint: malformed item", 1), ("hard: returned False", 1),
                      ("hard: exception", 1)]:
        assert re.search(rf"{re.escape(reason)}\s+{n}\n", printed), reason
    assert "syntax error" not in printed  # retried, then kept
    asked = lambda text: sum(text in p for p in server.prompts)  # noqa: E731
    assert asked("Say something about rain.") == 2 and asked("Constraint: Use no exclamation marks.") == 2  # once more
    assert asked("Greet a new neighbor.") == 1 and asked("Constraint: Use fewer than 20 words.") == 2  # a, d: no retry


def test_backtranslation_accounts_add_up_and_kept_functions_pass_on_their_response(server, tmp_path):
    backtranslate(server, tmp_path, write_jsonl(tmp_path / "seeds.jsonl", SEEDS))
    records = read_jsonl(tmp_path / "backtranslate_state.jsonl")
    assert len(records) == len(SEEDS)
    assert_accounts_add_up(records)
    refs = {r["id"]: r["response"] for r in read_jsonl(tmp_path / "verif_train_references.jsonl")}
    examples = verify_lib.load_examples(tmp_path / "verif_train.jsonl")
    results = verify_lib.verif_reward(examples, [refs[e.id] for e in examples], None, "rule_only")
    assert all(r.score == 1.0 for r in results)


def assert_accounts_add_up(records):
    """seeds = rows + seeds dropped; constraints proposed = kept + dropped, for every seed."""
    for r in records:
        c = r["counts"]
        seed_drops = sum(n for k, n in c.items() if k.startswith("seed:"))
        item_drops = sum(n for k, n in c.items() if k.startswith(("constraint:", "hard:")))
        assert c["seeds"] == 1 and seed_drops == (r["example"] is None), r
        assert c.get("proposed", 0) == c.get("kept_hard", 0) + c.get("kept_soft", 0) + item_drops, r
        if r["example"]:
            e = verify_lib.parse_example(r["example"])
            assert (len(e.hard), len(e.soft)) == (c["kept_hard"], c["kept_soft"])


def test_a_rerun_resumes_from_the_state_file_and_asks_nothing_again(server, tmp_path):
    seeds = write_jsonl(tmp_path / "seeds.jsonl", SEEDS)
    first = backtranslate(server, tmp_path, seeds)
    files = {p.name: p.read_bytes() for p in tmp_path.glob("verif_*.jsonl")}
    asked = server.requests
    second = backtranslate(server, tmp_path, seeds)
    assert server.requests == asked and "resuming: 4 of 4 seeds already done" in second
    assert {p.name: p.read_bytes() for p in tmp_path.glob("verif_*.jsonl")} == files
    assert first.split("dropped, by reason:")[1] == second.split("dropped, by reason:")[1]


def test_an_interrupted_state_file_is_cut_at_the_torn_record_and_only_that_seed_is_redone(server, tmp_path):
    seeds = write_jsonl(tmp_path / "seeds.jsonl", SEEDS)
    backtranslate(server, tmp_path, seeds)
    state = tmp_path / "backtranslate_state.jsonl"
    lines = state.read_text().splitlines(keepends=True)
    state.write_text("".join(lines[:-1]) + lines[-1][:40])  # the last write stopped half-way
    asked = server.requests
    printed = backtranslate(server, tmp_path, seeds)
    assert "resuming: 3 of 4 seeds already done" in printed
    assert 0 < server.requests - asked <= 6
    assert_accounts_add_up(read_jsonl(state))
    assert len(read_jsonl(state)) == 4


def test_a_state_file_damaged_before_its_last_line_stops_the_run_naming_the_line(server, tmp_path):
    seeds = write_jsonl(tmp_path / "seeds.jsonl", SEEDS)
    backtranslate(server, tmp_path, seeds)
    state = tmp_path / "backtranslate_state.jsonl"
    lines = state.read_text().splitlines(keepends=True)
    state.write_text(lines[0] + "garbage\n" + "".join(lines[1:]))
    with pytest.raises(SystemExit, match=rf"{re.escape(str(state))}:2: not a back-translation record"):
        backtranslate(server, tmp_path, seeds)


def test_backtranslation_needs_a_server_and_a_model():
    with pytest.raises(SystemExit):
        build.parse_args(["--backtranslate"])
