"""VerInstruct rows become canonical examples, and their generated checkers score responses through the sandbox."""
import json

import pytest

import verify_lib

WORDS_AT_MOST_20 = "def check_following(instruction, response):\n    return len(response.split()) <= 20\n"
MENTIONS_OCEAN = ("import re\ndef check_following(instruction, response):\n"
                  "    return re.search(r'\\bocean\\b', response, re.IGNORECASE) is not None\n")
ECHOES_INSTRUCTION = "def check_following(instruction, response):\n    return instruction in response\n"
LLM_STUB = "from llm_call import llm_score\ndef check_following(instruction, response):\n    return llm_score(...)\n"

ROW = {"id": 7, "prompt": "Describe the sea in at most 20 words, mention the ocean, in a calm tone.",
       "checkers": ["[rule] Length: at most 20 words.", "[rule] Keyword: mention 'ocean'.",
                    "[llm] Desired_Writing_Style: a calm, soothing tone.", "Hierarchical_Instructions"],
       "functions": [WORDS_AT_MOST_20, MENTIONS_OCEAN, LLM_STUB, LLM_STUB]}


def write(tmp_path, rows):
    path = tmp_path / "verinstruct.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_rule_checkers_become_code_constraints_and_llm_checkers_soft_texts(tmp_path):
    (example,), untagged = verify_lib.load_verinstruct(write(tmp_path, [ROW]))
    assert example.id == "7" and example.prompt == ROW["prompt"] and example.source == "verinstruct"
    assert example.hard == [{"code": WORDS_AT_MOST_20, "text": "Length: at most 20 words."},
                            {"code": MENTIONS_OCEAN, "text": "Keyword: mention 'ocean'."}]
    assert example.soft == ["Desired_Writing_Style: a calm, soothing tone."]
    assert untagged == [{"line": 1, "id": "7", "checker": "Hierarchical_Instructions"}]


def test_converted_rows_load_again_as_canonical_examples(tmp_path):
    examples, _ = verify_lib.load_verinstruct(write(tmp_path, [ROW, dict(ROW, id=8)]))
    canonical = tmp_path / "canonical.jsonl"
    canonical.write_text("".join(json.dumps(e.to_json()) + "\n" for e in examples))
    assert verify_lib.load_examples(canonical) == examples


@pytest.mark.parametrize("bad, problem", [
    ('{"id": 1, "prompt": "x", "checkers": ["[rule] a"]', "malformed JSON"),
    ({"id": 1, "prompt": "x", "checkers": ["[rule] a"], "functions": []}, "same length"),
    ({"id": 1, "checkers": [], "functions": []}, "missing field 'prompt'"),
    ({"id": 1, "prompt": "x", "checkers": ["[rule] a"], "functions": [""]}, "a code constraint"),
])
def test_a_bad_row_names_file_and_line(tmp_path, bad, problem):
    path = write(tmp_path, [ROW, bad])
    with pytest.raises(verify_lib.ExampleError, match=problem) as err:
        verify_lib.load_verinstruct(path)
    assert str(err.value).startswith(f"{path}:2: ")


def test_generated_checkers_score_responses_through_the_sandbox(tmp_path):
    (example,), _ = verify_lib.load_verinstruct(write(tmp_path, [ROW]))
    responses = ["The ocean breathes slowly under a pale sky.",          # both rules pass
                 "The sea is calm tonight.",                             # no 'ocean'
                 "<think>ocean ocean</think>" + "wave " * 25]            # too long; the thought does not count
    results = verify_lib.verif_reward([example] * 3, responses, None, "rule_only")
    assert [[c.passed for c in r.hard] for r in results] == [[True, True], [True, False], [False, False]]
    assert [r.score for r in results] == [1.0, 0.5, 0.0]
    assert [c.name for c in results[0].hard] == ["code[0]", "code[1]"]


def test_a_broken_generated_checker_fails_with_its_reason():
    example = verify_lib.parse_example({"id": "x", "prompt": "Say hi.", "hard": [
        {"code": "def check_following(instruction, response):\n    return 1 / 0\n"},
        {"code": "import os\ndef check_following(instruction, response):\n    os.system('true')\n    return True\n"}]})
    (result,) = verify_lib.verif_reward([example], ["hi"], None, "rule_only")
    assert [c.passed for c in result.hard] == [False, False]
    assert result.hard[0].error.startswith("exception: ZeroDivisionError")
    assert result.hard[1].error == "forbidden: import os"  # imports are an allow-list (re, json, math, ...)


def test_checkers_get_the_real_instruction_unless_the_released_codes_literal_is_asked_for():
    example = verify_lib.parse_example({"id": "x", "prompt": "Repeat: sea", "hard": [{"code": ECHOES_INSTRUCTION}]})
    response = "Repeat: sea"
    assert verify_lib.verif_reward([example], [response], None, "rule_only")[0].score == 1.0
    literal = verify_lib.verif_reward([example], [response], None, "rule_only", instruction_literal=True)
    assert literal[0].score == 0.0  # the released code passed the string "instruction"
