"""05_eval.py --judge-bench as specifications: the trivial judges' floors, pairwise accuracy with ties apart, Wilson
intervals, and the three parts end to end against scripted judge servers (a judge that always says yes scores the
floor of always "follows"; one that answers from the rule verdicts scores 100 % on the constraint part). Seconds."""
import importlib.util
import json

import pytest
from conftest import ROOT
from scripted_server import chat_reply, quoted_response

import verify_lib

spec = importlib.util.spec_from_file_location("eval05", ROOT / "05_eval.py")
eval05 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(eval05)

YES, NO, NONE = verify_lib.Verdict(1), verify_lib.Verdict(0), verify_lib.Verdict(None, "", "unparseable: no [[1]]")


@pytest.fixture(scope="session")
def verif_eval(tmp_path_factory):
    """01_build_data.py's composer output (the first 40 seeds), in a temporary folder: verif_eval.jsonl and its
    references."""
    return eval05.compose_verif_eval(tmp_path_factory.mktemp("data"), "--limit", "40")


def bench(server_url, tmp_path, *flags):
    out = tmp_path / "bench.json"
    eval05.main(["--judge-bench", *flags, "--judge-url", server_url, "--out", str(out)])
    return json.loads(out.read_text())


def values(rates):
    return {k: v and round(v["value"], 9) for k, v in rates.items()}


# ---- the arithmetic ----
def test_a_coin_is_right_on_a_quarter_of_pairs_and_ties_on_half():
    coin = [eval05.TRIVIAL_JUDGES["coin"]] * 4
    assert values(eval05.pair_rates(coin, coin)) == {"pairwise_accuracy": 0.25, "ties": 0.5, "wrong": 0.25}


def test_always_follows_is_right_on_no_pair_and_ties_on_all():
    always = [eval05.TRIVIAL_JUDGES["always_follows"]] * 4
    assert values(eval05.pair_rates(always, always)) == {"pairwise_accuracy": 0.0, "ties": 1.0, "wrong": 0.0}


def test_pairwise_accuracy_counts_both_passed_both_failed_and_a_missing_verdict_as_ties():
    chosen = eval05.yes_no([YES, NO, YES, NO, NONE, YES])
    rejected = eval05.yes_no([NO, YES, YES, NO, NO, NONE])
    #                         right wrong tie  tie  tie  tie
    assert values(eval05.pair_rates(chosen, rejected)) == {"pairwise_accuracy": round(1 / 6, 9),
                                                           "ties": round(4 / 6, 9), "wrong": round(1 / 6, 9)}


def test_the_floors_of_the_trivial_judges_on_verdicts_with_ground_truth():
    cases = [eval05.Case("i", "r", ("c",), truth, "g") for truth in (1, 0, 0, 0)]
    floors = eval05.floors("constraints", cases)
    assert floors["always_follows"] == {"accuracy": 0.25, "tpr": 1.0, "tnr": 0.0, "yes_rate": 1.0,
                                        "balanced_accuracy": 0.5}
    assert floors["coin"] == {"accuracy": 0.5, "tpr": 0.5, "tnr": 0.5, "yes_rate": 0.5, "balanced_accuracy": 0.5}
    no_positives = eval05.floors("noncompliant", cases[1:])["coin"]
    assert no_positives["tpr"] is None and no_positives["balanced_accuracy"] is None


def test_a_missing_verdict_is_neither_a_yes_nor_a_no():
    rates = eval05.rates([1, 0], eval05.yes_no([NONE, NONE]))
    assert values(rates) == {"accuracy": 0.0, "tpr": 0.0, "tnr": 0.0, "yes_rate": 0.0, "balanced_accuracy": 0.0}


def test_wilson_intervals_hold_the_estimate_stay_in_0_1_and_narrow_with_n():
    for k, n in [(0, 5), (3, 5), (5, 5), (30, 100), (300, 1000)]:
        low, high = eval05.wilson(k, n)
        assert 0 <= low <= k / n <= high <= 1 and high - low > 0
    width = lambda k, n: eval05.wilson(k, n)[1] - eval05.wilson(k, n)[0]  # noqa: E731
    assert width(300, 1000) < width(30, 100)
    assert [round(x, 4) for x in eval05.wilson(37, 100)] == [0.2818, 0.4678]   # worked by hand


# ---- the cases of each part ----
def test_pairs_alternate_the_response_that_complies_and_the_one_that_violates():
    cases = eval05.pair_cases(eval05.PAIRS_FILE, None)
    assert len(cases) == 2 * 444 and [c.truth for c in cases[:4]] == [1, 0, 1, 0]
    assert cases[0].instruction == cases[1].instruction and cases[0].response != cases[1].response
    assert cases[0].constraints == (eval05.WHOLE_INSTRUCTION,)
    levels = [c.group for c in cases[0::2]]
    assert {g: levels.count(g) for g in set(levels)} == {"1 violated": 264, "2 violated": 133, "3+ violated": 47}
    assert len(eval05.pair_cases(eval05.PAIRS_FILE, 10)) == 20


def test_the_constraint_part_s_truth_is_the_rule_verdict_on_the_answer():
    cases = eval05.constraint_cases(eval05.BENCH_ANSWERS, eval05.IFEVAL_INPUT)
    assert len(cases) == 2 * 834 and sum(c.truth for c in cases) == 239 + 374   # base, then the GRPO answers
    for c in eval05.draw(cases, 60):
        assert c.truth == verify_lib.ifeval_follows(c.hard["id"], c.hard["kwargs"], c.response)
        assert c.constraints == (c.hard["text"],) and c.group == c.hard["id"].split(":")[0]
    assert eval05.draw(cases, 60) == eval05.draw(cases, 60) != cases[:60]   # drawn at random, the same every run


def test_noncompliant_answers_are_another_instruction_s_reference_and_degenerate_text(verif_eval):
    examples, references = eval05._examples_with_references(verif_eval)
    cases = eval05.noncompliant_cases(examples, references)
    with_soft = [ex for ex in examples if ex.soft]
    assert len(cases) == 4 * len(with_soft) > 0 and {c.truth for c in cases} == {0}
    by_kind = {kind: [c for c in cases if c.group == kind] for kind in {c.group for c in cases}}
    assert set(by_kind) == {"another prompt's answer", "<<...>> runs", "P.S. runs", "repeated keywords"}
    for ex, case in zip(with_soft, by_kind["another prompt's answer"]):
        source = next(k for k, v in references.items() if v == case.response)
        assert source.rsplit("-", 1)[0] != ex.id.rsplit("-", 1)[0] and case.constraints == tuple(ex.soft)
    assert all(c.response.count("<<") == c.response.count(">>") >= 4 for c in by_kind["<<...>> runs"])


def test_keywords_a_hard_constraint_asks_for_are_the_ones_repeated():
    ex = verify_lib.parse_example({"id": "a-1", "prompt": "Describe the sea.", "soft": ["Sound calm."],
                                   "hard": [{"id": "keywords:existence", "kwargs": {"keywords": ["tide", "salt"]}}]})
    assert eval05.degenerate_answers(ex)["repeated keywords"] == " ".join(["tide", "salt"] * 6) + "."


# ---- end to end on scripted judge servers ----
def test_a_judge_that_always_says_yes_scores_the_floor_of_always_follows(serve, tmp_path, verif_eval, capsys):
    judge = serve(lambda prompt, n: (200, chat_reply("[[1]] Every constraint is met.")))
    report = bench(judge.url, tmp_path, "--limit", "30", "--verif-eval", str(verif_eval))
    for part in eval05.BENCH_PARTS:
        r = report["parts"][part]
        floor = r["floors"]["always_follows"]
        assert values(r["judge"]) == {k: v if v is None else round(v, 9) for k, v in floor.items()}
        assert r["no_verdict"] == 0 and r["calls_per_s"] > 0
    pairs, constraints, noncompliant = (report["parts"][p] for p in eval05.BENCH_PARTS)
    assert (pairs["n"], pairs["verdicts"], pairs["judge"]["pairwise_accuracy"]["value"]) == (30, 60, 0.0)
    assert pairs["judge"]["ties"]["value"] == 1.0 and pairs["headline"]["verdict"] == "below the floors"
    assert constraints["judge"]["balanced_accuracy"]["value"] == 0.5
    assert constraints["headline"]["verdict"] == "not distinguishable from the floors"
    assert noncompliant["judge"]["yes_rate"]["value"] == 1.0
    assert noncompliant["headline"]["verdict"] == "below the floors"
    out = capsys.readouterr().out
    assert "above the floors on every part: no" in out and "pairwise accuracy" in out and "by category" in out


def test_a_judge_that_answers_from_the_rule_verdicts_scores_100_on_the_constraint_part(serve, tmp_path):
    truth = {verify_lib.judge_prompt(*c.item): c.truth
             for c in eval05.constraint_cases(eval05.BENCH_ANSWERS, eval05.IFEVAL_INPUT)}
    judge = serve(lambda prompt, n: (200, chat_reply(f"[[{truth[prompt]}]] As the rule says.")))
    r = bench(judge.url, tmp_path, "constraints", "--limit", "200")["parts"]["constraints"]
    assert r["n"] == 200 and set(r["groups"]) >= {"keywords", "length_constraints", "detectable_format"}
    for rates in [r["judge"], *r["groups"].values()]:
        assert rates["accuracy"]["value"] == 1.0 and rates["accuracy"]["high"] == 1.0
    assert r["judge"]["tpr"]["value"] == r["judge"]["tnr"]["value"] == r["judge"]["balanced_accuracy"]["value"] == 1
    assert r["headline"]["verdict"] == "above the floors"


def test_a_judge_that_tells_every_pair_apart_scores_100_pairwise(serve, tmp_path):
    chosen = {c.response for c in eval05.pair_cases(eval05.PAIRS_FILE, None) if c.truth}
    judge = serve(lambda prompt, n: (200, chat_reply(f"[[{int(quoted_response(prompt) in chosen)}]]")))
    r = bench(judge.url, tmp_path, "pairs", "--limit", "50")["parts"]["pairs"]
    assert r["judge"]["pairwise_accuracy"]["value"] == 1.0 and r["judge"]["ties"]["value"] == 0.0
    assert r["headline"] == {"rate": "pairwise_accuracy", "floor": 0.25, "verdict": "above the floors"}


def test_many_failed_judge_calls_stop_the_bench_naming_the_first_error(serve, tmp_path):
    judge = serve(lambda prompt, n: (400, "prompt too long"))
    with pytest.raises(SystemExit, match=r"failed on 10 of 10 calls of the pairs part \(first: HTTP 400: prompt too"):
        bench(judge.url, tmp_path, "pairs", "--limit", "5")


# ---- one-line errors, before anything heavy ----
def test_a_judge_that_is_down_is_named_before_any_case_is_built(tmp_path, monkeypatch):
    monkeypatch.setattr(eval05, "compose_verif_eval", lambda *a: pytest.fail("composed before the judge was asked"))
    monkeypatch.setattr(eval05, "VERIF_EVAL", ROOT / "data/absent.jsonl")   # under the kit, for --help
    with pytest.raises(SystemExit, match=r"05_eval.py: --judge-url: http://127.0.0.1:9/v1: no OpenAI-compatible"):
        bench("http://127.0.0.1:9/v1", tmp_path)


def test_the_bench_needs_a_judge_url_and_is_a_job_of_its_own(capsys):
    for flags in (["--judge-bench"], ["--judge-bench", "pairs", "--judge-url", "u", "--responses", "r.jsonl"]):
        with pytest.raises(SystemExit):
            eval05.parse_args(flags)
    assert "--judge-bench measures" in capsys.readouterr().err
    assert eval05.parse_args(["--judge-bench", "--judge-url", "u"]).judge_bench == list(eval05.BENCH_PARTS)


def test_bad_bench_files_are_one_line_naming_the_flag(serve, tmp_path):
    judge = serve(lambda prompt, n: (200, chat_reply("[[1]]")))
    (tmp_path / "pairs.json").write_text('[{"text_chosen": []}]')
    with pytest.raises(SystemExit, match=r"--bench-pairs .*pairs.json: not THU-KEG's converted IFBench file"):
        bench(judge.url, tmp_path, "pairs", "--bench-pairs", str(tmp_path / "pairs.json"))
    with pytest.raises(SystemExit, match=rf"--bench-answers {tmp_path}: needs ifeval_responses.jsonl and "):
        bench(judge.url, tmp_path, "constraints", "--bench-answers", str(tmp_path))
    (tmp_path / "eval.jsonl").write_text('{"id": "a-1", "prompt": "Hi.", "soft": ["Be warm."]}\n')
    with pytest.raises(SystemExit, match=r"eval_references.jsonl is absent; the noncompliant part"):
        bench(judge.url, tmp_path, "noncompliant", "--verif-eval", str(tmp_path / "eval.jsonl"))


def test_without_data_verif_eval_the_noncompliant_part_composes_it(serve, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(eval05, "VERIF_EVAL", ROOT / "data/absent.jsonl")   # under the kit, for --help
    real = eval05.compose_verif_eval
    monkeypatch.setattr(eval05, "compose_verif_eval", lambda out_dir: real(out_dir, "--limit", "40"))  # fewer seeds
    judge = serve(lambda prompt, n: (200, chat_reply("[[0]]")))
    r = bench(judge.url, tmp_path, "noncompliant")["parts"]["noncompliant"]
    assert r["n"] > 0 and r["judge"]["accuracy"]["value"] == 1.0
    assert "absent.jsonl is absent: composing it with 01_build_data.py" in capsys.readouterr().err
