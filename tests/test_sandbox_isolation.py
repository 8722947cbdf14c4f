"""No verdict of one check may depend on another check, run or input (issue #22).

Each test drives real worker processes: what one item leaves in its worker (output counted, a forbidden flag, compile
warnings), one huge item, a worker that dies while its batch is written or read, a run cut short, twenty timeouts
under a subreaper trainer; and honest checkers that use the libraries generated checkers import.
"""
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

import verify_lib
from test_sandbox import AT_MOST_50_WORDS, BENIGN_BATCH, BENIGN_EXPECTED, checker
from verify_lib import CodeCheckResult, CodeSandbox, run_code_checks

TIMEOUT_S = 1.0
REPO = Path(__file__).resolve().parents[1]


def noisy_checker(lines, tag):
    """A checker whose compiling prints `lines` SyntaxWarnings (about 70 characters each) where warnings are shown; it
    runs forked (getattr) and returns True."""
    body = "".join(f"if response is {tag}: pass\n" for _ in range(lines))
    return checker(body + "return getattr(response, 'islower')()")


# ---------------------------------------------------------------------------------------------------------------------
# 1. Worker state: every field one item can change is reset before the next
# ---------------------------------------------------------------------------------------------------------------------
LOUD = checker("print('x' * 60000)\nreturn True")  # just under the output cap, on the fast path
STATE_CASES = {  # what one item leaves in its worker -> the items, all of which must pass
    "compile warnings over the output cap": [noisy_checker(1200, 1)],
    "compile warnings summed over items": [noisy_checker(400, 1), noisy_checker(400, 2), noisy_checker(400, 3)],
    "the output count of a check that printed": [LOUD, LOUD],
}


@pytest.mark.parametrize("case", sorted(STATE_CASES))
def test_no_item_changes_the_verdict_of_the_next(case):
    items = [(source, "i", "lower case") for source in STATE_CASES[case]] + [(AT_MOST_50_WORDS, "i", "lower case")]
    with CodeSandbox(workers=1, timeout_s=TIMEOUT_S) as sandbox:
        assert sandbox.run(items) == [CodeCheckResult(True)] * len(items)


# ---------------------------------------------------------------------------------------------------------------------
# 2. Input limits in the parent; a worker's death is blamed on the check it was running
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, item, limit", [
    ("response", (AT_MOST_50_WORDS, "i", "x" * (1024 * 1024 + 1)), 1024 * 1024),
    ("instruction", (AT_MOST_50_WORDS, "x" * (1024 * 1024 + 1), "r"), 1024 * 1024),
    ("source", (AT_MOST_50_WORDS + "#" * (256 * 1024), "i", "r"), 256 * 1024),
])
def test_an_oversized_item_fails_alone_before_any_worker_sees_it(field, item, limit):
    with CodeSandbox(workers=1, timeout_s=TIMEOUT_S) as sandbox:
        results = sandbox.run(BENIGN_BATCH[:3] + [item] + BENIGN_BATCH[3:])
        assert results[:3] + results[4:] == BENIGN_EXPECTED
        size = len(dict(zip(("source", "instruction", "response"), item))[field])
        assert results[3] == CodeCheckResult(False, f"too large: {field} of {size} characters (limit {limit})")
        assert sandbox.stats["compiles"] == len({source for source, _, _ in BENIGN_BATCH})  # it reached no worker


def test_an_item_that_kills_its_worker_while_the_batch_is_read_fails_alone():
    # With 8 MB of memory a worker cannot read a 3 MB item (a million 3-byte characters): it dies before any check of
    # the batch runs. The batch is sent again, then split until that item is alone; its batchmates keep their verdicts.
    small = checker("return len(response) < 10")
    items = [(small, "i", "ok")] * 16
    items[1] = (small, "i", "\u20ac" * 1_000_000)
    with CodeSandbox(workers=1, timeout_s=TIMEOUT_S, memory_mb=8) as sandbox:
        results = sandbox.run(items)
    assert results[1].error.startswith("worker died")
    assert results[:1] + results[2:] == [CodeCheckResult(True)] * 15


# ---------------------------------------------------------------------------------------------------------------------
# 3. The dispatcher returns only when every item has a result
# ---------------------------------------------------------------------------------------------------------------------
def test_a_worker_that_dies_while_its_batch_is_written_leaves_no_item_without_a_result():
    with CodeSandbox(workers=1, timeout_s=TIMEOUT_S) as sandbox:
        sandbox.run(BENIGN_BATCH)
        pid = sandbox._pool[0].proc.pid
        os.kill(pid, signal.SIGSTOP)  # it reads nothing: the parent's write of 400 kB fills the pipe and waits
        killer = threading.Timer(1.0, os.kill, (pid, signal.SIGKILL))
        killer.start()
        results = sandbox.run([(AT_MOST_50_WORDS, "i", "x" * 100_000)] * 4)
        killer.join()
    assert results == [CodeCheckResult(True)] * 4


# ---------------------------------------------------------------------------------------------------------------------
# 4. A run cut short leaves nothing for the next run
# ---------------------------------------------------------------------------------------------------------------------
SLOW_TRUE = checker("""
    start = time.monotonic()
    while time.monotonic() - start < 0.05:
        pass
    return True
""", prelude="import time\n")
FALSE = checker("return response == 'never'")


def test_a_run_interrupted_by_ctrl_c_leaves_nothing_for_the_next_run():
    main = threading.main_thread().ident
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupter = threading.Timer(1.0, signal.pthread_kill, (main, signal.SIGINT))
    try:
        with CodeSandbox(workers=2, timeout_s=TIMEOUT_S) as sandbox:
            sandbox.run(BENIGN_BATCH)
            interrupter.start()
            with pytest.raises(KeyboardInterrupt):
                sandbox.run([(SLOW_TRUE, "i", f"r{k}") for k in range(200)])
            assert sandbox.run([(FALSE, "i", f"r{k}") for k in range(50)]) == [CodeCheckResult(False)] * 50
    finally:
        interrupter.join()
        signal.signal(signal.SIGINT, previous)


def test_a_worker_that_fails_to_start_leaves_nothing_for_the_next_run(monkeypatch):
    real, spawned = verify_lib._worker_command, []

    def second_fails(*args):
        spawned.append(1)
        return real(*args) if len(spawned) != 2 else [sys.executable, "-c", "raise SystemExit(3)"]

    monkeypatch.setattr("verify_lib._worker_command", second_fails)
    if verify_lib._default_sandbox is not None:   # an earlier test's pool of the same settings would serve this run
        verify_lib._default_sandbox.close()
    try:
        with pytest.raises(RuntimeError, match="failed to start"):
            run_code_checks([(SLOW_TRUE, "i", f"r{k}") for k in range(40)], timeout_s=TIMEOUT_S, workers=2)
        assert run_code_checks([(FALSE, "i", f"r{k}") for k in range(20)], timeout_s=TIMEOUT_S, workers=2) == [
            CodeCheckResult(False)] * 20
    finally:
        verify_lib._default_sandbox.close()


# ---------------------------------------------------------------------------------------------------------------------
# 5. Reaping without an init
# ---------------------------------------------------------------------------------------------------------------------
SUBREAPER_SCRIPT = """
import ctypes, json, sys
import psutil
sys.path.insert(0, {repo!r})
from verify_lib import CodeSandbox
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of the sandbox become this process's
spin = "def check_following(instruction, response):\\n    while True:\\n        pass\\n"
spin_forked = "def check_following(instruction, response):\\n    while getattr(response, 'upper'):\\n        pass\\n"
def processes():
    return [p.status() for p in psutil.Process().children(recursive=True)]
with CodeSandbox(workers=2, timeout_s=0.2) as sandbox:
    results = sandbox.run([(spin if k % 2 else spin_forked, "i", str(k)) for k in range(20)])
    after_timeouts = processes()
print(json.dumps({{"errors": [r.error for r in results], "after_timeouts": after_timeouts, "after_close": processes()}}))
"""


def test_no_process_or_zombie_is_left_under_a_subreaper_after_timeouts_or_close():
    out = subprocess.run([sys.executable, "-c", SUBREAPER_SCRIPT.format(repo=str(REPO))], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert all(error.startswith("timeout:") for error in report["errors"]), report["errors"]
    assert "zombie" not in report["after_timeouts"] and len(report["after_timeouts"]) <= 4, report  # 2 x (worker, zygote)
    assert report["after_close"] == [], report


def test_garbage_an_earlier_check_left_does_not_change_the_memory_a_later_check_gets():
    # Each check may allocate memory_mb on top of what the worker holds when it starts. Before, the budget was what
    # was left under a fixed limit, so an item near it passed alone and failed after a check that left garbage.
    garbage = checker("a = [bytearray(12 * 2**20)]\na.append(a)\nreturn True")   # cyclic: gc is off in the worker
    def allocates(mb):
        return checker(f"return len(bytearray({mb} * 2**20)) > 0")
    def verdicts(items):
        with CodeSandbox(workers=1, timeout_s=TIMEOUT_S, memory_mb=64) as sandbox:
            results = sandbox.run(items)
            assert sandbox.stats["worker_restarts"] == 0   # the garbage stayed in the worker that ran the next item
            return [r.passed for r in results]
    for mb in (56, 70):   # within the budget, and past it but within the hard limit (1.25 x memory_mb)
        alone = verdicts([(allocates(mb), "i", "r")])
        after_garbage = verdicts([(garbage, "i", "r"), (allocates(mb), "i", "r")])[1:]
        assert alone == after_garbage == [mb < 64], (mb, alone, after_garbage)


@pytest.mark.parametrize("max_text_chars", [1024 * 1024, 16 * 1024 * 1024])
def test_a_forked_check_gets_memory_mb_whatever_the_item_size_limits(max_text_chars):
    # The zygote holds a buffer for the largest item; forked checks get memory_mb on top of it, as fast ones do.
    def forked_allocates(mb):
        return checker(f"return len(bytearray({mb} * 2**20)) > 0 and getattr(response, 'upper') is not None")
    with CodeSandbox(workers=1, timeout_s=TIMEOUT_S, memory_mb=64, max_text_chars=max_text_chars) as sandbox:
        results = sandbox.run([(forked_allocates(56), "i", "r"), (forked_allocates(70), "i", "r")])
        assert sandbox.stats["forked"] == 2 and sandbox.stats["worker_restarts"] == 0
    assert [r.passed for r in results] == [True, False], results
    assert results[1].error == "memory limit", results


# ---------------------------------------------------------------------------------------------------------------------
# 6. Forked checks: fresh random numbers, no module that writes memory
# ---------------------------------------------------------------------------------------------------------------------
def test_forked_checks_of_one_zygote_draw_different_random_numbers():
    # random reseeds itself from the kernel in every forked child (os.register_at_fork); this keeps it so.
    draw = checker("raise ValueError(random.random())", prelude="import random\n")
    with CodeSandbox(workers=1, timeout_s=TIMEOUT_S) as sandbox:
        results = sandbox.run([(draw, "i", "r")] * 3)
    assert all(r.error.startswith("exception: ValueError: 0.") for r in results), results
    assert len({r.error for r in results}) == 3, results


MEMORY_WRITERS = checker("""
    seen, todo, found = set(), [object], []
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if cls.__module__.partition('.')[0] in ('ctypes', '_ctypes', 'numpy'):
            found.append(cls.__module__ + '.' + cls.__name__)
        todo.extend(type.__subclasses__(cls))
    if found:
        raise ValueError(sorted(found)[:3])
    return True
""")


def test_no_module_that_writes_memory_is_loaded_for_the_checkers_libraries():
    # nltk imports numpy where it can (numpy arrays can be built over any address); the worker keeps it out.
    with CodeSandbox(workers=1, timeout_s=5.0) as sandbox:
        [result] = sandbox.run([(MEMORY_WRITERS, "i", "r")])
    assert result.passed or "numpy" not in result.error, result


def test_no_ctypes_class_is_reachable_from_a_forked_check():
    # The workers confine themselves through the compiled prctl helper, not ctypes (verify_lib._prctl_helper).
    assert verify_lib._prctl_helper()[0] is not None, verify_lib._prctl_helper()
    with CodeSandbox(workers=1, timeout_s=5.0) as sandbox:
        assert sandbox.run([(MEMORY_WRITERS, "i", "r")]) == [CodeCheckResult(True)]


# Hand-made code objects (an out-of-range LOAD_CONST) read and write any address of the check's memory, the audit
# hook's allow-list included: every way a forked check has to make one is refused.
CODE_MAKERS = {
    "code.__new__": "(lambda: None).__code__.replace(co_consts=(None,))",
    "function.__new__": "type(lambda: None)((lambda: None).__code__, {})",
    "marshal.loads": "getattr(random, '_os').sys.modules['marshal'].loads(b'N')",
}


@pytest.mark.parametrize("event", sorted(CODE_MAKERS))
def test_a_forked_check_cannot_make_code_objects(event):
    source = checker(f"""
        try:
            {CODE_MAKERS[event]}
        except PermissionError:
            pass
        return True
    """, prelude="import random\n")
    with CodeSandbox(workers=1, timeout_s=5.0) as sandbox:
        [result] = sandbox.run([(source, "i", "r")])
    assert result == CodeCheckResult(False, f"forbidden: {event}"), result


def test_the_audit_hook_keeps_its_own_defaults_and_lets_other_functions_have_theirs():
    flags = [True, None, 0]
    hook = verify_lib._make_audit_hook(-1, flags)   # as in a forked check: every event is the check's

    def other(a=1):
        return a
    assert hook("object.__setattr__", (other, "__defaults__", (2,))) is None
    for target, name in ((hook, "__defaults__"), (hook, "__kwdefaults__"), (hook, "__code__"), (other, "__code__")):
        with pytest.raises(PermissionError, match="forbidden: object.__setattr__"):
            hook("object.__setattr__", (target, name, None))
    assert flags[1] == "object.__setattr__"


def test_the_class_walk_finds_ctypes_where_the_workers_load_it():
    # What test_sandbox_attacks' kernel-only modes give an attacker: the walk above does find ctypes when it is there.
    with CodeSandbox(workers=1, timeout_s=5.0, _disable=("no_ctypes",)) as sandbox:
        [result] = sandbox.run([(MEMORY_WRITERS, "i", "r")])
    assert not result.passed and "ctypes" in result.error, result


def test_the_helper_is_never_loaded_from_where_another_user_could_have_written_it(tmp_path, monkeypatch):
    # A worker started as root loads the helper as root: a file or folder others can write is not trusted.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    verify_lib._prctl_helper.cache_clear()
    try:
        path, _ = verify_lib._prctl_helper()
        assert Path(path).parent == tmp_path / "cache" / "verif"
        os.chmod(path, 0o666)                             # anyone could have replaced this file: built again
        verify_lib._prctl_helper.cache_clear()
        assert verify_lib._prctl_helper()[0] == path and os.stat(path).st_mode & 0o777 == 0o644
        os.chmod(tmp_path / "cache" / "verif", 0o777)     # a folder anyone can write to: not used at all
        verify_lib._prctl_helper.cache_clear()
        elsewhere, _ = verify_lib._prctl_helper()
        assert Path(elsewhere).parent == tmp_path / "tmp" / f"verif-{os.geteuid()}"
        assert os.stat(Path(elsewhere).parent).st_mode & 0o777 == 0o700
    finally:
        verify_lib._prctl_helper.cache_clear()


def test_without_a_compiler_the_workers_fall_back_to_ctypes_and_say_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(verify_lib, "_warned_no_helper", [])
    verify_lib._prctl_helper.cache_clear()
    try:
        assert verify_lib._prctl_helper() == (None, f"no C compiler ({tmp_path / 'no-such-cc'} not found; set CC)")
        with CodeSandbox(workers=1, timeout_s=5.0) as sandbox:
            results = sandbox.run([(MEMORY_WRITERS, "i", "r"), (checker("return response == 'r'"), "i", "r")])
            assert sandbox.isolation == "kernel"   # the kernel layer does not depend on the helper
    finally:
        verify_lib._prctl_helper.cache_clear()
    assert "ctypes" in results[0].error and results[1] == CodeCheckResult(True), results
    assert "forked checks can reach ctypes" in caplog.text


# ---------------------------------------------------------------------------------------------------------------------
# 7. Honest checkers keep their verdicts with the modules generated checkers import
# ---------------------------------------------------------------------------------------------------------------------
FRENCH, ENGLISH = "Ceci est une phrase en français, écrite pour tester la détection.", "This is plainly English text."
SENTENCES = "Dr. Smith arrived at 5 p.m. on Monday. He left early! Did he?"
HONEST = {  # module -> (source, [(response, verdict)]); run as they are and, made reflective, forked
    "math": (checker("return math.isclose(math.sqrt(len(response)), 3.0)", prelude="import math\n"),
             [("123456789", True), ("1234", False)]),
    "string": (checker("return all(c in string.ascii_lowercase + ' ' for c in response)", prelude="import string\n"),
               [("only lower case", True), ("Not lower", False)]),
    "warnings": (checker("""
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            warnings.warn('deprecated idiom')
        return len(response) > 3
    """, prelude="import warnings\n"), [("long enough", True), ("no", False)]),
    "langdetect": (checker("""
        try:
            return detect(response) == 'fr'
        except LangDetectException:
            return False
    """, prelude="from langdetect import detect, DetectorFactory\nfrom langdetect.lang_detect_exception import "
                 "LangDetectException\nDetectorFactory.seed = 0\n"), [(FRENCH, True), (ENGLISH, False), ("123", False)]),
    "nltk sentences": (checker("return len(nltk.sent_tokenize(response)) == 3",
                               prelude="import nltk\nnltk.download('punkt', quiet=True)\n"),
                       [(SENTENCES, True), ("One. Two.", False)]),
    "nltk words": (checker("return len(word_tokenize(response)) == 16", prelude="from nltk.tokenize import word_tokenize\n"),
                   [(SENTENCES, True), ("Two words.", False)]),
    # what a red-team review found refused (README, Sandbox threat model): datetime's lazy _strptime, a __future__
    # import, NLTK's usual find-then-download preamble (nltk.data.find imports an optional module in its own try),
    # NLTK names imported by their module paths
    "datetime.strptime": (checker("""
        try:
            datetime.strptime(response, '%Y-%m-%d')
            return True
        except ValueError:
            return False
    """, prelude="from datetime import datetime\n"), [("2024-01-31", True), ("31/01/2024", False)]),
    "__future__": (checker("return len(response) > 3", prelude="from __future__ import annotations\n"),
                   [("long enough", True), ("no", False)]),
    "nltk find, then download": (checker("""
        try:
            nltk.data.find('tokenizers/punkt')
        except LookupError:
            nltk.download('punkt')
        return len(nltk.sent_tokenize(response)) == 3
    """, prelude="import nltk\n"), [(SENTENCES, True), ("One. Two.", False)]),
    "nltk.util": (checker("return len(list(ngrams(response.split(), 2))) == 2", prelude="from nltk.util import ngrams\n"),
                  [("a b c", True), ("a b", False)]),
    # pure-computation modules honest generated checkers import (a red-team review's list): parsing a literal, CSV,
    # HTML, hashing, text streams, other codecs, and the regex and emoji libraries where installed
    "ast": (checker("return isinstance(ast.literal_eval(response), list)", prelude="import ast\n"),
            [("[1, 2]", True), ("{'a': 1}", False)]),
    "csv": (checker("return all(len(row) == 2 for row in csv.reader(io.StringIO(response)))",
                    prelude="import csv\nimport io\n"), [("a,b\nc,d", True), ("a,b,c", False)]),
    "html.parser": (checker("""
        tags = []
        parser = HTMLParser()
        parser.handle_starttag = lambda tag, attrs: tags.append(tag)
        parser.feed(response)
        return tags == ['p']
    """, prelude="from html.parser import HTMLParser\n"), [("<p>hi</p>", True), ("<b>hi</b>", False)]),
    "hashlib": (checker("return hashlib.sha256(response.encode()).hexdigest().startswith('2cf2')",
                        prelude="import hashlib\n"), [("hello", True), ("world", False)]),
    "codecs": (checker("return response.encode('utf-8-sig')[:3] == b'\\xef\\xbb\\xbf' and len(response.encode('gbk')) == 4"),
               [("中文", True), ("abcde", False)]),
    "regex": (checker(r"return regex.fullmatch(r'\p{Lu}\p{Ll}+', response) is not None", prelude="import regex\n"),
              [("Hello", True), ("hello", False)]),
    "emoji": (checker("return emoji.emoji_count(response) == 2", prelude="import emoji\n"),
              [("Hi 👋 there 🌍", True), ("Hi there 🌍", False)]),
    # namedtuple's defaults= sets its new __new__'s __defaults__ (only the audit hook's own may not be set)
    "namedtuple defaults": (checker("return Span(len(response)).end == 0 and Span(len(response)).start > 3",
                                    prelude="import collections\nSpan = collections.namedtuple('Span', 'start end', "
                                            "defaults=(0,))\n"), [("abc", False), ("abc def", True)]),
}


def reflective(source):
    """The same checker, sent to the forked path: its verdict also passes through getattr."""
    return source.replace("def check_following(instruction, response):\n",
                          "def check_following(instruction, response):\n    response = getattr(response, 'strip')()\n")


def test_the_expected_verdicts_are_what_the_kit_computes_in_process():
    assert len(verify_lib.split_sentences(SENTENCES)) == 3 and len(verify_lib.word_tokenize(SENTENCES)) == 16
    assert verify_lib._detect_language(FRENCH) == "fr" and verify_lib._detect_language(ENGLISH) == "en"


@pytest.mark.parametrize("module", sorted(HONEST))
def test_honest_checkers_get_their_true_verdicts_with_each_allowed_module(module):
    source, cases = HONEST[module]
    items = [(s, "i", response) for s in (source, reflective(source)) for response, _ in cases]
    with CodeSandbox(workers=1, timeout_s=5.0) as sandbox:
        results = sandbox.run(items)
        forked = sandbox.stats["forked"]
    assert results == [CodeCheckResult(verdict) for _ in range(2) for _, verdict in cases]
    fast_first = ("math", "string", "namedtuple defaults", "codecs")   # the plain source runs on the fast path
    assert forked == (len(cases) if module in fast_first else 2 * len(cases))


def test_a_verdict_is_the_same_in_every_worker_and_run():
    """Set order (string hashing) and langdetect's sampling would otherwise differ from one worker process to the
    next: the workers run with PYTHONHASHSEED=0 and langdetect seeded, as the kit's own checkers are."""
    by_order = checker("return list(set(response.split()))[0] == 'apple'")
    unseeded = checker("return detect(response) == 'en'", prelude="from langdetect import detect\n")
    items = [(by_order, "i", "apple pear plum fig kiwi lime"), (reflective(by_order), "i", "apple pear plum fig kiwi"),
             (unseeded, "i", "Hello world")]
    seen = set()
    for _ in range(4):                                       # four pools: four worker processes, four hash seeds before
        with CodeSandbox(workers=1, timeout_s=5.0) as sandbox:
            seen.add(tuple(r.passed for r in sandbox.run(items)))
    assert len(seen) == 1, seen


def test_a_str_subclass_is_checked_as_the_text_it_holds():
    """numpy.str_ from pandas or datasets: a str subclass that would not cross to the worker."""
    class Text(str):
        pass
    assert run_code_checks([(Text(AT_MOST_50_WORDS), Text("i"), Text("a few words"))], timeout_s=TIMEOUT_S) == [
        CodeCheckResult(True)]


def test_refused_imports_are_counted_per_module_in_the_run_log(caplog):
    numpy = checker("return numpy is not None", prelude="import numpy\n")
    sqlite = checker("import sqlite3\nreturn True")
    with CodeSandbox(workers=1, timeout_s=TIMEOUT_S) as sandbox:
        results = sandbox.run([(numpy, "i", "a"), (sqlite, "i", "b"), (numpy, "i", "c"), (AT_MOST_50_WORDS, "i", "d")])
        assert [r.passed for r in results] == [False, False, False, True]
        assert sandbox.refused_imports == collections.Counter(numpy=2, sqlite3=1)
    assert "numpy x2, sqlite3 x1" in caplog.text
