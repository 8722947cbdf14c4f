"""verify_lib inside the real engines' data path: rows as Arrow/parquet hand them back (datasets, pandas, verl) score as
the canonical examples do; verl's batch reward function scores a step at once, concurrently, with the per-sample
function's scores; a failed judge call is flagged, not a silent 0; verl 0.9.1's own dataset, reward managers and
config take our parquet, functions and launch script (through .venv-verl, see requirements-verl.txt)."""
import importlib.util
import json
import os
import subprocess
import sys
import time

import datasets
import pandas as pd
import pytest
from conftest import ROOT
from scripted_server import ScriptedServer, chat_reply, quoted_response

import verify_lib
from verify_lib import parse_example

sys.path.insert(0, str(ROOT / "scripts"))
to_engines = importlib.import_module("to_engines")

CHEER = "def check_following(instruction, response):\n    return response.strip().endswith('!')\n"
EXAMPLES = [parse_example(row) for row in [
    {"id": "code", "prompt": "Cheer me on. End with an exclamation mark.", "source": "verinstruct",
     "hard": [{"code": CHEER, "text": "End with an exclamation mark."}], "soft": ["The tone is encouraging."]},
    {"id": "ifeval", "prompt": "Greet me in fewer than 6 words, without commas.", "source": "composer",
     "hard": [{"id": "punctuation:no_comma", "kwargs": {}},
              {"id": "length_constraints:number_words", "kwargs": {"num_words": 6, "relation": "less than"}}],
     "soft": []},
    {"id": "soft", "messages": [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Say something kind."}], "hard": [], "soft": ["Kind."]},
]]
# two answers per example: (code, ifeval, soft) x 2
ANSWERS = ["GOOD job, keep going!", "Meh.", "Hello there friend", "Hello, dear, dear friend, how are you today",
           "GOOD: you are doing well.", "whatever"]
PAIRS = [(EXAMPLES[i // 2], a) for i, a in enumerate(ANSWERS)]


def scripted_judge(prompt, n):
    """[[1]] when the quoted response contains GOOD, else [[0]]; HTTP 400 for BROKEN (a failed call, not retried).
    Each answer takes 0.2 s, so that concurrent requests overlap at the server."""
    time.sleep(0.2)
    response = quoted_response(prompt)
    if "BROKEN" in response:
        return 400, "bad request"
    return 200, chat_reply("[[1]] ok" if "GOOD" in response else "[[0]] no")


@pytest.fixture
def env_judge(monkeypatch):
    """A scripted judge server, handed to verl's functions the way verl's workers get it: the environment."""
    server = ScriptedServer(scripted_judge)
    monkeypatch.setenv("VERIF_JUDGE_URL", server.url)
    monkeypatch.setenv("VERIF_JUDGE_MODEL", "judge")
    monkeypatch.delenv("VERIF_REWARD_MODE", raising=False)
    verify_lib._env_judge.cache_clear()
    yield server
    verify_lib._env_judge.cache_clear()
    server.close()


def canonical_scores(mode="rule_only", judge=None):
    return [r.score for r in verify_lib.verif_reward([ex for ex, _ in PAIRS], ANSWERS, judge, mode)]


# ---- rows as Arrow hands them back ----
def test_arrow_null_fills_the_constraints_of_a_mixed_dataset():
    """The premise of issue 16: one struct type for the `hard` column, so a code constraint carries id/kwargs None."""
    rows = datasets.Dataset.from_list([verify_lib.trl_row(ex) for ex, _ in PAIRS])
    assert rows[0]["hard"][0] == {"code": CHEER, "text": "End with an exclamation mark.", "id": None, "kwargs": None}
    assert rows[2]["hard"][1]["kwargs"] == {"num_words": 6, "relation": "less than"}
    with pytest.raises(ValueError, match="a code constraint is"):
        parse_example({"id": "x", "prompt": "p", "hard": rows[0]["hard"]})  # the canonical schema stays strict


def test_trl_reward_func_scores_a_datasets_batch_with_code_ifeval_and_soft_constraints():
    rows = datasets.Dataset.from_list([verify_lib.trl_row(ex) for ex, _ in PAIRS])[:]  # columns, as TRL passes them
    completions = [[{"role": "assistant", "content": a}] for a in ANSWERS]
    reward = verify_lib.trl_reward_func(None, "rule_only")
    scores = reward(prompts=rows["prompt"], completions=completions, hard=rows["hard"], soft=rows["soft"],
                    id=rows["id"])
    assert scores == canonical_scores() == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]


def test_engine_parquet_files_read_back_as_the_built_examples(tmp_path):
    """01_build_data.py's output through scripts/to_engines.py, read back by datasets and by pandas (numpy arrays)."""
    build = importlib.import_module("01_build_data")
    build.main(["--out-dir", str(tmp_path), "--limit", "30"])
    path = tmp_path / "verif_train.jsonl"
    with open(path, "a") as f:
        f.writelines(json.dumps(ex.to_json()) + "\n" for ex in EXAMPLES)
    expected = [ex.to_json() for ex in verify_lib.load_examples(path)]
    verl_file, trl_file = to_engines.convert(path, tmp_path / "engines")

    verl_rows = pd.read_parquet(verl_file).to_dict("records")
    assert [verify_lib.from_arrow(r["reward_model"]["ground_truth"]).to_json() for r in verl_rows] == expected
    assert verl_rows[0]["extra_info"] == {"split": "train", "index": 0, "id": expected[0]["id"]}

    def constraints(example):  # what the reward reads; trl_row leaves out empty kwargs
        return [(h.get("id"), h.get("kwargs") or {}, h.get("code"), h.get("text")) for h in example["hard"]]

    from_pandas = pd.read_parquet(trl_file).to_dict("records")
    assert type(from_pandas[0]["hard"]).__name__ == "ndarray"
    from_datasets = datasets.load_dataset("parquet", data_files=str(trl_file), cache_dir=str(tmp_path / "hf"))["train"]
    for rows in (from_pandas, list(from_datasets)):
        got = [verify_lib.from_arrow({"id": r["id"], "messages": r["prompt"], "hard": r["hard"], "soft": r["soft"]})
               for r in rows]
        assert [constraints(g.to_json()) for g in got] == [constraints(e) for e in expected]
        assert [g.soft for g in got] == [e["soft"] for e in expected]


def test_load_examples_still_rejects_null_fields(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": "p", "hard": [{"code": CHEER, "id": None}]}) + "\n")
    with pytest.raises(verify_lib.ExampleError, match="rows.jsonl:1: hard\\[0\\]: a code constraint is"):
        verify_lib.load_examples(path)


# ---- verl: the batch function beside the per-sample one ----
def test_batch_function_gives_the_per_sample_scores_with_concurrent_judge_calls(env_judge):
    ground_truths = [json.dumps(ex.to_json()) for ex, _ in PAIRS]
    batch = verify_lib.compute_score_batch(["verif"] * 6, ANSWERS, ground_truths, [{}] * 6)
    in_flight, requests = env_judge.max_in_flight, env_judge.requests
    verify_lib._env_judge.cache_clear()                       # a fresh judge: no cache hits for the per-sample calls
    single = [verify_lib.compute_score("verif", a, gt, {}) for a, gt in zip(ANSWERS, ground_truths)]
    assert batch == single
    assert [r["score"] for r in batch] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    # asked: code x2 (product mode skips "Meh." for its hard score 0) and soft x2; the ifeval rows have no soft ones
    assert requests == 3 and in_flight == 3
    assert [r["judge"] for r in batch] == [1, -1, -1, -1, 1, 0]


def test_batch_function_asks_the_judge_once_for_identical_answers(env_judge):
    ex, answer = PAIRS[0]
    out = verify_lib.compute_score_batch(["verif"] * 16, [answer] * 16, [ex.to_json()] * 16)
    assert env_judge.requests == 1 and {r["score"] for r in out} == {1.0}


def test_a_failed_judge_call_scores_zero_and_is_flagged(env_judge):
    ex = EXAMPLES[0]
    out = verify_lib.compute_score_batch(["verif"] * 10, ["BROKEN!"] + [f"GOOD {i}!" for i in range(9)],
                                         [ex.to_json()] * 10, mode="average")
    assert out[0] == {"score": 0.0, "hard_score": 1.0, "judge": -1, "judge_failed": 1}
    assert all(r["judge_failed"] == 0 and r["score"] == 1.0 for r in out[1:])
    with pytest.raises(verify_lib.JudgeError, match="2 of 3 judge calls failed"):  # more than 10 %: the run stops
        verify_lib.compute_score_batch(["verif"] * 3, ["BROKEN 1!", "BROKEN 2!", "GOOD!"], [ex.to_json()] * 3)
    relaxed = verify_lib.compute_score_batch(["verif"] * 3, ["BROKEN 1!", "BROKEN 2!", "GOOD!"], [ex.to_json()] * 3,
                                             max_judge_failure_share=1.0)  # custom_reward_function.reward_kwargs
    assert [r["judge_failed"] for r in relaxed] == [1, 1, 0]


# ---- verl 0.9.1 itself ----
# Each spawns .venv-verl's interpreter, which imports verl and Ray (~10 s): marked slow; they need no server.
VERL_PYTHON = ROOT / ".venv-verl/bin/python"


@pytest.fixture(scope="module")
def verl_python():
    if not VERL_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(".venv-verl is missing under CI (.ci/run builds it)")
        pytest.skip("no .venv-verl (bash .ci/run builds it from requirements-verl.txt)")
    return str(VERL_PYTHON)


@pytest.mark.slow
def test_verls_reward_managers_score_our_parquet_as_verify_lib_does(verl_python, env_judge, tmp_path):
    path = tmp_path / "verif_train.jsonl"  # one row per answer, as verl repeats a prompt per sample
    rows = [{**ex.to_json(), "id": f"{ex.id}-{i}"} for i, (ex, _) in enumerate(PAIRS)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    verl_file, _ = to_engines.convert(path, tmp_path)
    (tmp_path / "answers.json").write_text(json.dumps(ANSWERS))
    out = subprocess.run([verl_python, str(ROOT / "tests/verl_side.py"), "rewards", str(verl_file),
                          str(verify_lib.embedded_model_dir()), str(tmp_path / "answers.json")],
                         capture_output=True, text=True, timeout=300, env=os.environ)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    expected = verify_lib.compute_score_batch(["verif"] * 6, ANSWERS, [ex.to_json() for ex, _ in PAIRS])
    assert got["ground_truth_types"] == ["str"] and got["data_source_type"] == "ndarray"
    assert got["batch"]["scores"] == got["naive"]["scores"] == [r["score"] for r in expected]
    assert got["batch"]["extra"]["judge_failed"] == [0] * 6            # verl's reward_extra_info, logged per key
    assert got["naive"]["manager"] == "verl.experimental.reward_loop.reward_manager.naive"
    assert got["naive"]["extra"] == expected


@pytest.mark.slow
def test_verl_launch_script_composes_verifs_hyperparameters(verl_python):
    """The script's overrides, composed with verl 0.9.1's trainer config by hydra (as main_ppo does). Its
    VERL_REWARD=batch keys are verl 0.6.1's (checked by hand against that release's config)."""
    out = subprocess.run(["bash", str(ROOT / "scripts/verl_grpo.sh")], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "MODEL": "m", "PYTHON": f"{verl_python} {ROOT}/tests/verl_side.py",
                              "VERIF_JUDGE_URL": "http://10.0.0.5:8000/v1", "VERIF_REWARD_MODE": "average"})
    assert out.returncode == 0, out.stderr[-3000:]
    cfg = json.loads(out.stdout.strip().splitlines()[-1])
    assert cfg == {"adv_estimator": "grpo", "train_batch_size": 32, "n": 16, "max_response_length": 4096, "lr": 1e-6,
                   "clip_ratio": 0.2, "use_kl_loss": True, "kl_loss_coef": 1e-3, "kl_loss_type": "low_var_kl",
                   "use_kl_in_reward": False, "temperature": 1.0, "reward_manager": "naive",
                   "custom_reward_function": {"path": str(ROOT / "scripts/verl_reward.py"), "name": "compute_score"},
                   "worker_env": {"VERIF_JUDGE_URL": "http://10.0.0.5:8000/v1", "VERIF_JUDGE_MODEL": "judge",
                                  "VERIF_JUDGE_MAX_TOKENS": "4096", "VERIF_REWARD_MODE": "average"}}
