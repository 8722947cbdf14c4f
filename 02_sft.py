"""02_sft.py — supervised fine-tuning with LoRA/QLoRA.

Will fine-tune a chat model on the seed responses of 01_build_data.py (loss on assistant tokens only), with LoRA or
QLoRA (bitsandbytes nf4), held-out loss, JSONL metrics and a loss curve, and save a PEFT adapter or (--merge) a full
HF folder that 04_grpo.py and vLLM load.

Not built yet (issue #6): running this file says so and exits non-zero.
"""
import argparse
import sys

if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    sys.exit("02_sft.py: not built yet (issue #6)")
