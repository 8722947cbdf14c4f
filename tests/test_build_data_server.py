"""01_build_data.py's back-translation against a real vLLM server (CPU build, embedded SmolLM2-135M), as .ci/run
starts it. The small model writes poor constraints and poor code; these tests assert what must hold whatever it
says: the pipeline finishes, its accounts add up, every kept function passes the sandbox on its response, and a
rerun resumes instead of asking again. The main run uses --structured (vLLM's structured outputs), without which
this model writes no JSON at all; one plain run shows that the pipeline survives that too."""
import contextlib
import importlib
import io
import json

import pytest
import test_build_data
from conftest import ROOT, read_jsonl

import verify_lib

pytestmark = pytest.mark.slow

build = importlib.import_module("01_build_data")
N_SEEDS = 3


def backtranslate(url, model, seeds_path, out_dir, *extra):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        build.main(["--backtranslate", "--llm-url", url, "--llm-model", model, "--input", str(seeds_path),
                    "--out-dir", str(out_dir), "--eval-share", "0", "--llm-max-tokens", "256",
                    "--max-constraints", "4", "--llm-timeout", "300", *extra])
    return out.getvalue()


def shortest_seeds(path, n):
    """The n seeds with the shortest responses: short prompts keep the CPU server quick."""
    seeds = sorted(read_jsonl(ROOT / "data/seeds.jsonl"), key=lambda s: len(s["response"]))[:n]
    path.write_text("".join(json.dumps(s) + "\n" for s in seeds))
    return path


def assert_accounts_add_up(records, printed):
    """The fast suite's accounting (seeds = rows + seeds dropped; proposed = kept + dropped), and every drop printed
    by its reason."""
    test_build_data.assert_accounts_add_up(records)
    for r in records:
        assert all(reason in printed for reason in r["counts"] if ":" in reason)
    assert f"verif data: {sum(r['example'] is not None for r in records)} rows" in printed


@pytest.fixture(scope="module")
def run(judge_server, tmp_path_factory):
    """One structured back-translation of three seeds."""
    url, model = judge_server
    tmp = tmp_path_factory.mktemp("backtranslate")
    seeds_path = shortest_seeds(tmp / "seeds.jsonl", N_SEEDS)
    printed = backtranslate(url, model, seeds_path, tmp, "--structured")
    return url, model, seeds_path, tmp, printed


def test_the_pipeline_survives_a_poor_model_and_writes_canonical_files(run):
    _, _, _, out_dir, printed = run
    assert "verif data:" in printed and "VerInstruct" in printed
    examples = verify_lib.load_examples(out_dir / "verif_train.jsonl")
    assert verify_lib.load_examples(out_dir / "verif_eval.jsonl") == []
    assert all(e.source == "backtranslate" and e.hard + e.soft for e in examples)


def test_every_seed_is_accounted_for_and_every_constraint_kept_or_dropped_by_reason(run):
    _, _, _, out_dir, printed = run
    records = read_jsonl(out_dir / "backtranslate_state.jsonl")
    assert len(records) == N_SEEDS
    assert_accounts_add_up(records, printed)


def test_every_kept_function_passes_the_sandbox_on_its_response(run):
    _, _, _, out_dir, _ = run
    refs = {r["id"]: r["response"] for r in read_jsonl(out_dir / "verif_train_references.jsonl")}
    examples = verify_lib.load_examples(out_dir / "verif_train.jsonl")
    checks = [(c["code"], e.instruction, refs[e.id]) for e in examples for c in e.hard]
    assert all(r.passed for r in verify_lib.run_code_checks(checks))


def test_a_rerun_resumes_without_asking_the_server_again(run):
    url, model, seeds_path, out_dir, _ = run
    before = (out_dir / "verif_train.jsonl").read_bytes()
    printed = backtranslate("http://127.0.0.1:9/v1", model, seeds_path, out_dir)  # nothing listens there
    assert f"resuming: {N_SEEDS} of {N_SEEDS} seeds already done" in printed
    assert (out_dir / "verif_train.jsonl").read_bytes() == before


def test_without_structured_outputs_the_pipeline_survives_answers_that_are_not_json(judge_server, tmp_path):
    url, model = judge_server
    printed = backtranslate(url, model, shortest_seeds(tmp_path / "seeds.jsonl", 2), tmp_path)
    records = read_jsonl(tmp_path / "backtranslate_state.jsonl")
    assert len(records) == 2
    assert_accounts_add_up(records, printed)
