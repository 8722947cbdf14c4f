"""The stages as a user runs them: --help works everywhere, 05_eval scores files
(05_eval.py's generation, resuming and report: tests/test_eval.py)."""
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

STAGES = ["01_build_data.py", "02_sft.py", "03_distill_verifier.py", "04_grpo.py", "05_eval.py"]
GPT4 = ROOT / "data/ifeval/input_response_data_gpt4_20231107_145030.jsonl"


def run(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("stage", STAGES)
def test_help_describes_the_stage(stage):
    out = run(stage, "--help")
    assert out.returncode == 0, out.stderr
    assert stage in out.stdout and "usage:" in out.stdout


@pytest.mark.parametrize("stage", STAGES)
def test_help_answers_before_torch_loads_and_prints_nothing_else(stage):
    """--help (and a bad flag) is answered before the heavy imports: torch is never imported, stderr stays empty."""
    probe = ("import runpy, sys\n"
             f"sys.argv = [{stage!r}, '--help']\n"
             "try:\n"
             f"    runpy.run_path({stage!r}, run_name='__main__')\n"
             "except SystemExit:\n"
             "    pass\n"
             "print('torch loaded:', 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and "usage:" in out.stdout, out.stderr
    assert out.stdout.rstrip().endswith("torch loaded: False") and out.stderr == ""


def test_eval_refuses_two_jobs_at_once():
    out = run("05_eval.py", "--responses", GPT4, "--compare", "runs/eval/a")
    assert out.returncode == 2 and "--responses and --compare are two different jobs" in out.stderr


def test_eval_scores_the_gpt4_responses(tmp_path):
    out = run("05_eval.py", "--responses", GPT4, "--out", tmp_path / "m.json")
    assert out.returncode == 0, out.stderr
    assert "prompt-level loose         79.67" in out.stdout
    assert "instruction-level loose    85.61" in out.stdout
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert len(metrics["per_prompt"]) == 541
    assert f"{100 * metrics['prompt_strict']:6.2f}" in out.stdout


def test_eval_joins_responses_by_key(tmp_path):
    rows = [json.loads(line) for line in GPT4.read_text().splitlines()]
    keys = [json.loads(line)["key"] for line in (ROOT / "data/ifeval/input_data.jsonl").read_text().splitlines()]
    shuffled = tmp_path / "by_key.jsonl"
    shuffled.write_text("".join(json.dumps({"key": k, "response": r["response"]}) + "\n"
                                for k, r in reversed(list(zip(keys, rows)))))
    by_key, by_position = run("05_eval.py", "--responses", shuffled), run("05_eval.py", "--responses", GPT4)
    assert by_key.returncode == 0, by_key.stderr
    assert by_key.stdout == by_position.stdout


def test_eval_names_file_and_line_of_a_bad_responses_row(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": \n')
    out = run("05_eval.py", "--responses", bad)
    assert out.returncode != 0
    assert f"{bad}:2: malformed JSON" in out.stderr
