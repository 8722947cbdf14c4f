"""03_distill_verifier.py — distil the soft-constraint judge into a small verifier.

Will label (instruction, response, constraints) triples with a teacher judge (an OpenAI-compatible server, or the
code checkers by default), LoRA-fine-tune a student on the teacher's outputs, measure agreement with the teacher on a
held-out split, and export a merged HF folder that vLLM serves as verify_lib's judge (VerIF's IF-Verifier-7B recipe).

Not built yet (issue #6): running this file says so and exits non-zero.
"""
import argparse
import sys

if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    sys.exit("03_distill_verifier.py: not built yet (issue #6)")
