"""04_grpo.py — GRPO with LoRA, written out in plain PyTorch.

Will train a policy with GRPO on verify_lib's VerIF reward: G samples per prompt, group advantages, clipped ratio
with k3 KL to the reference (beta 1e-3), token-mean loss, one update per rollout batch (VerIF's defaults: 32 prompts x
16 samples, lr 1e-6, T = 1.0), with per-step metrics, curves, checkpoints and exact resume.

Not built yet (issue #8): running this file says so and exits non-zero.
"""
import argparse
import sys

if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    sys.exit("04_grpo.py: not built yet (issue #8)")
