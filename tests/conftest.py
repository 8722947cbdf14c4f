"""Shared fixtures. The reference data lives in ../shared beside the project (CI has it too); tests that need it are
skipped where it is absent, except under CI, where its absence is an error."""
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
collect_ignore = ["verl_side.py"]    # runs in .venv-verl/ (verl, hydra), called by test_scaleout.py as a subprocess
SHARED_IFEVAL = ROOT.parent / "shared" / "data" / "ifeval"
SHARED_IFBENCH = ROOT.parent / "shared" / "data" / "ifbench"


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _shared(folder: Path) -> Path:
    if not folder.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"reference data missing under CI: {folder}")
        pytest.skip(f"reference data not found at {folder}")
    return folder


@pytest.fixture(scope="session")
def shared_ifeval() -> Path:
    return _shared(SHARED_IFEVAL)


@pytest.fixture(scope="session")
def shared_ifbench() -> Path:
    return _shared(SHARED_IFBENCH)


@pytest.fixture(scope="session")
def ifeval_rows():
    return read_jsonl(ROOT / "data/ifeval/input_data.jsonl")


@pytest.fixture(scope="session")
def gpt4_responses():
    return [row["response"] for row in read_jsonl(ROOT / "data/ifeval/input_response_data_gpt4_20231107_145030.jsonl")]


@pytest.fixture
def serve():
    """serve(respond) starts a ScriptedServer (tests/scripted_server.py) that answers with respond(prompt, n); each is
    closed after the test."""
    from scripted_server import ScriptedServer

    servers = []

    def start(respond):
        servers.append(ScriptedServer(respond))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture(scope="session")
def judge_server() -> tuple[str, str]:
    """(base URL, model) of the real vLLM judge server that .ci/run starts (scripts/serve_judge.sh)."""
    url, model = os.environ.get("VERIF_TEST_JUDGE_URL"), os.environ.get("VERIF_TEST_JUDGE_MODEL", "judge")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI runs the real-server tests: VERIF_TEST_JUDGE_URL is not set (start .ci/run)")
        pytest.skip("no judge server: set VERIF_TEST_JUDGE_URL (bash .ci/run starts one)")
    return url, model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised Llama with the embedded model's tokenizer and chat template: fast enough for unit tests
    that generate and train on the CPU."""
    import torch
    import transformers

    import verify_lib

    out = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = transformers.AutoTokenizer.from_pretrained(verify_lib.embedded_model_dir())
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=512, tie_word_embeddings=True,
                                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                      pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def policy_server() -> str:
    """Base URL of the real vLLM policy server that .ci/run starts (scripts/serve_policy.sh: the embedded model served
    as "policy" in float32, LoRA adapters loaded at run time, max rank 16)."""
    url = os.environ.get("VERIF_TEST_POLICY_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI runs the real-server tests: VERIF_TEST_POLICY_URL is not set (start .ci/run)")
        pytest.skip("no policy server: set VERIF_TEST_POLICY_URL (bash .ci/run starts one)")
    return url


@pytest.fixture(scope="session")
def opinionated_model_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A tiny model whose generation_config.json asks for everything a released model's may (top_k 3, top_p 0.5, a
    repetition penalty of 5, no repeated tokens), with logits sharp enough (entropy ~7 nats at T = 0.8) for those to
    change what is sampled: what our stages must ignore."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    config = transformers.AutoConfig.from_pretrained(tiny_model_dir)
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    model.generation_config = transformers.GenerationConfig(
        do_sample=True, top_k=3, top_p=0.5, repetition_penalty=5.0, no_repeat_ngram_size=1,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    out = tmp_path_factory.mktemp("opinionated")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
