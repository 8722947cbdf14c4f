"""05_eval.py against a real vLLM server (CPU build, embedded SmolLM2-135M), as .ci/run starts it: the server
backend generates, the same server judges. The small model answers poorly; the test asserts what must hold whatever
it says."""
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

import verify_lib

pytestmark = pytest.mark.slow


def run(*args):
    return subprocess.run([sys.executable, "05_eval.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_a_served_model_answers_ifeval_and_the_held_out_set_and_resumes(judge_server, tmp_path):
    url, model = judge_server
    examples = [{"id": "a", "prompt": "Say hello in one short sentence. Use no commas.",
                 "hard": [{"id": "punctuation:no_comma", "kwargs": {}}], "soft": ["The tone is friendly."]},
                {"id": "b", "messages": [{"role": "system", "content": "Answer in English."},
                                         {"role": "user", "content": "Name a fruit."}],
                 "hard": [], "soft": ["It names a fruit."]}]
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("".join(json.dumps(verify_lib.parse_example(e).to_json()) + "\n" for e in examples))
    command = ["--server-url", url, "--server-model", model, "--limit", "3", "--max-new-tokens", "24",
               "--verif-eval", eval_file, "--judge-url", url, "--judge-model", model, "--judge-max-tokens", "16",
               "--reward-mode", "rule_only", "--run-dir", tmp_path / "run"]
    out = run(*command)
    assert out.returncode == 0, out.stderr
    assert "IFEval on 3 prompts" in out.stdout and "VerIF held-out on 2 examples" in out.stdout

    responses = [json.loads(line) for line in (tmp_path / "run/ifeval_responses.jsonl").read_text().splitlines()]
    assert len(responses) == 3 and all(isinstance(r["response"], str) and r["response"] for r in responses)
    verif = json.loads((tmp_path / "run/verif_metrics.json").read_text())
    assert verif["n_with_soft"] == 2
    assert verif["soft_failed"] + sum(e["soft"] is not None for e in verif["per_example"]) == 2  # a value or an error
    assert verif["soft_pass_rate"] is None or 0 <= verif["soft_pass_rate"] <= 1

    again = run(*command)
    assert again.returncode == 0, again.stderr
    assert "3 of 3 answered already, generating 0" in again.stderr
    assert "2 of 2 answered already, generating 0" in again.stderr


VLLM_PYTHON = ROOT / ".venv-judge/bin/python"  # vLLM lives in the judge's environment (scripts/serve_judge.sh)


def test_the_vllm_backend_generates_with_a_lora_adapter(tmp_path):
    import peft
    import transformers

    if not VLLM_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI builds {VLLM_PYTHON} (scripts/serve_judge.sh); it is missing")
        pytest.skip(f"no vLLM environment at {VLLM_PYTHON}")
    model = transformers.AutoModelForCausalLM.from_pretrained(verify_lib.embedded_model_dir())
    adapter = tmp_path / "grpo/adapter"
    peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(json.dumps({"id": "a", "prompt": "Say hello. Use no commas.",
                                     "hard": [{"id": "punctuation:no_comma", "kwargs": {}}], "soft": []}) + "\n")
    # the judge's environment has vLLM but not the IFEval NLP packages: a held-out check that needs none of them
    out = subprocess.run([VLLM_PYTHON, "05_eval.py", "--backend", "vllm", "--adapter", adapter, "--tasks", "verif",
                          "--verif-eval", eval_file, "--max-new-tokens", "12", "--run-dir", tmp_path / "run"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")})
    assert out.returncode == 0, out.stderr[-3000:]
    (row,) = [json.loads(line) for line in (tmp_path / "run/verif_responses.jsonl").read_text().splitlines()]
    assert row["id"] == "a" and isinstance(row["response"], str) and row["response"]
    assert json.loads((tmp_path / "run/config.json").read_text())["adapter"] == [str(adapter)]
    assert "VerIF held-out on 1 examples" in out.stdout
