"""The kit's own training kinds (verify_lib section 3b): each kind's boundaries, strict and loose; junk fails the
junk-proof kinds; kwargs are checked; and none of them is one of IFBench's 58 test kinds — not by id, and not by what
it checks: each kind is paired with the IFBench kind nearest to it and an answer on which the two disagree."""
import pytest

import ifbench_lib
import verify_lib
from verify_lib import rule_follows


def follows(iid, response, loose=False, **kwargs):
    return rule_follows(iid, kwargs, response, loose=loose)


CASES = [  # (id, kwargs, answer, strict verdict)
    ("verif:first_word", {"word": "sure"}, "Sure, here it is.", True),
    ("verif:first_word", {"word": "sure"}, '"**Sure**": done.', True),             # quotes and markdown before it
    ("verif:first_word", {"word": "sure"}, "Surely not.", False),
    ("verif:first_word", {"word": "sure"}, "Well, sure.", False),
    ("verif:last_word", {"word": "friend"}, "Goodbye, my friend!", True),
    ("verif:last_word", {"word": "friend"}, "Goodbye, my friends.", False),
    ("verif:last_word", {"word": "friend"}, "friend. And then more", False),
    ("verif:no_repeated_bigram", {}, "One two three four five six seven eight.", True),
    ("verif:no_repeated_bigram", {}, "One two three.", False),                                  # under 8 words
    ("verif:no_repeated_bigram", {}, "The cat sat. The cat ran off to the big park.", False),  # "the cat" twice
    ("verif:no_repeated_bigram", {}, "The cat sat on the mat and the dog sat on a rug.", False),  # "sat on" twice
    ("verif:distinct_sentence_openers", {"min_sentences": 3}, "Cats purr. Dogs bark. Birds sing.", True),
    ("verif:distinct_sentence_openers", {"min_sentences": 3}, "Cats purr. Dogs bark.", False),
    ("verif:distinct_sentence_openers", {"min_sentences": 2}, "The cat purrs. The dog barks.", False),
    ("verif:distinct_sentence_openers", {"min_sentences": 2}, "The cat purrs. THE dog barks.", False),
    ("verif:max_sentence_words", {"max_words": 4}, "I like tea. You like coffee.", True),
    ("verif:max_sentence_words", {"max_words": 4}, "I like tea.", False),                       # one sentence
    ("verif:max_sentence_words", {"max_words": 4}, "I like tea. You like coffee very much.", False),
    ("verif:min_sentence_words", {"min_words": 4}, "I like green tea. You like black coffee.", True),
    ("verif:min_sentence_words", {"min_words": 4}, "I like green tea. Yes.", False),
    ("verif:numbered_list", {"num_items": 3}, "Steps:\n1. Boil the water\n2. Add the tea\n3) Wait five minutes\nDone.",
     True),
    ("verif:numbered_list", {"num_items": 3}, "1. Boil the water\n3. Add the tea\n2. Wait five minutes", False),
    ("verif:numbered_list", {"num_items": 2}, "1. Boil water\n2. Boil water", False),           # the same item twice
    ("verif:numbered_list", {"num_items": 2}, "1. Boil\n2. Add tea", False),                    # a one-word item
    ("verif:numbered_list", {"num_items": 2}, "1. Boil the water\n2. Add the tea\n3. Wait a bit", False),
    ("verif:line_count", {"num_lines": 2}, "Roses are red\n\n  Violets are blue  \n", True),
    ("verif:line_count", {"num_lines": 2}, "Roses are red\nViolets are blue\nSugar is sweet", False),
    ("verif:line_count", {"num_lines": 2}, "Roses are red\nroses  ARE red", False),
    ("verif:line_count", {"num_lines": 2}, "1. Roses are red!\n2) roses are red", False),      # alike, numbers aside
    ("verif:line_count", {"num_lines": 2}, "Roses\nViolets are blue", False),
    ("verif:markdown_headings", {"num_headings": 2}, "# Tea\nTea is a drink.\n## Coffee\nCoffee wakes you up.", True),
    ("verif:markdown_headings", {"num_headings": 2}, "# Tea\n# Coffee\nCoffee wakes you up.", False),  # no text
    ("verif:markdown_headings", {"num_headings": 1}, "#Tea\nTea is a drink.", False),           # no space after #
    ("verif:markdown_headings", {"num_headings": 2}, "# Tea\nTea is good here.\n# tea\nMore tea for all.", False),
    ("verif:end_with_question", {}, "Tea is warm. Would you like some?", True),
    ("verif:end_with_question", {}, "Would you like some tea?", False),                         # one sentence
    ("verif:end_with_question", {}, "Tea is warm. Why?", False),                                # two words
    ("verif:end_with_question", {}, "Would you like tea? It is warm.", False),
    ("verif:keyword_order", {"first": "tea", "second": "milk"}, "Pour the tea, then the milk, then stir.", True),
    ("verif:keyword_order", {"first": "tea", "second": "milk"}, "Tea, milk, and more tea.", False),
    ("verif:keyword_order", {"first": "tea", "second": "milk"}, "Pour the tea and stir.", False),
    ("verif:keyword_order", {"first": "tea", "second": "milk"}, "Pour the teapot, then the milk.", False),
    ("verif:wrap_in_tag", {"tag": "answer"}, "<answer>Tea is a warm drink.</answer>", True),
    ("verif:wrap_in_tag", {"tag": "answer"}, "  <answer>\nTea is warm.\n</answer>\n", True),
    ("verif:wrap_in_tag", {"tag": "answer"}, "<answer>Tea.</answer>", False),                   # under three words
    ("verif:wrap_in_tag", {"tag": "answer"}, "<answer>Tea is warm.</answer> Enjoy!", False),
    ("verif:wrap_in_tag", {"tag": "answer"}, "<answer>a</answer> and <answer>b c d</answer>", False),
    ("verif:tldr_line", {"max_words": 6}, "Tea is brewed from leaves.\nTL;DR: tea comes from leaves.", True),
    ("verif:tldr_line", {"max_words": 6}, "TL;DR: tea comes from leaves.", False),               # nothing before it
    ("verif:tldr_line", {"max_words": 3}, "Tea is brewed.\nTL;DR: tea comes from leaves.", False),  # too long
    ("verif:tldr_line", {"max_words": 6}, "TL;DR: leaves.\nTea is brewed.\nTL;DR: tea comes from leaves.", False),
    ("verif:tldr_line", {"max_words": 6}, "Tea is brewed.\nTL;DR: tea comes from leaves.\nBye now.", False),
    ("verif:letter_count", {"num_letters": 10, "relation": "at least"}, "abcde fghij!", True),
    ("verif:letter_count", {"num_letters": 10, "relation": "at least"}, "abcde fghi 12345", False),
    ("verif:letter_count", {"num_letters": 10, "relation": "less than"}, "abc déf", True),        # é is not a-z
    ("verif:hyphenated_words", {"num_words": 2}, "A well-known, step-by-step guide.", True),
    ("verif:hyphenated_words", {"num_words": 2}, "A well-known and Well-Known guide - really.", False),
    ("verif:comma_every_sentence", {}, "Yes, I agree. Well, maybe not.", True),
    ("verif:comma_every_sentence", {}, "Yes, I agree. Maybe not.", False),
    ("verif:comma_every_sentence", {}, "Yes, I agree.", False),
]


@pytest.mark.parametrize("iid, kwargs, answer, expected", CASES)
def test_each_kind_at_its_boundaries(iid, kwargs, answer, expected):
    assert follows(iid, answer, **kwargs) is expected


def test_every_kind_has_cases_that_pass_and_fail():
    verdicts = {}
    for iid, _, _, expected in CASES:
        verdicts.setdefault(iid, set()).add(expected)
    assert set(verdicts) == set(verify_lib.KIT_CHECKERS) and all(v == {True, False} for v in verdicts.values())


def test_loose_tries_the_eight_variants_and_blank_answers_never_pass():
    answer = "Here you go:\n<answer>Tea is a warm drink.</answer>"
    assert not follows("verif:wrap_in_tag", answer, tag="answer")
    assert follows("verif:wrap_in_tag", answer, tag="answer", loose=True)           # the first line dropped
    assert follows("verif:first_word", "**Tea** is warm.", word="tea")
    for loose in (False, True):
        assert not follows("verif:hyphenated_words", "  \n ", num_words=1, loose=loose)


JUNK = [
    "<<a title>><<a title>><<a title>><<a title>><<a title>>",
    "P.S. P.S. P.S. P.S. P.S. P.S. P.S. P.S. P.S.",
    "tea tea tea tea tea tea tea tea tea tea tea tea",
    "The tea is good. The tea is good. The tea is good. The tea is good.",
    "<<title>> tea tea tea\n<<title>> tea tea tea\n<<title>> tea tea tea",
    "1. tea tea\n2. tea tea\n3. tea tea",
    "# tea\ntea tea tea\n# tea\ntea tea tea",
]
JUNK_PROOF_KWARGS = {"verif:no_repeated_bigram": {}, "verif:distinct_sentence_openers": {"min_sentences": 2},
                     "verif:numbered_list": {"num_items": 3}, "verif:line_count": {"num_lines": 3},
                     "verif:markdown_headings": {"num_headings": 2}}


@pytest.mark.parametrize("junk", JUNK)
def test_junk_meets_no_junk_proof_kind(junk):
    assert set(JUNK_PROOF_KWARGS) == set(verify_lib.JUNK_PROOF)
    for iid, kwargs in JUNK_PROOF_KWARGS.items():
        assert not follows(iid, junk, **kwargs), iid
        assert not follows(iid, junk, loose=True, **kwargs), iid


# ---- none of them is an IFBench test kind ----
# (kit kind, its kwargs, IFBench's nearest kind, its kwargs, an answer): the two checks disagree on the answer, so
# they do not check the same thing. The nearest kind was chosen by reading all 58 (ifbench_lib.py).
NEAREST_IFBENCH = [
    ("verif:first_word", {"word": "dogs"}, "words:start_verb", {}, "Dogs bark at night."),
    ("verif:last_word", {"word": "night"}, "words:words_position", {"keyword": "night"}, "Dogs bark at night."),
    ("verif:no_repeated_bigram", {}, "words:repeats", {"small_n": 1}, "the dog saw the cat near a big red barn"),
    ("verif:distinct_sentence_openers", {"min_sentences": 2}, "words:no_consecutive", {},
     "Dogs do bark. Cats can purr."),
    ("verif:max_sentence_words", {"max_words": 5}, "sentence:increment", {"small_n": 1}, "Dogs bark. Cats purr."),
    ("verif:min_sentence_words", {"min_words": 2}, "ratio:sentence_words", {}, "Dogs bark. Cats purr. Birds sing."),
    ("verif:numbered_list", {"num_items": 2}, "format:list", {"sep": "1."}, "1. Dogs bark\n2. Cats purr"),
    ("verif:line_count", {"num_lines": 2}, "format:newline", {}, "Dogs bark\nCats purr"),
    ("verif:markdown_headings", {"num_headings": 1}, "format:thesis", {}, "# Dogs\nDogs bark at night."),
    ("verif:end_with_question", {}, "ratio:sentence_type", {}, "Dogs bark. Do birds sing?"),
    ("verif:keyword_order", {"first": "dogs", "second": "cats"}, "sentence:keyword", {"word": "cats", "N": 1},
     "Dogs bark. Cats purr."),
    ("verif:wrap_in_tag", {"tag": "answer"}, "format:output_template", {}, "<answer>Dogs bark at night.</answer>"),
    ("verif:tldr_line", {"max_words": 5}, "format:output_template", {}, "Dogs bark.\nTL;DR: dogs bark loudly."),
    ("verif:letter_count", {"num_letters": 10, "relation": "at least"}, "count:word_count_range",
     {"min_words": 1, "max_words": 2}, "Dogs bark loudly at night."),
    ("verif:hyphenated_words", {"num_words": 1}, "count:unique_word_count", {"N": 1}, "Dogs bark."),
    ("verif:comma_every_sentence", {}, "count:punctuation", {}, "Yes, dogs bark. Well, cats purr."),
]


def test_no_kit_kind_has_an_ifbench_id_and_each_differs_from_the_nearest_ifbench_check():
    assert not set(verify_lib.KIT_CHECKERS) & set(ifbench_lib.IFBENCH_CHECKERS)
    assert [row[0] for row in NEAREST_IFBENCH] == list(verify_lib.KIT_CHECKERS)
    for kit, kit_kwargs, bench, bench_kwargs, answer in NEAREST_IFBENCH:
        assert follows(kit, answer, **kit_kwargs) != ifbench_lib.ifbench_follows(bench, bench_kwargs, answer), kit


@pytest.mark.parametrize("iid, kwargs, message", [
    ("verif:first_word", {"word": "two words"}, "kwarg 'word' must be one word"),
    ("verif:numbered_list", {"num_items": 0}, "kwarg 'num_items' must be an integer of at least 1"),
    ("verif:keyword_order", {"first": "tea", "second": "Tea"}, "first and second must be different words"),
    ("verif:wrap_in_tag", {"tag": "<b>"}, "kwarg 'tag' must be a tag name of lowercase letters"),
    ("verif:letter_count", {"num_letters": 5, "relation": "more than"}, "kwarg 'relation'"),
    ("verif:nonexistent", {}, "unknown rule instruction id 'verif:nonexistent'"),
])
def test_bad_kwargs_name_the_kind_and_the_kwarg(iid, kwargs, message):
    with pytest.raises(ValueError, match=message):
        follows(iid, "answer", **kwargs)


def test_the_reward_and_the_schema_take_the_kit_s_kinds():
    example = verify_lib.parse_example({"id": "x", "prompt": "Say hi.", "soft": [],
                                        "hard": [{"id": "verif:first_word", "kwargs": {"word": "hello"}},
                                                 {"id": "punctuation:no_comma", "kwargs": {}}]})
    (result,) = verify_lib.verif_reward([example], ["Hello there, friend."], mode="rule_only")
    assert [(c.name, c.passed) for c in result.hard] == [("verif:first_word", True), ("punctuation:no_comma", False)]
    assert result.score == 0.5
