"""A poisoned dataset through a whole GRPO run (issue #22): a training file in VerInstruct's format in which a tenth of
the rows carry hostile checkers of every kind the sandbox answers for, mixed with honest ones; 04_grpo.py, run as a
subprocess on a tiny random model on the CPU, trains on it to the end, nothing escapes, and the honest rows' rewards
equal those of a clean run on the same answers.
"""
import json
import subprocess
import sys
from pathlib import Path

import verify_lib
from test_sandbox import HOSTILE, checker, sandbox_processes
from test_sandbox_isolation import noisy_checker

REPO = Path(__file__).resolve().parents[1]
HONEST = [  # VerInstruct's [rule] checkers: (text, function)
    ("Answer in fewer than 40 words.", checker("return len(response.split()) < 40")),
    ("Use no commas.", checker("return ',' not in response")),
    ("Write at most three sentences.", checker("return len(nltk.sent_tokenize(response)) <= 3",
                                               prelude="import nltk\nnltk.download('punkt', quiet=True)\n")),
    ("Do not answer in French.", checker("""
        try:
            return detect(response) != 'fr'
        except LangDetectException:
            return True
    """, prelude="from langdetect import detect, DetectorFactory, LangDetectException\nDetectorFactory.seed = 0\n")),
]
KINDS = ("infinite_loop", "os_exit", "write_file", "subprocess", "fork_bomb", "memory_bomb", "print_megabytes",
         "patch_re_search", "forge_results_on_every_fd")  # test_sandbox's hostile checkers, {marker} in them


def hostile_functions(marker):
    """Every kind of hostile checker: test_sandbox's classics and issue #22's (a compile-warning flood, an oversized
    source)."""
    return [HOSTILE[kind][0].format(marker=marker, port=9) for kind in KINDS] + [
        noisy_checker(1200, 1), checker("return True") + "#" * (256 * 1024)]


PROMPTS = ["Say hi.", "Name a colour.", "Count to three.", "Greet a friend.", "Describe rain.", "Name a fruit.",
           "Thank a teacher.", "Describe the sea.", "Name a city.", "Wish good luck."]


def verinstruct_rows(marker):
    """20 rows; rows 3 and 14 carry every hostile checker beside an honest one."""
    rows = []
    for i in range(20):
        pairs = [HONEST[i % 4], HONEST[(i + 1) % 4]]
        if i in (3, 14):
            pairs = [HONEST[0]] + [(f"Hostile {k}.", f) for k, f in enumerate(hostile_functions(marker))]
        rows.append({"id": f"row{i}", "prompt": PROMPTS[i % 10] + f" ({i})",
                     "checkers": ["[rule] " + text for text, _ in pairs], "functions": [f for _, f in pairs]})
    return rows


def test_a_poisoned_dataset_trains_to_the_end_and_the_honest_rows_keep_their_rewards(tiny_model_dir, tmp_path):
    marker = tmp_path / "pwned"
    raw = tmp_path / "verinstruct.jsonl"
    raw.write_text("".join(json.dumps(row) + "\n" for row in verinstruct_rows(marker)))
    examples, untagged = verify_lib.load_verinstruct(raw)
    assert untagged == []
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"id": ex.id, "prompt": ex.instruction, "hard": ex.hard, "soft": ex.soft})
                            + "\n" for ex in examples))
    before = sandbox_processes()

    out = subprocess.run(
        [sys.executable, "04_grpo.py", "--setting", "heldout", "--model", str(tiny_model_dir), "--data", str(data),
         "--out-dir", str(tmp_path / "run"), "--steps", "2", "--prompts-per-step", "10", "--num-generations", "2",
         "--max-new-tokens", "8", "--lora-r", "4", "--save-every", "100", "--log-samples", "1000"],
        cwd=REPO, capture_output=True, text=True, timeout=900)

    assert out.returncode == 0, out.stderr[-3000:]
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    assert not marker.exists()
    assert sandbox_processes() - before == set()
    assert "subprocess x" in out.stderr  # the run's log names the refused import
    for row in ("row3", "row14"):         # and the hostile rows, each check with its reason
        assert f"{row} code[1] failed to run: " in out.stderr and f"{row} code[11] failed to run: too large" in out.stderr
    named = {line.split()[2] for line in out.stderr.splitlines() if "failed to run:" in line}   # "step N: rowK ..."
    assert named == {"row3", "row14"}
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(m["code_check_errors"] for m in metrics) >= 2 * 2 * 2   # 2 rows x 2 answers x at least 2 checks
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    by_prompt = {ex.instruction: ex for ex in examples}
    honest = [s for s in samples if s["prompt"] not in (PROMPTS[3] + " (3)", PROMPTS[4] + " (14)")]
    assert len(honest) >= 10
    clean = verify_lib.verif_reward([by_prompt[s["prompt"]] for s in honest], [s["completion"] for s in honest])
    assert [s["reward"] for s in honest] == [r.score for r in clean]
    assert all(check.error is None for r in clean for check in r.hard)  # every honest checker ran (nltk, langdetect)
