"""The stages as a user runs them: --help works everywhere, 05_eval scores files
(05_eval.py's generation, resuming and report: tests/test_eval.py)."""
import argparse
import contextlib
import importlib
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

STAGES = ["01_build_data.py", "02_sft.py", "03_distill_verifier.py", "04_grpo.py", "05_eval.py"]
GPT4 = ROOT / "data/ifeval/input_response_data_gpt4_20231107_145030.jsonl"


def run(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300)


def stage_parser(stage):
    """The argparse parser a stage builds, caught as its parse_args() runs on --help."""
    module = importlib.import_module(stage.removesuffix(".py"))
    caught = []
    real = argparse.ArgumentParser.parse_args

    def catch(self, *a, **kw):
        caught.append(self)
        return real(self, *a, **kw)

    argparse.ArgumentParser.parse_args = catch
    try:
        with contextlib.redirect_stdout(io.StringIO()) as help_text, pytest.raises(SystemExit):
            module.parse_args(["--help"])
    finally:
        argparse.ArgumentParser.parse_args = real
    return caught[0], help_text.getvalue()


@pytest.mark.parametrize("stage", STAGES)
def test_help_describes_the_stage_and_every_flag_with_its_default(stage):
    parser, text = stage_parser(stage)
    assert text.startswith("usage:") and parser.description.split("\n")[0] in text   # the docstring's first line
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        flag = action.option_strings[0]
        assert action.help and len(action.help) > 8, f"{stage} {flag}: no help"
        helped = parser.formatter_class(stage)._get_help_string(action) % {"default": action.default}
        if action.default not in (None, False, [], ()):
            assert "default" in helped or str(action.default) in helped, f"{stage} {flag}: default not shown"
        assert flag in text


@pytest.mark.parametrize("stage, flags, says", [
    ("02_sft.py", ["--eval-every", "0"], "--eval-every 0: must be at least 1"),
    ("02_sft.py", ["--model", "runs/sft/no-such-model"], "argument --model: no such folder: runs/sft/no-such-model"),
    ("03_distill_verifier.py", ["--model", "./nothing/here"], "argument --model: no such folder: ./nothing/here"),
    ("04_grpo.py", ["--model", "/no/such/folder"], "argument --model: no such folder: /no/such/folder"),
    ("04_grpo.py", ["--num-generations", "1"], "it needs at least 2"),
    ("05_eval.py", ["--model", "docs"], "argument --model: docs is not a model folder (no config.json)"),
])
def test_a_bad_value_or_missing_path_is_one_line_naming_it(stage, flags, says):
    out = run(stage, *flags)
    assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert says in out.stderr.strip().splitlines()[-1]                       # one line, the last


def test_the_pipeline_finds_its_data_from_another_working_directory(tmp_path, tiny_model_dir):
    """A copy of the kit; 01 then 04 run from another folder with default paths: 04 trains on what 01 wrote beside
    the scripts."""
    kit, elsewhere = tmp_path / "kit", tmp_path / "elsewhere"
    (kit / "data").mkdir(parents=True)
    elsewhere.mkdir()
    for name in [*STAGES, "verify_lib.py", "rollout_server.py", "data/seeds.jsonl", "data/composer_words.json"]:
        shutil.copy(ROOT / name, kit / name)
    built = subprocess.run([sys.executable, str(kit / "01_build_data.py")], cwd=elsewhere, capture_output=True,
                           text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    assert (kit / "data/verif_train.jsonl").is_file() and not (elsewhere / "data").exists()
    out = subprocess.run([sys.executable, str(kit / "04_grpo.py"), "--model", str(tiny_model_dir), "--steps", "1",
                          "--prompts-per-step", "2", "--num-generations", "2", "--max-new-tokens", "4",
                          "--out-dir", "run"], cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert json.loads((elsewhere / "run/config.json").read_text())["data"] == str(kit / "data/verif_train.jsonl")
    assert len((elsewhere / "run/metrics.jsonl").read_text().splitlines()) == 1


def test_a_second_run_into_the_same_folder_is_refused_unless_asked(tmp_path, tiny_model_dir):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"id": "a", "prompt": "Say hi.", "soft": [],
                                "hard": [{"id": "punctuation:no_comma", "kwargs": {}}]}) + "\n")
    command = [sys.executable, str(ROOT / "04_grpo.py"), "--model", str(tiny_model_dir), "--data", str(data),
               "--steps", "1", "--prompts-per-step", "1", "--num-generations", "2", "--max-new-tokens", "4",
               "--out-dir", "run"]
    assert subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=600).returncode == 0
    first = (tmp_path / "run/metrics.jsonl").read_text()
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 1 and "run already holds a run" in again.stderr and "--overwrite" in again.stderr
    assert (tmp_path / "run/metrics.jsonl").read_text() == first            # nothing of the first run was touched
    replaced = subprocess.run([*command, "--overwrite"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert replaced.returncode == 0, replaced.stderr


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
