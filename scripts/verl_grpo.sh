#!/usr/bin/env bash
# VerIF's GRPO run in verl, with verify_lib as the reward. Checked against verl 0.9.1 (its config composes with these
# overrides: tests/test_scaleout.py); VERL_REWARD=batch gives the keys of verl <= 0.6 (checked against 0.6.1's
# config), whose `batch` reward manager scores a whole step in one verify_lib.compute_score_batch call.
#
#   python scripts/to_engines.py                           # data/verif_{train,eval}.verl.parquet
#   bash scripts/serve_judge.sh /models/QwQ-32B 8000 &     # the judge (any OpenAI-compatible server)
#   VERIF_JUDGE_URL=http://10.0.0.5:8000/v1 MODEL=Qwen/Qwen2.5-7B-Instruct bash scripts/verl_grpo.sh trainer.nnodes=2
#
# Environment: MODEL (policy, HF id or folder), VERIF_JUDGE_URL and VERIF_JUDGE_MODEL (default "judge"; the reward
# workers read them: no URL, no judge, and soft constraints are skipped), VERIF_JUDGE_MAX_TOKENS (default 4096),
# VERIF_REWARD_MODE (product | average |
# rule_only | judge_only; default product, the released code's form), TRAIN/EVAL (parquet files), GPUS (per node,
# default 8), VERL_REWARD (naive: verl >= 0.7, the default | batch: verl <= 0.6), PYTHON (default python3).
# Extra arguments are hydra overrides and win over these.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${MODEL:?set MODEL to the policy (HF id or folder)}"
export VERIF_JUDGE_MODEL="${VERIF_JUDGE_MODEL:-judge}" VERIF_REWARD_MODE="${VERIF_REWARD_MODE:-product}"
[ -n "${VERIF_JUDGE_URL:-}" ] || echo "verl_grpo.sh: VERIF_JUDGE_URL is unset: soft constraints will not be judged" >&2
export VERIF_JUDGE_URL="${VERIF_JUDGE_URL:-}"

args=(
  algorithm.adv_estimator=grpo                                  # group-relative advantages (DeepSeekMath), VerIF
  data.train_files="${TRAIN:-data/verif_train.verl.parquet}"
  data.val_files="${EVAL:-data/verif_eval.verl.parquet}"
  data.train_batch_size=32                                      # prompts per step: VerIF
  actor_rollout_ref.rollout.n=16                                # samples per prompt: VerIF
  data.max_prompt_length=2048
  data.max_response_length=4096                                 # new tokens: VerIF
  actor_rollout_ref.model.path="$MODEL"
  actor_rollout_ref.actor.optim.lr=1e-6                         # VerIF (full fine-tuning)
  actor_rollout_ref.actor.ppo_mini_batch_size=32                # one update per rollout batch (on-policy)
  actor_rollout_ref.actor.clip_ratio=0.2                        # PPO/VerIF epsilon
  actor_rollout_ref.actor.use_kl_loss=True                      # KL in the loss, not in the reward (GRPO, VerIF)
  actor_rollout_ref.actor.kl_loss_coef=0.001                    # beta: VerIF
  actor_rollout_ref.actor.kl_loss_type=low_var_kl               # verl's name for the k3 estimator
  algorithm.use_kl_in_reward=False
  actor_rollout_ref.rollout.temperature=1.0                     # VerIF
  actor_rollout_ref.rollout.name=vllm
  trainer.n_gpus_per_node="${GPUS:-8}"
  trainer.nnodes=1
  trainer.project_name=verif
  trainer.experiment_name="verif-grpo-${VERIF_REWARD_MODE}"
  trainer.rollout_data_dir=runs/verl/rollouts                   # per-sample dumps, with judge / judge_failed
)
export VERIF_JUDGE_MAX_TOKENS="${VERIF_JUDGE_MAX_TOKENS:-4096}"
for var in VERIF_JUDGE_URL VERIF_JUDGE_MODEL VERIF_JUDGE_MAX_TOKENS VERIF_REWARD_MODE; do  # to every node's workers
  args+=("+ray_kwargs.ray_init.runtime_env.env_vars.$var='${!var}'")
done
if [ "${VERL_REWARD:-naive}" = batch ]; then                     # verl <= 0.6
  args+=(custom_reward_function.path="$PWD/scripts/verl_reward.py" custom_reward_function.name=compute_score_batch
         reward_model.reward_manager=batch)
else                                                             # verl >= 0.7: the reward loop, calls run concurrently
  args+=(reward.custom_reward_function.path="$PWD/scripts/verl_reward.py"
         reward.custom_reward_function.name=compute_score reward.reward_manager.name=naive)
fi
exec ${PYTHON:-python3} -m verl.trainer.main_ppo "${args[@]}" "$@"
