"""03_distill_verifier.py with real servers: the vLLM judge server that .ci/run starts as an LLM teacher, and a second
real vLLM server (scripts/serve_judge.sh) serving the exported student, from which verify_lib.Judge gets verdicts."""
import importlib
import json
import os
import signal
import socket
import subprocess
import time

import httpx
import pytest
from conftest import ROOT

import verify_lib

distill = importlib.import_module("03_distill_verifier")
pytestmark = pytest.mark.slow

LOWER = {"id": "change_case:english_lowercase", "kwargs": {},
         "text": "Your entire response should be in English, and in all lowercase letters."}
NO_COMMA = {"id": "punctuation:no_comma", "kwargs": {}, "text": "Do not use any commas in your response."}
TOPICS = ["sea", "sky", "sun", "moon", "rain", "snow", "wind", "tree", "river", "hill", "road", "city"]


def write_split(path, topics):
    """Two examples per topic (lowercase; no commas), each with a reference that follows its own constraint and
    breaks its sibling's."""
    rows, refs = [], []
    for t in topics:
        rows += [{"id": f"{t}-1", "prompt": f"Describe the {t}.", "hard": [LOWER], "soft": ["Sound calm."]},
                 {"id": f"{t}-2", "prompt": f"Describe the {t}.", "hard": [NO_COMMA], "soft": ["Sound calm."]}]
        refs += [{"id": f"{t}-1", "response": f"the {t} is quiet, and it is here."},
                 {"id": f"{t}-2", "response": f"The {t} is quiet and it is here."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path.with_name(path.stem + "_references.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))


def test_an_llm_teacher_labels_through_the_judge_api(judge_server, tmp_path):
    url, model = judge_server
    write_split(tmp_path / "train.jsonl", TOPICS[:2])
    examples, refs = distill.load_split(tmp_path / "train.jsonl", 0)
    args = distill.parse_args(["--teacher-url", url, "--teacher-model", model, "--teacher-max-tokens", "16"])
    labels = distill.llm_teacher(distill.judge_pairs(examples, refs, None), args)
    # the small served model often answers without a verdict: those are dropped; what is kept parses to its verdict
    for row in labels:
        assert row["verdict"] == verify_lib.parse_verdict(row["answer"]).value
        assert "1. Sound calm." in row["prompt"] and row["seconds"] > 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(judge_server):
    """Start scripts/serve_judge.sh on a model folder; stop it (its whole process group) at the end."""
    procs = []

    def start(model_dir):
        port = free_port()
        log = open(model_dir.parent / "serve.log", "w")
        proc = subprocess.Popen(["bash", str(ROOT / "scripts/serve_judge.sh"), str(model_dir), str(port)],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}/v1"
        for _ in range(600):
            if proc.poll() is not None:
                pytest.fail(f"the server died: {(model_dir.parent / 'serve.log').read_text()[-3000:]}")
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(1)
        pytest.fail("the server did not come up in 10 minutes")

    yield start
    for proc in procs:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_the_exported_student_serves_as_the_judge(served, tmp_path):
    write_split(tmp_path / "train.jsonl", TOPICS[:10])
    write_split(tmp_path / "eval.jsonl", TOPICS[10:])
    out = tmp_path / "distill"
    report = distill.main(["--data", str(tmp_path / "train.jsonl"), "--eval-data", str(tmp_path / "eval.jsonl"),
                           "--out-dir", str(out), "--epochs", "3", "--max-steps", "0", "--batch-size", "4", "--skip-before",
                           "--max-new-tokens", "48"])
    assert report["after"]["unparseable_share"] < 0.5  # the embedded model has learnt the answer's shape

    url = served(out / "student")
    examples, refs = distill.load_split(tmp_path / "eval.jsonl", 0)
    items = [(ex.instruction, r, [h["text"] for h in ex.hard]) for ex, r in distill.judge_pairs(examples, refs, None)]
    verdicts = verify_lib.Judge(url, "judge", max_tokens=48).verdicts(items)
    assert len(verdicts) == len(items) == 8  # 2 topics x 2 examples x (own reference, sibling's)
    assert sum(v.value in (0, 1) for v in verdicts) >= 4, [(v.raw, v.error) for v in verdicts]
