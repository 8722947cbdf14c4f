"""Unit specifications for the 25 IFEval instruction checkers in verify_lib (section 3).

Every expected value here is derived by hand from Google's reference evaluator
(google-research/instruction_following_eval: instructions.py, instructions_util.py, evaluation_lib.py), not from
verify_lib's output. Each test name states the property of the reference that it pins down; the quirks are deliberate,
because published IFEval numbers are computed with them.

Counting checkers are probed through their two relations: a count is exactly n when "at least n" holds and
"less than n+1" holds.
"""
import re

import pytest

import verify_lib

# ----------------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------------

ALL_IDS = {
    "keywords:existence", "keywords:frequency", "keywords:forbidden_words", "keywords:letter_frequency",
    "language:response_language",
    "length_constraints:number_sentences", "length_constraints:number_paragraphs",
    "length_constraints:number_words", "length_constraints:nth_paragraph_first_word",
    "detectable_content:number_placeholders", "detectable_content:postscript",
    "detectable_format:number_bullet_lists", "detectable_format:constrained_response",
    "detectable_format:number_highlighted_sections", "detectable_format:multiple_sections",
    "detectable_format:json_format", "detectable_format:title",
    "combination:two_responses", "combination:repeat_prompt",
    "startend:end_checker", "startend:quotation",
    "change_case:capital_word_frequency", "change_case:english_capital", "change_case:english_lowercase",
    "punctuation:no_comma",
}

# Every kwarg key of the HF google/IFEval dataset, where each row carries all of them (most null).
IFEVAL_KWARG_KEYS = [
    "num_highlights", "relation", "num_words", "num_placeholders", "prompt_to_repeat", "num_paragraphs",
    "first_word", "nth_paragraph", "num_sentences", "letter", "let_frequency", "let_relation", "capital_frequency",
    "capital_relation", "keywords", "keyword", "frequency", "forbidden_words", "end_phrase", "language",
    "section_spliter", "num_sections", "num_bullets", "postscript_marker",
]

# Valid kwargs for every id, chosen where possible so that the raw check is satisfied by an empty string (no_comma,
# forbidden_words, "less than" counts, zero minimums, ...): the empty-response tests then show that it is the
# reference's `response.strip() and ...` guard, not the check, that fails an empty answer.
EMPTY_SATISFYING_KWARGS = {
    "keywords:existence": {"keywords": ["x*"]},  # the regex "x*" matches the empty string
    "keywords:frequency": {"keyword": "cat", "frequency": 1, "relation": "less than"},
    "keywords:forbidden_words": {"forbidden_words": ["cat"]},
    "keywords:letter_frequency": {"letter": "z", "let_frequency": 1, "let_relation": "less than"},
    "language:response_language": {"language": "en"},  # langdetect cannot decide on "" -> counted as followed
    "length_constraints:number_sentences": {"num_sentences": 1, "relation": "less than"},
    "length_constraints:number_paragraphs": {"num_paragraphs": 0},
    "length_constraints:number_words": {"num_words": 1, "relation": "less than"},
    "length_constraints:nth_paragraph_first_word": {"num_paragraphs": 1, "nth_paragraph": 1, "first_word": "hello"},
    "detectable_content:number_placeholders": {"num_placeholders": 0},
    "detectable_content:postscript": {"postscript_marker": "P.S."},
    "detectable_format:number_bullet_lists": {"num_bullets": 0},
    "detectable_format:constrained_response": {},
    "detectable_format:number_highlighted_sections": {"num_highlights": 0},
    "detectable_format:multiple_sections": {"section_spliter": "Section", "num_sections": 0},
    "detectable_format:json_format": {},
    "detectable_format:title": {},
    "combination:two_responses": {},
    "combination:repeat_prompt": {"prompt_to_repeat": "Repeat me."},
    "startend:end_checker": {"end_phrase": "Bye."},
    "startend:quotation": {},
    "change_case:capital_word_frequency": {"capital_frequency": 1, "capital_relation": "less than"},
    "change_case:english_capital": {},
    "change_case:english_lowercase": {},
    "punctuation:no_comma": {},
}


def follows(instruction_id, response, *, loose=False, **kwargs):
    return verify_lib.ifeval_follows(instruction_id, kwargs, response, loose=loose)


def count_is(instruction_id, response, n, count_key, relation_key, **extra):
    """The checker counts exactly n: 'at least n' holds, 'at least n+1' does not, and 'less than n+1' holds."""
    at_least_n = follows(instruction_id, response, **{count_key: n, relation_key: "at least"}, **extra)
    at_least_n1 = follows(instruction_id, response, **{count_key: n + 1, relation_key: "at least"}, **extra)
    less_than_n1 = follows(instruction_id, response, **{count_key: n + 1, relation_key: "less than"}, **extra)
    return at_least_n and not at_least_n1 and less_than_n1


def words(response):
    return next(n for n in range(200) if count_is("length_constraints:number_words", response, n,
                                                  "num_words", "relation"))


def sentences(response):
    return next(n for n in range(50) if count_is("length_constraints:number_sentences", response, n,
                                                 "num_sentences", "relation"))


def capital_words(response):
    return next(n for n in range(50) if count_is("change_case:capital_word_frequency", response, n,
                                                 "capital_frequency", "capital_relation"))


def named(name):
    """A regex for an error message that names the kwarg `name` on its own, not as part of an id like
    "keywords:letter_frequency"."""
    return rf"(?<![\w:]){re.escape(name)}(?![\w:])"


def at_least_exactly(instruction_id, response, key, n, **extra):
    """For the 'at least n' checkers without a relation kwarg: n passes and n+1 fails."""
    return follows(instruction_id, response, **{key: n}, **extra) and \
        not follows(instruction_id, response, **{key: n + 1}, **extra)


# ----------------------------------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------------------------------

def test_registry_holds_exactly_the_25_ifeval_instruction_ids():
    assert set(verify_lib.IFEVAL_CHECKERS) == ALL_IDS
    assert len(ALL_IDS) == 25


# ----------------------------------------------------------------------------------------------------------------------
# "less than" / "at least" boundaries (count of 5 units in each response)
# ----------------------------------------------------------------------------------------------------------------------

BOUNDARY_CASES = [  # relation, threshold, expected for a count of exactly 5
    ("less than", 4, False), ("less than", 5, False), ("less than", 6, True),
    ("at least", 4, True), ("at least", 5, True), ("at least", 6, False),
]

FIVE_UNITS = {  # instruction id, response with 5 countable units, count kwarg, relation kwarg, extra kwargs
    "words": ("length_constraints:number_words", "one two three four five", "num_words", "relation", {}),
    "sentences": ("length_constraints:number_sentences", "Birds sing. Dogs bark. Cats purr. Cows moo. Fish swim.",
                  "num_sentences", "relation", {}),
    "keyword": ("keywords:frequency", "cat cat cat cat cat", "frequency", "relation", {"keyword": "cat"}),
    "letter": ("keywords:letter_frequency", "zZzZz", "let_frequency", "let_relation", {"letter": "z"}),
    "capitals": ("change_case:capital_word_frequency", "ONE TWO THREE FOUR FIVE six", "capital_frequency",
                 "capital_relation", {}),
}


@pytest.mark.parametrize("unit", sorted(FIVE_UNITS))
@pytest.mark.parametrize("relation,threshold,expected", BOUNDARY_CASES)
def test_less_than_is_strict_and_at_least_is_inclusive(unit, relation, threshold, expected):
    instruction_id, response, count_key, relation_key, extra = FIVE_UNITS[unit]
    kwargs = {count_key: threshold, relation_key: relation, **extra}
    assert follows(instruction_id, response, **kwargs) is expected


# ----------------------------------------------------------------------------------------------------------------------
# keywords
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("keywords,response,expected", [
    (["cat"], "I filed it under the wrong category.", True),  # substring, no word boundary
    (["cat"], "CONCATENATE", True),  # case-insensitive
    (["Cat"], "a small cat", True),
    (["c.t"], "I cut the rope.", True),  # the keyword is an unescaped regex: "." is a wildcard
    (["cat", "dog"], "Only a cat here.", False),  # every keyword is required
    (["cat", "dog"], "A dog chased a cat.", True),
    ([" cat"], "concatenate", False),  # existence keywords are not stripped
])
def test_keyword_existence_is_a_case_insensitive_regex_substring_match_not_a_word_match(keywords, response, expected):
    assert follows("keywords:existence", response, keywords=keywords) is expected


@pytest.mark.parametrize("keyword,response,count", [
    ("cat", "cat category concatenate", 3),  # substrings count
    ("the", "The theory: there.", 3),  # case-insensitive
    ("aa", "aaaa", 2),  # re.findall is non-overlapping
    ("aa", "aaa", 1),
    ("ana", "banana", 1),  # the overlapping second "ana" is not counted
    (" cat ", "concatenate", 1),  # the frequency keyword is stripped before searching
    ("c.t", "cat cot cut", 3),  # unescaped regex
    ("dog", "no match here", 0),
])
def test_keyword_frequency_counts_non_overlapping_case_insensitive_regex_matches(keyword, response, count):
    assert count_is("keywords:frequency", response, count, "frequency", "relation", keyword=keyword)


@pytest.mark.parametrize("forbidden,response,expected", [
    (["cat"], "I filed it under the wrong category.", True),  # \b...\b: a substring is not the word
    (["cat"], "concatenate", True),
    (["cat"], "Two cats.", True),  # plural is a different word
    (["cat"], "The cat sat.", False),
    (["cat"], "CAT!", False),  # case-insensitive
    (["cat"], "the cat's toy", False),  # an apostrophe is a word boundary
    (["ice cream"], "I love ice cream.", False),  # a phrase works
    (["dog", "cat"], "Only a dog.", False),  # any forbidden word fails
])
def test_forbidden_words_use_word_boundaries_unlike_keyword_existence(forbidden, response, expected):
    assert follows("keywords:forbidden_words", response, forbidden_words=forbidden) is expected


@pytest.mark.parametrize("letter,response,count", [
    ("a", "Banana", 3),
    ("a", "AAA aaa", 6),  # the response is lowercased
    ("A", "banana", 3),  # and so is the letter
    ("z", "banana", 0),
])
def test_letter_frequency_is_case_insensitive(letter, response, count):
    assert count_is("keywords:letter_frequency", response, count, "let_frequency", "let_relation", letter=letter)


def test_a_single_non_letter_character_is_counted_as_given():
    # The current reference only replaces an empty or multi-character `letter` (older versions also replaced
    # anything outside a-z); "#" (IFEval key 1122) is kept and counted.
    assert count_is("keywords:letter_frequency", "#one #two", 2, "let_frequency", "let_relation", letter="#")


def test_a_whitespace_letter_is_stripped_to_nothing_and_counts_zero():
    # Reference: " " is non-empty and one character long, so it is kept as `letter.strip()`, i.e. "", and
    # collections.Counter(value)[""] is always 0, whatever the response.
    assert count_is("keywords:letter_frequency", "a b c d", 0, "let_frequency", "let_relation", letter=" ")


# ----------------------------------------------------------------------------------------------------------------------
# words and sentences
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("response,count", [
    ("don't", 2),  # \w+ runs: the apostrophe splits
    ("state-of-the-art", 4),  # hyphens split
    ("Room 101 has 2 beds", 5),  # digits are words
    ("snake_case_name", 1),  # "_" is a word character
    ("mail a@b.com now", 5),
    ("café naïve", 2),  # \w is Unicode-aware
    ("... !!! ???", 0),
    ("one\ntwo\n\nthree", 3),
])
def test_words_are_runs_of_word_characters(response, count):
    assert words(response) == count


@pytest.mark.parametrize("response,count", [
    ("I met Dr. Smith at noon.", 1),  # "dr" is a Punkt English abbreviation
    ("The U.S. economy grew. Prices rose.", 2),  # "u.s" is an abbreviation
    ("Mr. Jones left early.", 1),
    ("Wait... and then nothing happened.", 1),  # an ellipsis before a lowercase word is no break
    ("Really? Yes! Okay.", 3),  # ? and ! end sentences
    ("It costs 3.50 dollars. Cheap.", 2),  # a decimal point is no break
    ("Line one\nLine two", 1),  # newlines alone do not split
    ("No terminal punctuation", 1),
    # Quirk: "e.g" and "i.e" are NOT in the English Punkt abbreviation list, so they end a sentence.
    ("Bring fruit, e.g. apples or pears.", 2),
    ("Use one tool, i.e. a hammer.", 2),
])
def test_sentences_are_counted_by_the_nltk_punkt_english_model(response, count):
    assert sentences(response) == count


# ----------------------------------------------------------------------------------------------------------------------
# paragraphs
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("response,count", [
    ("First.\n***\nSecond.\n***\nThird.", 3),
    ("***\nFirst.\n***\nSecond.\n***", 2),  # an empty paragraph at either end is dropped
    ("First.\n\n***\n\nSecond.", 2),  # \s?\*\*\*\s? eats one whitespace each side; the rest stays in the paragraph
    ("First. *** Second.", 2),  # a divider mid-line splits too
    ("Just one paragraph.\n\nEven with a blank line.", 1),  # "\n\n" is not a divider here
])
def test_paragraphs_are_split_by_the_markdown_divider(response, count):
    assert follows("length_constraints:number_paragraphs", response, num_paragraphs=count)
    assert not follows("length_constraints:number_paragraphs", response, num_paragraphs=count + 1)
    assert not follows("length_constraints:number_paragraphs", response, num_paragraphs=count - 1)


@pytest.mark.parametrize("num_paragraphs", [1, 2, 3])
def test_an_empty_paragraph_between_dividers_fails_whatever_the_count(num_paragraphs):
    response = "First.\n***\n\n***\nSecond."
    assert not follows("length_constraints:number_paragraphs", response, num_paragraphs=num_paragraphs)


def nth(response, num_paragraphs, nth_paragraph, first_word, loose=False):
    return follows("length_constraints:nth_paragraph_first_word", response, loose=loose,
                   num_paragraphs=num_paragraphs, nth_paragraph=nth_paragraph, first_word=first_word)


@pytest.mark.parametrize("response,first_word,expected", [
    ("Hello, world.\n\nSecond one.", "hello", True),  # trailing punctuation cut
    ("Hello, world.\n\nSecond one.", "Hello", True),  # the expected word is lowercased too
    ('"Hello," she said.\n\nSecond one.', "hello", True),  # a leading double quote is stripped
    ("'Tis the season.\n\nSecond one.", "tis", True),  # a leading single quote is stripped
    ("HELLO!\n\nSecond one.", "hello", True),
    ("Well-known facts.\n\nSecond one.", "well", False),  # "-" is not punctuation here: the word is well-known
    ("Well-known facts.\n\nSecond one.", "well-known", True),
    ("*Hello* world.\n\nSecond one.", "hello", False),  # "*" is not stripped
    # Quirk: single quotes are stripped before double quotes, and the word is cut at the first quote, so "'Twas
    # becomes "'Twas -> 'Twas -> "" and can match nothing.
    ("\"'Twas the night.\n\nSecond one.", "twas", False),
    ("Goodbye.\n\nSecond one.", "hello", False),
])
def test_nth_paragraph_first_word_is_lowercased_with_quotes_and_punctuation_stripped(response, first_word, expected):
    assert nth(response, 2, 1, first_word) is expected


def test_nth_paragraph_first_word_requires_the_paragraph_count_to_be_exact():
    response = "Apple pie.\n\nBanana split.\n\nCherry tart."
    assert nth(response, 3, 2, "banana")
    assert not nth(response, 2, 2, "banana")
    assert not nth(response, 4, 2, "banana")


def test_nth_paragraph_beyond_the_paragraph_count_fails():
    assert not nth("Apple pie.\n\nBanana split.", 3, 3, "apple")


def test_nth_paragraph_indexes_the_raw_split_so_an_extra_blank_paragraph_shifts_it():
    # "\n\n\n\n" splits into ["A", "", "B"]: two non-empty paragraphs, but the 2nd raw entry is the empty one.
    response = "Apple pie.\n\n\n\nBanana split."
    assert not nth(response, 2, 2, "banana")
    assert not nth(response, 3, 3, "banana")  # 3 > two counted paragraphs
    # Three newlines split into ["A", "\nB"]: the stray newline is stripped away.
    assert nth("Apple pie.\n\n\nBanana split.", 2, 2, "banana")


def test_nth_paragraph_sees_the_unstripped_response_in_strict_mode_but_loose_strips_it():
    response = "\n\nApple pie.\n\nBanana split."  # raw split ["", "Apple pie.", "Banana split."]
    assert not nth(response, 2, 1, "apple")
    assert nth(response, 2, 1, "apple", loose=True)  # the loose variants are stripped


# ----------------------------------------------------------------------------------------------------------------------
# detectable format
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("response,count", [
    ("* one\n* two", 2),
    ("- one\n- two\n- three", 3),
    ("* one\n- two", 2),  # both markers count together
    ("**Bold intro**\n* one\n* two", 2),  # "**" at line start is not a star bullet
    ("* **Bold** item", 1),  # but a star bullet may contain bold
    ("  * indented\n    - nested deeper", 2),  # indentation is allowed
    ("Title\n---\n* one", 2),  # quirk: a "---" rule counts as a dash bullet
    ("-5 degrees outside", 1),  # quirk: any line starting with "-" counts
    ("No bullets here.\n***\nNone here either.", 0),  # "***" is neither
    ("1. one\n2. two", 0),  # numbered lists are not bullets
])
def test_bullets_are_lines_starting_with_a_single_star_or_a_dash(response, count):
    assert follows("detectable_format:number_bullet_lists", response, num_bullets=count)
    assert not follows("detectable_format:number_bullet_lists", response, num_bullets=count + 1)
    if count:
        assert not follows("detectable_format:number_bullet_lists", response, num_bullets=count - 1)


@pytest.mark.parametrize("response,expected", [
    ('```json\n{"a": 1}\n```', True),
    ('```JSON\n{"a": 1}\n```', True),
    ('```Json\n{"a": 1}\n```', True),
    ('```\n{"a": 1}\n```', True),  # a bare fence
    ('  {"a": [1, 2]}  ', True),  # plain JSON
    ('```json\n{"a": 1}', True),  # an unclosed fence is fine: removesuffix is a no-op
    ("[1, 2, 3]", True),
    ("42", True),  # any JSON value, not only objects
    ('{"a": 1,}', False),  # invalid JSON
    ("{'a': 1}", False),
    ('```python\n{"a": 1}\n```', False),  # only "json" language tags are removed
    ('Here you go: {"a": 1}', False),
    ('```json\n{"a": 1}\n```\nHope this helps.', False),
])
def test_json_format_accepts_json_optionally_in_a_json_or_bare_fence(response, expected):
    assert follows("detectable_format:json_format", response) is expected


@pytest.mark.parametrize("response,expected", [
    ("<<My Title>>\nBody text.", True),
    ("Body first, then <<A Title>> inline.", True),
    ("<<<Triple>>>", True),
    ("<<>>\nBody text.", False),  # empty title
    ("<< >>\nBody text.", False),  # blank title
    ("<<My\nTitle>>", False),  # a title cannot cross a newline
    ("<My Title>", False),
    ("No title at all.", False),
])
def test_title_needs_a_nonblank_single_line_double_angle_bracket_title(response, expected):
    assert follows("detectable_format:title", response) is expected


@pytest.mark.parametrize("response,count", [
    ("*a*", 1),
    ("**b**", 1),  # the single pattern finds only the empty "**" pairs, the double pattern finds "**b**": once
    ("*a* and **b**", 2),
    ("***b***", 2),  # the only way to count twice: "*b*" (single) and "**b**" (double)
    ("*a* *b* *c*", 3),
    ("* *", 0),  # blank highlights do not count
    ("** **", 0),
    ("*a\nb*", 0),  # a highlight cannot cross a newline
    ("* item one\n* item two", 0),  # bullet stars are not highlights
])
def test_highlights_are_nonblank_star_spans_on_one_line(response, count):
    assert at_least_exactly("detectable_format:number_highlighted_sections", response, "num_highlights", count)


@pytest.mark.parametrize("spliter,response,count", [
    ("Section", "Section 1\nIntro.\nSection 2\nBody.", 2),
    ("SECTION", "SECTION 1\nIntro.\nSECTION 2\nBody.\nSECTION 3\nEnd.", 3),
    ("SECTION", "Section 1\nIntro.\nSection 2\nBody.", 0),  # the splitter is case-sensitive
    ("Section", "Section one\nIntro.\nSection two\nBody.", 0),  # a number must follow
    ("Section", "Section1 Intro. Section2 Body.", 2),  # the space is optional
    (" Section ", "Section 1\nIntro.\nSection 2\nBody.", 2),  # the splitter is stripped
    ("Section", "As Section 3 of the manual says.", 1),  # anywhere, not only at a line start
])
def test_multiple_sections_counts_splitter_followed_by_a_number(spliter, response, count):
    assert at_least_exactly("detectable_format:multiple_sections", response, "num_sections", count,
                            section_spliter=spliter)


@pytest.mark.parametrize("response,expected", [
    ("My answer is yes.", True),
    ("My answer is no.", True),
    ("My answer is maybe.", True),
    ("After some thought... My answer is no. Because reasons.", True),  # containment, not equality
    ("My answer is Yes.", False),  # case-sensitive
    ("my answer is no.", False),
    ("My answer is yes", False),  # the period is part of the option
    ("Yes.", False),
])
def test_constrained_response_must_contain_one_exact_option(response, expected):
    assert follows("detectable_format:constrained_response", response) is expected


# ----------------------------------------------------------------------------------------------------------------------
# detectable content
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("response,count", [
    ("Dear [name], you live at [address].", 2),
    ("An empty [] still counts.", 1),
    ("[[nested]]", 1),  # lazy match "[[nested]" then a stray "]"
    ("[broken\nacross lines]", 0),
    ("No placeholders.", 0),
])
def test_placeholders_are_lazy_square_bracket_spans(response, count):
    assert at_least_exactly("detectable_content:number_placeholders", response, "num_placeholders", count)


@pytest.mark.parametrize("marker,response,expected", [
    ("P.S.", "Thanks.\nP.S. See you soon.", True),
    ("P.S.", "Thanks.\np.s. see you", True),  # case-insensitive
    ("P.S.", "Thanks.\nP. S. See you", True),  # one optional space after each dot
    ("P.S.", "Thanks.\nPS: see you", False),
    ("P.S.", "Thanks.\nP.S see you", False),  # the pattern for "P.S." requires the final dot
    ("P.S.", "Thanks, p.s. I forgot.", True),  # not anchored to a line start
    ("P.P.S", "P.S. one\nP.P.S. two", True),
    ("P.P.S", "Thanks.\nP. P. S bye", True),
    ("P.P.S", "Thanks.\nP.S. bye", False),
    (" P.S. ", "Thanks.\nP. S. bye", True),  # the marker is stripped first, so it gets the "P.S." pattern
    ("Note:", "NOTE: bring water", True),  # other markers are lowercased regexes
    ("Note:", "Bring water.", False),
    ("P.S", "Please pass the salt.", True),  # quirk: "P.S" is not special, so "p.s" is a regex and matches "pas"
])
def test_postscript_markers_follow_the_reference_regexes(marker, response, expected):
    assert follows("detectable_content:postscript", response, postscript_marker=marker) is expected


# ----------------------------------------------------------------------------------------------------------------------
# combination
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("response,expected", [
    ("Answer one.\n******\nAnswer two.", True),
    ("******\nAnswer one.\n******\nAnswer two.\n******", True),  # leading/trailing separators are allowed
    ("Same answer.\n******\nSame answer.", False),  # identical answers fail
    ("Same answer.\n******\n   Same answer.   ", False),  # compared after stripping
    ("One.\n******\nTwo.\n******\nThree.", False),  # three answers fail
    ("One.\n******\n\n******\nTwo.", False),  # an empty middle part fails
    ("Only one answer.", False),
    ("One.\n*******\nTwo.", True),  # quirk: 7 stars split as 6 + a "*" that stays in the 2nd answer
])
def test_two_responses_need_exactly_two_different_answers_split_by_six_stars(response, expected):
    assert follows("combination:two_responses", response) is expected


@pytest.mark.parametrize("prompt_to_repeat,response,expected", [
    ("Write a poem about cats.", "Write a poem about cats. Here it is: meow.", True),
    ("Write a poem about cats.", "  write a POEM about cats.\nMeow.", True),  # case-insensitive, after strip
    ("Write a poem about cats.  ", "Write a poem about cats. Meow.", True),  # the prompt is stripped too
    ("Write a poem about cats.", "Sure! Write a poem about cats.", False),  # must be a prefix
    ("Write a poem about cats.", "Write a poem about dogs.", False),
    ("Write a poem about cats.", "Write a poem", False),
])
def test_repeat_prompt_is_a_case_insensitive_prefix_after_stripping(prompt_to_repeat, response, expected):
    assert follows("combination:repeat_prompt", response, prompt_to_repeat=prompt_to_repeat) is expected


# ----------------------------------------------------------------------------------------------------------------------
# start / end
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("end_phrase,response,expected", [
    ("Any other questions?", "Here is my answer. Any other questions?", True),
    ("Any other questions?", '"Here is my answer. Any other questions?"', True),  # surrounding quotes are stripped
    ("Any other questions?", "Here is my answer. Any other questions?\n\n  ", True),  # trailing whitespace
    ("Any other questions?", "here is my answer. ANY OTHER QUESTIONS?", True),  # case-insensitive
    ("  Any other questions?  ", "Here. Any other questions?", True),  # the phrase is stripped
    ("Any other questions?", "Any other questions? Thanks.", False),  # nothing may follow
    ("Any other questions?", "Any other questions?.", False),
])
def test_end_checker_ignores_case_whitespace_and_wrapping_double_quotes(end_phrase, response, expected):
    assert follows("startend:end_checker", response, end_phrase=end_phrase) is expected


@pytest.mark.parametrize("response,expected", [
    ('"Hello world"', True),
    ('  "Hello world"  \n', True),  # stripped first
    ('""', True),  # quirk: two quote characters are enough
    ("\u201cHello world\u201d", False),  # curly quotes do not count
    ("'Hello world'", False),
    ('"', False),  # a lone quote is too short
    ('"Hello world', False),
    ('**"Hello world"**', False),  # strict: the first character is "*"
])
def test_quotation_needs_straight_double_quotes_at_both_ends(response, expected):
    assert follows("startend:quotation", response) is expected


# ----------------------------------------------------------------------------------------------------------------------
# change case
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("response,count", [
    ("I think NASA's budget is OK for now", 3),  # "I" counts; NASA's -> "NASA" + "'s"
    ("NASA'S plan", 2),  # quirk: "'S" is itself upper case
    ("The U.S. economy grew.", 1),  # "U.S." is one token and isupper()
    ("COVID-19 cases fell", 1),  # hyphenated tokens stay whole; digits are uncased
    ("WELL-KNOWN facts", 1),
    ("A cat sat", 1),  # a one-letter capital word counts
    ("Ok fine 123", 0),
])
def test_capital_words_are_nltk_word_tokenize_tokens_that_are_upper(response, count):
    assert capital_words(response) == count


CAPS_EN = ("THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG. THIS IS A SIMPLE ENGLISH SENTENCE WRITTEN ENTIRELY IN "
           "CAPITAL LETTERS FOR TESTING.")
LOWER_EN = ("the quick brown fox jumps over the lazy dog while the farmer watches from the porch and drinks his "
            "morning coffee.")
CAPS_RU = "ПРИВЕТ МИР. ЭТО ПРОСТОЕ ПРЕДЛОЖЕНИЕ НА РУССКОМ ЯЗЫКЕ, НАПИСАННОЕ ЗАГЛАВНЫМИ БУКВАМИ."
CAPS_FR = "BONJOUR À TOUS. JE SUIS TRÈS HEUREUX DE VOUS VOIR AUJOURD'HUI DANS CETTE BELLE VILLE DE FRANCE."
LOWER_FR = ("bonjour à tous, je suis très heureux de vous voir aujourd'hui dans cette belle ville. nous allons "
            "manger ensemble ce soir.")
FRENCH = ("Bonjour à tous. Je suis très heureux de vous voir aujourd'hui dans cette belle ville. Nous allons manger "
          "ensemble ce soir et parler de nos vacances.")
ENGLISH = ("The weather today is sunny and warm, so we decided to go for a long walk in the park with our friends "
           "and family.")


@pytest.mark.parametrize("response,expected", [
    (CAPS_EN, True),
    (LOWER_EN, False),
    (CAPS_EN[:-1] + "x", False),  # one lowercase letter breaks isupper()
    (CAPS_RU, False),  # all caps, but not English
    (CAPS_FR, False),
    ("12345 67890", False),  # no cased letters: isupper() is False, so langdetect is never asked
    ("OK@EXAMPLE.COM", True),  # upper, and langdetect finds no features (the e-mail is removed): counted as followed
])
def test_english_capital_needs_isupper_and_langdetect_english_or_undecided(response, expected):
    assert follows("change_case:english_capital", response) is expected


@pytest.mark.parametrize("response,expected", [
    (LOWER_EN, True),
    (CAPS_EN, False),
    ("The" + LOWER_EN[3:], False),  # one capital breaks islower()
    (LOWER_FR, False),  # all lowercase, but French
    ("12345 67890", False),  # no cased letters: islower() is False
    ("ok@example.com", True),  # lower, and langdetect cannot decide: counted as followed
])
def test_english_lowercase_needs_islower_and_langdetect_english_or_undecided(response, expected):
    assert follows("change_case:english_lowercase", response) is expected


@pytest.mark.parametrize("language,response,expected", [
    ("fr", FRENCH, True),
    ("en", FRENCH, False),
    ("en", ENGLISH, True),
    ("fr", ENGLISH, False),
    ("ja", "12345 67890", True),  # langdetect cannot decide: counted as followed
])
def test_response_language_is_what_langdetect_says_or_followed_when_it_cannot_tell(language, response, expected):
    assert follows("language:response_language", response, language=language) is expected


# ----------------------------------------------------------------------------------------------------------------------
# punctuation
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("response,expected", [
    ("Apples, pears.", False),
    ("A number like 1,000", False),
    ("Apples\uff0c pears.", True),  # the full-width comma is not the ASCII comma
    ("Apples; pears.", True),
    ("Apples and pears.", True),
])
def test_no_comma_forbids_only_the_ascii_comma(response, expected):
    assert follows("punctuation:no_comma", response) is expected


# ----------------------------------------------------------------------------------------------------------------------
# empty responses
# ----------------------------------------------------------------------------------------------------------------------

def test_every_instruction_id_has_empty_satisfying_kwargs_here():
    assert set(EMPTY_SATISFYING_KWARGS) == ALL_IDS


@pytest.mark.parametrize("instruction_id", sorted(ALL_IDS))
@pytest.mark.parametrize("response", ["", "   ", " \n\t\n "], ids=["empty", "spaces", "whitespace"])
@pytest.mark.parametrize("loose", [False, True], ids=["strict", "loose"])
def test_an_empty_or_whitespace_response_follows_no_instruction(instruction_id, response, loose):
    kwargs = EMPTY_SATISFYING_KWARGS[instruction_id]
    assert verify_lib.ifeval_follows(instruction_id, kwargs, response, loose=loose) is False


def test_the_empty_response_guard_is_what_fails_them_not_the_check():
    # The same kwargs pass on a non-empty response that satisfies them in the same way.
    assert follows("punctuation:no_comma", "fine")
    assert follows("keywords:forbidden_words", "fine", forbidden_words=["cat"])
    assert follows("length_constraints:number_words", "...", num_words=1, relation="less than")


# ----------------------------------------------------------------------------------------------------------------------
# loose mode
# ----------------------------------------------------------------------------------------------------------------------

def test_loose_drops_a_chatty_first_line():
    response = "Sure, here it is:\nNo commas in this part at all"
    assert not follows("punctuation:no_comma", response)
    assert follows("punctuation:no_comma", response, loose=True)


def test_loose_drops_a_chatty_last_line():
    response = "My reply. Any other questions?\n(Let me know if you need more.)"
    assert not follows("startend:end_checker", response, end_phrase="Any other questions?")
    assert follows("startend:end_checker", response, loose=True, end_phrase="Any other questions?")


def test_loose_drops_first_and_last_lines_together():
    response = "Sure, here it is:\nNo commas here\nHope that helps, bye"
    assert not follows("punctuation:no_comma", response)
    assert follows("punctuation:no_comma", response, loose=True)


def test_loose_does_not_rescue_a_problem_in_a_middle_line():
    response = "First line\nA, B\nLast line"
    assert not follows("punctuation:no_comma", response, loose=True)


def test_loose_does_not_rescue_a_single_line_response():
    # Dropping the only line leaves "", which the loose evaluator skips.
    assert not follows("punctuation:no_comma", "Yes, really.", loose=True)


def test_loose_removes_asterisks_so_a_bolded_quotation_passes():
    response = '**"Hello world"**'
    assert not follows("startend:quotation", response)
    assert follows("startend:quotation", response, loose=True)  # response.replace("*", "") is '"Hello world"'


def test_loose_drops_a_preamble_before_a_json_fence():
    response = 'Here is the JSON:\n```json\n{"a": 1}\n```'
    assert not follows("detectable_format:json_format", response)
    assert follows("detectable_format:json_format", response, loose=True)


def test_loose_combines_dropping_a_line_and_removing_asterisks():
    response = 'Here you go:\n**"Quoted answer"**'
    assert not follows("startend:quotation", response)
    assert not follows("startend:quotation", response.replace("*", ""))  # first line still there
    assert follows("startend:quotation", response, loose=True)


def test_loose_never_turns_a_strict_pass_into_a_fail():
    response = "* one\n* two"
    assert follows("detectable_format:number_bullet_lists", response, num_bullets=2)
    assert follows("detectable_format:number_bullet_lists", response, loose=True, num_bullets=2)


# ----------------------------------------------------------------------------------------------------------------------
# kwargs
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("instruction_id", sorted(ALL_IDS))
def test_kwargs_with_every_ifeval_key_null_equal_kwargs_with_only_the_relevant_keys(instruction_id):
    relevant = EMPTY_SATISFYING_KWARGS[instruction_id]
    assert set(relevant) <= set(IFEVAL_KWARG_KEYS)
    padded = {key: None for key in IFEVAL_KWARG_KEYS} | relevant
    for response in ["Hello, world.", "<<T>>\n* a\n* b", '"quoted"']:
        assert verify_lib.ifeval_follows(instruction_id, padded, response) == \
            verify_lib.ifeval_follows(instruction_id, relevant, response)


def test_padded_kwargs_still_decide_correctly():
    padded = {key: None for key in IFEVAL_KWARG_KEYS} | {"num_words": 3, "relation": "at least"}
    assert verify_lib.ifeval_follows("length_constraints:number_words", padded, "one two three")
    assert not verify_lib.ifeval_follows("length_constraints:number_words", padded, "one two")


@pytest.mark.parametrize("kwargs", [None, {}, {key: None for key in IFEVAL_KWARG_KEYS}])
def test_an_instruction_without_kwargs_accepts_none_empty_or_all_null(kwargs):
    assert verify_lib.ifeval_follows("punctuation:no_comma", kwargs, "No commas.")
    assert not verify_lib.ifeval_follows("punctuation:no_comma", kwargs, "Yes, commas.")


def test_an_unknown_instruction_id_raises_naming_it():
    with pytest.raises(ValueError, match="punctuation:no_semicolon"):
        verify_lib.ifeval_follows("punctuation:no_semicolon", {}, "text")


@pytest.mark.parametrize("instruction_id,kwargs,missing", [
    ("length_constraints:number_words", {"num_words": 3}, "relation"),
    ("length_constraints:number_words", {"relation": "at least"}, "num_words"),
    ("keywords:frequency", {"frequency": 2, "relation": "at least"}, "keyword"),
    ("keywords:existence", {}, "keywords"),
    ("length_constraints:number_words", {"num_words": 3, "relation": None}, "relation"),  # null is missing
])
def test_a_missing_kwarg_raises_naming_it(instruction_id, kwargs, missing):
    with pytest.raises(ValueError, match=named(missing)):
        verify_lib.ifeval_follows(instruction_id, kwargs, "text")


@pytest.mark.parametrize("instruction_id,kwargs,bad", [
    ("length_constraints:number_words", {"num_words": "100", "relation": "at least"}, "num_words"),
    ("length_constraints:number_words", {"num_words": True, "relation": "at least"}, "num_words"),
    ("length_constraints:number_words", {"num_words": 1.5, "relation": "at least"}, "num_words"),
    ("length_constraints:number_words", {"num_words": -1, "relation": "at least"}, "num_words"),
    ("length_constraints:number_words", {"num_words": 100, "relation": "more than"}, "relation"),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "at most"}, "relation"),
    ("change_case:capital_word_frequency", {"capital_frequency": False, "capital_relation": "at least"},
     "capital_frequency"),
    ("keywords:existence", {"keywords": "cat"}, "keywords"),  # a string is not a list of keywords
    ("keywords:letter_frequency", {"letter": "ab", "let_frequency": 1, "let_relation": "at least"}, "letter"),
])
def test_a_wrongly_typed_kwarg_raises_naming_it(instruction_id, kwargs, bad):
    with pytest.raises(ValueError, match=named(bad)):
        verify_lib.ifeval_follows(instruction_id, kwargs, "text")


@pytest.mark.parametrize("nth_paragraph", [0, 3])
def test_an_nth_paragraph_the_reference_would_randomise_raises(nth_paragraph):
    # The reference replaces nth_paragraph <= 0 or > num_paragraphs with random.randint(1, num_paragraphs + 1);
    # verify_lib's stated policy is to raise where the reference would draw a random value.
    with pytest.raises(ValueError, match=named("nth_paragraph")):
        verify_lib.ifeval_follows("length_constraints:nth_paragraph_first_word",
                                  {"num_paragraphs": 2, "nth_paragraph": nth_paragraph, "first_word": "apple"},
                                  "Apple pie.\n\nBanana split.")


def test_an_unexpected_kwarg_raises():
    # The reference's build_description would reject an unknown keyword argument too.
    with pytest.raises(ValueError, match=named("num_bullets")):
        verify_lib.ifeval_follows("length_constraints:number_words",
                                  {"num_words": 3, "relation": "at least", "num_bullets": 2}, "text")


# ----------------------------------------------------------------------------------------------------------------------
# score_ifeval
# ----------------------------------------------------------------------------------------------------------------------

ROWS = [
    {"key": 1, "prompt": "Count to four without commas.",
     "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
     "kwargs": [{}, {"num_words": 3, "relation": "at least"}]},
    {"key": 2, "prompt": "A titled poem.", "instruction_id_list": ["detectable_format:title"], "kwargs": [{}]},
    {"key": 3, "prompt": "Quote something about the moon.",
     "instruction_id_list": ["startend:quotation", "keywords:existence"],
     "kwargs": [{}, {"keywords": ["moon"]}]},
]
RESPONSES = [
    "Sure, here it is:\nOne two three four",  # comma only in the first line: strict [F, T], loose [T, T]
    "<<Poem>>\nRoses are red.",  # [T] / [T]
    "The moon is bright.",  # no quotes even loosely: [F, T] / [F, T]
]


def test_score_ifeval_computes_the_four_metrics():
    scores = verify_lib.score_ifeval(ROWS, RESPONSES)
    assert scores["prompt_strict"] == pytest.approx(1 / 3)  # only row 2 follows everything
    assert scores["inst_strict"] == pytest.approx(3 / 5)
    assert scores["prompt_loose"] == pytest.approx(2 / 3)  # rows 1 and 2
    assert scores["inst_loose"] == pytest.approx(4 / 5)


def test_score_ifeval_reports_per_prompt_verdicts():
    per_prompt = verify_lib.score_ifeval(ROWS, RESPONSES)["per_prompt"]
    assert [p["key"] for p in per_prompt] == [1, 2, 3]
    assert [p["instruction_id_list"] for p in per_prompt] == [r["instruction_id_list"] for r in ROWS]
    assert [p["strict"] for p in per_prompt] == [[False, True], [True], [False, True]]
    assert [p["loose"] for p in per_prompt] == [[True, True], [True], [False, True]]


def test_score_ifeval_groups_accuracy_by_instruction_and_by_category():
    scores = verify_lib.score_ifeval(ROWS, RESPONSES)
    assert scores["per_instruction"]["punctuation:no_comma"] == {"strict": 0.0, "loose": 1.0, "total": 1}
    assert scores["per_instruction"]["startend:quotation"] == {"strict": 0.0, "loose": 0.0, "total": 1}
    assert set(scores["per_instruction"]) == {i for r in ROWS for i in r["instruction_id_list"]}
    assert scores["per_category"] == {
        "detectable_format": {"strict": 1.0, "loose": 1.0, "total": 1},
        "keywords": {"strict": 1.0, "loose": 1.0, "total": 1},
        "length_constraints": {"strict": 1.0, "loose": 1.0, "total": 1},
        "punctuation": {"strict": 0.0, "loose": 1.0, "total": 1},
        "startend": {"strict": 0.0, "loose": 0.0, "total": 1},
    }


@pytest.mark.parametrize("responses", [RESPONSES[:2], RESPONSES + ["extra"]])
def test_score_ifeval_rejects_a_response_count_that_differs_from_the_rows(responses):
    with pytest.raises(ValueError):
        verify_lib.score_ifeval(ROWS, responses)


def test_score_ifeval_rejects_a_row_whose_ids_and_kwargs_differ_in_length():
    row = dict(ROWS[0], kwargs=[{}])
    with pytest.raises(ValueError):
        verify_lib.score_ifeval([row], ["text"])
