"""The verl side of tests/test_scaleout.py, run by .venv-verl/bin/python (verl 0.9.1 beside .venv's packages; see
requirements-verl.txt). Two uses, each printing one JSON object:

  verl_side.py -m verl.trainer.main_ppo OVERRIDE...   (as scripts/verl_grpo.sh runs with PYTHON set to this file)
      compose verl's own trainer config with the overrides, as main_ppo's hydra entry point does, and print the
      values VerIF fixes; an unknown key fails here as it would in verl.
  verl_side.py rewards PARQUET TOKENIZER RESPONSES.json
      read the parquet with verl's RLHFDataset, batch it with verl's collate_fn into a DataProto with the responses
      tokenized, and score it with verl's reward managers on verify_lib: the legacy `batch` manager with
      compute_score_batch and the reward loop's `naive` manager with compute_score, each loaded by verl from
      `custom_reward_function.path=scripts/verl_reward.py`.
"""
import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def compose(overrides):
    from hydra import compose as hydra_compose, initialize_config_dir
    import verl.trainer

    config_dir = Path(verl.trainer.__file__).parent / "config"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = hydra_compose(config_name="ppo_trainer", overrides=overrides)
    actor, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    return {"adv_estimator": cfg.algorithm.adv_estimator, "train_batch_size": cfg.data.train_batch_size,
            "n": rollout.n, "max_response_length": cfg.data.max_response_length, "lr": actor.optim.lr,
            "clip_ratio": actor.clip_ratio, "use_kl_loss": actor.use_kl_loss, "kl_loss_coef": actor.kl_loss_coef,
            "kl_loss_type": actor.kl_loss_type, "use_kl_in_reward": cfg.algorithm.use_kl_in_reward,
            "temperature": rollout.temperature,
            "custom_reward_function": dict(cfg.reward.custom_reward_function),
            "reward_manager": cfg.reward.reward_manager.name,
            "worker_env": dict(cfg.ray_kwargs.ray_init.runtime_env.env_vars)}


def batch_of(parquet, tokenizer, responses):
    """verl's DataProto for these rows and responses: prompts left-padded, responses right-padded (verl's layout)."""
    import torch
    from omegaconf import OmegaConf
    from verl import DataProto
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    dataset = RLHFDataset(str(parquet), tokenizer, OmegaConf.create({"cache_dir": str(Path(parquet).parent),
                                                                     "max_prompt_length": 4096}))
    rows = collate_fn([dataset[i] for i in range(len(dataset))])
    prompts = [tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
               for chat in rows["raw_prompt"]]
    tokenizer.padding_side = "left"
    p = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    tokenizer.padding_side = "right"
    r = tokenizer(responses, return_tensors="pt", padding=True, add_special_tokens=False)
    tensors = {"prompts": p.input_ids, "responses": r.input_ids,
               "input_ids": torch.cat([p.input_ids, r.input_ids], 1),
               "attention_mask": torch.cat([p.attention_mask, r.attention_mask], 1)}
    non_tensors = {k: v for k, v in rows.items() if not isinstance(v, torch.Tensor)}
    return DataProto.from_dict(tensors=tensors, non_tensors=non_tensors)


def reward_config(name, manager):
    from omegaconf import OmegaConf

    function = {"path": str(ROOT / "scripts/verl_reward.py"), "name": name}
    return OmegaConf.create({"reward": {"custom_reward_function": function,
                                        "reward_manager": {"source": "register", "name": manager}}})


def rewards(parquet, tokenizer_dir, responses_path):
    from transformers import AutoTokenizer
    from verl.trainer.ppo.reward import get_custom_reward_fn, load_reward_manager
    from verl.workers.reward_manager import get_reward_manager_cls

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    responses = json.loads(Path(responses_path).read_text())
    data = batch_of(parquet, tokenizer, responses)
    reward_models = data.non_tensor_batch["reward_model"]
    out = {"ground_truth_types": sorted({type(rm["ground_truth"]).__name__ for rm in reward_models}),
           "data_source_type": type(data.non_tensor_batch["data_source"]).__name__}

    # verl <= 0.6's trainer path: reward_model.reward_manager=batch (the class is unchanged in 0.9.1)
    batch_fn = get_custom_reward_fn(reward_config("compute_score_batch", "batch"))
    manager = get_reward_manager_cls("batch")(tokenizer=tokenizer, num_examine=0, compute_score=batch_fn)
    result = manager(data, return_dict=True)
    out["batch"] = {"scores": result["reward_tensor"].sum(-1).tolist(),
                    "extra": {k: [int(x) if isinstance(x, bool) else x for x in v]
                              for k, v in result["reward_extra_info"].items()}}

    # verl 0.9.1's trainer path: the reward loop, one run_single per sample, gathered as RewardLoopWorker does
    loop_manager = load_reward_manager(reward_config("compute_score", "naive"), tokenizer)

    async def score_all():
        return await asyncio.gather(*(loop_manager.run_single(data[i:i + 1]) for i in range(len(data))))

    outputs = loop_manager.loop.run_until_complete(score_all())
    out["naive"] = {"manager": type(loop_manager).__module__, "scores": [o["reward_score"] for o in outputs],
                    "extra": [o["reward_extra_info"] for o in outputs]}
    return out


if __name__ == "__main__":
    if sys.argv[1:3] == ["-m", "verl.trainer.main_ppo"]:
        print(json.dumps(compose(sys.argv[3:])))
    elif sys.argv[1] == "rewards":
        print(json.dumps(rewards(*sys.argv[2:5])))
    else:
        sys.exit(__doc__)
