"""01_build_data.py — VerInstruct-style data: import, an offline composer, LLM constraint back-translation.

Will write a train and an eval file in verify_lib's canonical schema (split by source instruction): imported from
VerInstruct, IFEval-format or {instruction, response} JSONL; composed offline from seed instructions in data/ with
1-4 IFEval hard constraints and soft ones; or back-translated by an OpenAI-compatible LLM, every generated checker
kept only if it passes verify_lib's sandbox on the original response.

Not built yet (issue #5): running this file says so and exits non-zero.
"""
import argparse
import sys

if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    sys.exit("01_build_data.py: not built yet (issue #5)")
