"""The canonical example schema: load_examples accepts good rows and names file, line and problem for bad ones."""
import json

import pytest

import verify_lib

GOOD = [
    {"id": "a", "prompt": "Write a haiku about rain. Use no commas.",
     "hard": [{"id": "punctuation:no_comma", "kwargs": {}},
              {"id": "length_constraints:number_words", "kwargs": {"num_words": 40, "relation": "less than"}}],
     "soft": ["The tone is melancholic."], "source": "composer"},
    {"id": "b", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there."}],
     "hard": [{"code": "def check_following(instruction, response):\n    return len(response) < 200\n"}],
     "soft": [], "source": "verinstruct"},
    {"id": "c", "prompt": "Answer in French.", "hard": [], "soft": []},
]


def write_rows(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_good_rows_load_as_examples(tmp_path):
    examples = verify_lib.load_examples(write_rows(tmp_path / "ok.jsonl", GOOD + [""]))
    assert [e.id for e in examples] == ["a", "b", "c"]
    assert examples[1].instruction == "Hi there." and examples[0].instruction == GOOD[0]["prompt"]
    assert examples[2].source == ""
    assert [e.to_json() for e in examples[:2]] == GOOD[:2]


def test_every_key_with_nulls_is_accepted(tmp_path):
    row = dict(GOOD[2], hard=[{"id": "keywords:frequency",
                               "kwargs": {"keyword": "rain", "frequency": 2, "relation": "at least",
                                          "num_words": None, "letter": None, "end_phrase": None}}])
    assert verify_lib.load_examples(write_rows(tmp_path / "nulls.jsonl", [row]))[0].hard[0]["id"] == "keywords:frequency"


def hard(instruction_id, kwargs):
    return dict(GOOD[2], hard=[{"id": instruction_id, "kwargs": kwargs}])


@pytest.mark.parametrize("bad_row, problem", [
    ('{"id": "x", "prompt": "hi"', "malformed JSON"),
    ('[1, 2]', "must be a JSON object"),
    (hard("keywords:exists", {"keywords": ["a"]}), "unknown rule instruction id 'keywords:exists'"),
    (hard("keywords:frequency", {"keyword": "a", "relation": "at least"}), "missing kwarg 'frequency'"),
    (hard("length_constraints:number_words", {"num_words": "100", "relation": "at least"}),
     "kwarg 'num_words' must be a non-negative integer"),
    (hard("length_constraints:number_words", {"num_words": True, "relation": "at least"}), "num_words"),
    (hard("length_constraints:number_words", {"num_words": 10, "relation": "at most"}), "'less than' or 'at least'"),
    (hard("keywords:existence", {"keywords": "rain"}), "kwarg 'keywords' must be a non-empty list"),
    (hard("punctuation:no_comma", {"num_words": 3}), "unexpected kwarg(s) ['num_words']"),
    (dict(GOOD[2], hard=[{"code": ""}]), "hard[0]: a code constraint"),
    (dict(GOOD[2], hard=[{"code": "x", "id": "punctuation:no_comma"}]), "hard[0]: a code constraint"),
    (dict(GOOD[2], hard="punctuation:no_comma"), "field 'hard' must be a list"),
    (dict(GOOD[2], soft=[""]), "soft[0] must be a non-empty string"),
    (dict(GOOD[2], soft=[3]), "soft[0] must be a non-empty string"),
    ({"id": "x", "hard": [], "soft": []}, "exactly one of 'prompt' and 'messages'"),
    (dict(GOOD[2], messages=[{"role": "user", "content": "hi"}]), "exactly one of 'prompt' and 'messages'"),
    ({"id": "x", "messages": [{"role": "bot", "content": "hi"}]}, "messages[0] must be"),
    ({"id": "x", "messages": [{"role": "system", "content": "hi"}]}, "no user turn"),
    ({"prompt": "hi"}, "missing field 'id'"),
    ({"id": 7, "prompt": "hi"}, "field 'id' must be a non-empty str"),
    (dict(GOOD[2], extra=1), "unknown field(s) ['extra']"),
    (dict(GOOD[0]), "duplicate id 'a' (first seen on line 1)"),
])
def test_a_bad_row_names_file_line_and_problem(tmp_path, bad_row, problem):
    path = write_rows(tmp_path / "bad.jsonl", [GOOD[0], "", bad_row, GOOD[1]])
    with pytest.raises(verify_lib.ExampleError) as err:
        verify_lib.load_examples(path)
    assert str(err.value).startswith(f"{path}:3: ")
    assert problem in str(err.value)


def test_a_missing_file_raises_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        verify_lib.load_examples(tmp_path / "nope.jsonl")
