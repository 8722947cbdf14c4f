"""verify_lib's reward functions for verl: `custom_reward_function.path=scripts/verl_reward.py`, `name=compute_score`
(reward manager `naive`) or `name=compute_score_batch` (reward manager `batch`).

verl loads that path as a file without registering it in sys.modules (verl 0.9.1's load_module), and the dataclasses
in verify_lib.py cannot be defined that way ("AttributeError: 'NoneType' object has no attribute '__dict__'"); this
file imports verify_lib as a module instead. The repository must be at the same path on every node.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verify_lib import compute_score, compute_score_batch  # noqa: E402,F401
