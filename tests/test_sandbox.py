"""Specification of the sandbox for LLM-written checker code (`check_following(instruction, response) -> bool`).

Hostile checkers must fail with a reason, within the time limit plus a small margin, leave no file or process behind,
and leave the pool giving exact verdicts on the next checks; realistic checkers must get the verdicts plain Python
gives them.
"""
import os
import signal
import sys
import socket
import textwrap
import time

import psutil
import pytest

import verify_lib

from verify_lib import CodeCheckResult, CodeSandbox, SandboxUnavailable, run_code_checks

TIMEOUT_S = 1.0
MARGIN_S = 1.5  # worker replacement plus a loaded machine
TEST_PID = os.getpid()
TESTS_STARTED = time.time()


def checker(body, prelude=""):
    """Source of a check_following with the given body (and module-level prelude)."""
    return textwrap.dedent(prelude) + "def check_following(instruction, response):\n" + textwrap.indent(
        textwrap.dedent(body), "    ")


# ---------------------------------------------------------------------------------------------------------------------
# Realistic checkers, in the style of VerInstruct's generated functions
# ---------------------------------------------------------------------------------------------------------------------
AT_MOST_50_WORDS = checker("""
    words = response.split()
    return len(words) <= 50
""")
MENTIONS_KEYWORDS = checker("""
    keywords = ["sustainability", "innovation"]
    return all(re.search(r"\\b" + k + r"\\b", response, re.IGNORECASE) for k in keywords)
""", prelude="import re\n")
STARTS_AND_ENDS = checker("""
    text = response.strip()
    return text.startswith("Dear") and text.endswith("Best regards.")
""")
THREE_BULLETS = checker("""
    bullets = [line for line in response.splitlines() if line.strip().startswith(("-", "*"))]
    return len(bullets) == 3
""")
VALID_JSON_OBJECT = checker("""
    import json
    try:
        data = json.loads(response)
    except json.JSONDecodeError:
        return False
    return isinstance(data, dict) and "title" in data
""")
MOSTLY_UPPERCASE = checker("""
    letters = [c for c in response if c.isalpha()]
    if not letters:
        return False
    return sum(1 for c in letters if c.isupper()) / len(letters) >= 0.8
""")
NO_ZEBRA = checker("return re.search('zebra', response) is None", prelude="import re\n")
JSON_LIST = checker("""
    try:
        return isinstance(json.loads(response), list)
    except ValueError:
        return False
""", prelude="import json\n")
MOST_COMMON_WORD = checker("""
    from collections import Counter
    counts = Counter(w.lower().strip(string.punctuation) for w in response.split())
    return counts.most_common(1)[0][0] == "data"
""", prelude="import string\n")
USES_GETATTR = checker("return getattr(response, 'isupper')()")  # reflective: runs on the fork path

REALISTIC = [  # (source, response, expected verdict)
    (AT_MOST_50_WORDS, "A short answer.", True),
    (AT_MOST_50_WORDS, "word " * 51, False),
    (MENTIONS_KEYWORDS, "Innovation drives sustainability.", True),
    (MENTIONS_KEYWORDS, "Innovation drives growth.", False),
    (STARTS_AND_ENDS, "Dear Sam,\nThanks.\nBest regards.", True),
    (STARTS_AND_ENDS, "Hi Sam,\nBest regards.", False),
    (THREE_BULLETS, "Intro\n- one\n- two\n* three", True),
    (THREE_BULLETS, "- one\n- two", False),
    (VALID_JSON_OBJECT, '{"title": "x", "n": 1}', True),
    (VALID_JSON_OBJECT, '{"title": "x",', False),
    (MOSTLY_UPPERCASE, "THIS IS LOUD, ok", True),
    (MOSTLY_UPPERCASE, "This is quiet", False),
    (NO_ZEBRA, "a horse", True),
    (JSON_LIST, "[1, 2]", True),
    (MOST_COMMON_WORD, "Data, data and more DATA about models.", True),
    (USES_GETATTR, "LOUD", True),
    (USES_GETATTR, "quiet", False),
]
BENIGN_BATCH = [(source, "the instruction", response) for source, response, _ in REALISTIC]
BENIGN_EXPECTED = [CodeCheckResult(verdict, None) for _, _, verdict in REALISTIC]


def sandbox_processes():
    """Every sandbox process this test process answers for (they share the worker's command line): its descendants,
    and orphans handed to init since the tests started (what outlived its worker). Pools of other test runs on a
    shared machine are left out: their processes have a living parent of their own."""
    mine, found = {child.pid for child in psutil.Process().children(recursive=True)}, set()
    for process in psutil.process_iter(["cmdline", "ppid", "create_time"]):
        if any("_worker_main(" in part for part in process.info["cmdline"] or ()) and (
                process.pid in mine or (process.info["ppid"] == 1 and process.info["create_time"] >= TESTS_STARTED)):
            found.add(process.pid)
    return found


def child_processes():
    return {child.pid for child in psutil.Process().children(recursive=True)}


@pytest.fixture
def pool():
    """A warmed-up pool; once it is closed, no process it started may be left, neither child nor orphan."""
    children_before, sandbox_before = child_processes(), sandbox_processes()
    sandbox = CodeSandbox(workers=2, timeout_s=TIMEOUT_S, memory_mb=256)
    assert sandbox.run(BENIGN_BATCH) == BENIGN_EXPECTED
    yield sandbox
    sandbox.close()
    assert child_processes() - children_before == set()
    assert sandbox_processes() - sandbox_before == set()


def test_realistic_checkers_get_plain_python_verdicts(pool):
    sandbox = pool
    assert sandbox.run(BENIGN_BATCH) == BENIGN_EXPECTED


def test_order_is_preserved_over_a_mixed_batch_of_200(pool):
    sandbox = pool
    items, expected = [], []
    for i in range(200):
        source, response, verdict = REALISTIC[i % len(REALISTIC)]
        if i % 50 == 7:
            source, verdict = checker("return 1 / 0"), None
        items.append((source, f"instruction {i}", response))
        expected.append(CodeCheckResult(verdict, None) if verdict is not None
                        else CodeCheckResult(False, "exception: ZeroDivisionError: division by zero"))
    assert sandbox.run(items) == expected


def test_identical_sources_are_compiled_once_per_worker():
    with CodeSandbox(workers=1, timeout_s=TIMEOUT_S) as sandbox:
        sources = [AT_MOST_50_WORDS, NO_ZEBRA, USES_GETATTR]
        sandbox.run([(sources[i % 3], "i", "some response") for i in range(200)])
        sandbox.run([(sources[i % 3], "i", "another response") for i in range(50)])
        assert sandbox.stats["compiles"] == 3
        assert sandbox.stats["checks"] == 250
    with CodeSandbox(workers=2, timeout_s=TIMEOUT_S) as sandbox:
        sandbox.run([(sources[i % 3], "i", "some response") for i in range(200)])
        assert 3 <= sandbox.stats["compiles"] <= 6


def test_instruction_literal_passes_the_word_instruction_like_the_released_code():
    source = checker("return instruction == 'instruction'")
    assert run_code_checks([(source, "Write a poem.", "r")], timeout_s=TIMEOUT_S) == [CodeCheckResult(False)]
    assert run_code_checks([(source, "Write a poem.", "r")], timeout_s=TIMEOUT_S, instruction_literal=True) == [
        CodeCheckResult(True)]
    real = checker("return instruction.startswith('Write')")
    assert run_code_checks([(real, "Write a poem.", "r")], timeout_s=TIMEOUT_S) == [CodeCheckResult(True)]


@pytest.mark.parametrize("source, error", [
    ("def check_following(instruction, response:\n    return True\n", "compile error: SyntaxError"),
    ("def check(instruction, response):\n    return True\n", "missing check_following"),
    ("check_following = 3\n", "missing check_following"),
    (checker("return response.count('x') / 0"), "exception: ZeroDivisionError: division by zero"),
    (checker("return undefined_name"), "exception: NameError"),
    ("raise ValueError('at import')\n", "exception: ValueError: at import"),
])
def test_broken_checkers_fail_with_the_reason(source, error):
    [result] = run_code_checks([(source, "i", "r")], timeout_s=TIMEOUT_S)
    assert not result.passed and result.error.startswith(error), result


@pytest.mark.parametrize("body, kind", [("return 1", "int"), ("return 'True'", "str"), ("return None", "NoneType"),
                                        ("return [True]", "list")])
def test_only_a_bool_is_a_verdict(body, kind):
    assert run_code_checks([(checker(body), "i", "r")], timeout_s=TIMEOUT_S) == [
        CodeCheckResult(False, f"non-boolean result: {kind}")]


def test_items_must_be_strings():
    with pytest.raises(TypeError):
        run_code_checks([(AT_MOST_50_WORDS, "i", None)])


def test_sources_that_could_reach_shared_state_run_forked_with_plain_python_verdicts(pool):
    sandbox = pool
    reflective = [
        checker("return '{0.__globals__}'.format(check_following) != ''"),
        checker("return '{0:>{1.real}}'.format(5, 3) == '  5'"),  # an attribute field nested in the spec
        checker("return getattr(re, 'search')('a', response) is not None", prelude="import re\n"),
        checker("return re.enum.sys is not None", prelude="import re\n"),
        checker("return string.Formatter().get_field('0.upper', [response], {})[0]() != ''", prelude="import string\n"),
        checker("return 'len' in vars(__builtins__) if isinstance(__builtins__, type(re)) else True",
                prelude="import re\n"),
        checker("class C:\n    pass\nreturn C() is not None"),
        checker("return next(x for x in [True])"),
        checker("g = (i for i in range(3))\nreturn g.gi_frame is not None"),
    ]
    before = sandbox.stats["forked"]
    results = sandbox.run([(source, "i", "a response") for source in reflective])
    assert results == [CodeCheckResult(True)] * len(reflective)
    assert sandbox.stats["forked"] - before == len(reflective) - 1  # the generator expression may stay in the worker


def test_memory_parked_in_shared_caches_is_not_taken_from_the_next_check():
    # typing keeps subscripted generics in an lru_cache: a fast-path checker can park over 100 MB there (each string is
    # also compiled), and a later check still needs most of its 256 MB budget (without the retirement the two together
    # pass the address-space limit).
    parks_memory = checker("""
        for k in range(10):
            typing.List["a" * (10 * 2 ** 20) + str(k)]
        return True
    """, prelude="import typing\n")
    needs_the_budget = checker("return len(bytearray(200 * 2 ** 20)) > 0")
    with CodeSandbox(workers=1, timeout_s=5.0, memory_mb=256) as sandbox:
        results = sandbox.run([(parks_memory, "i", "r"), (needs_the_budget, "i", "r"), (needs_the_budget, "i", "r")])
        assert results == [CodeCheckResult(True)] * 3
        assert sandbox.stats["worker_restarts"] >= 1  # the worker retired after the checks that grew it


def test_a_worker_killed_from_outside_is_replaced(pool):
    sandbox = pool
    for pid in child_processes() & sandbox_processes():
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    assert sandbox.run(BENIGN_BATCH) == BENIGN_EXPECTED


def test_workers_are_out_of_the_callers_process_group(pool):
    sandbox = pool  # so that Ctrl-C in the trainer's terminal does not hit them
    for child in psutil.Process().children():
        assert os.getpgid(child.pid) != os.getpgid(0)


# ---------------------------------------------------------------------------------------------------------------------
# Hostile checkers
# ---------------------------------------------------------------------------------------------------------------------
MARKER = "{marker}"  # replaced by a path under the test's tmp_path, which must not exist afterwards
# Checkers may import only an allow-list of modules (re, json, math, ...). These reach os, sys and the rest as attackers
# would, through the object graph (os._wrap_close's globals), so that the layers under the allow-list are exercised.
REACH = ("_os_globals = next(c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close')"
         ".__init__.__globals__\nsys = _os_globals['sys']\nos = sys.modules['os']\n")
REACH_SIGNAL = REACH + "signal = sys.modules['signal']\n"

HOSTILE = {  # name -> (source, expected error prefix, or a CodeCheckResult the check itself must give)
    "infinite_loop": (checker("while True:\n    pass"), "timeout:"),
    "infinite_loop_catching_everything": (checker("""
        while True:
            try:
                while True:
                    pass
            except BaseException:
                pass
    """), "timeout:"),
    "sleep_forever": (checker("time.sleep(10 ** 6)", prelude="import time\n"), "timeout: wall"),
    "ignore_timer_signals_then_spin": (checker("""
        try:
            signal.signal(signal.SIGPROF, signal.SIG_IGN)
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            signal.setitimer(signal.ITIMER_REAL, 0)
        except OSError:
            pass  # the kernel refuses
        while True:
            pass
    """, prelude=REACH_SIGNAL), "timeout:"),
    "memory_bomb": (checker("return len('a' * 2 ** 33) > 0"), "memory limit"),
    "gradual_memory_bomb": (checker("""
        hoard = []
        while True:
            hoard.append(bytearray(5 * 10 ** 7))
    """), "memory limit"),
    "deep_recursion": (checker("def f(n):\n    return f(n + 1)\nreturn f(0)"), "exception: RecursionError"),
    "c_stack_overflow": (checker("""
        sys.setrecursionlimit(10 ** 8)
        def f(n):
            return list(map(f, [n + 1]))  # recursion through C code: the C stack overflows
        return f(0) == []
    """, prelude=REACH), "worker died: signal SIGSEGV"),
    "fork_bomb": (checker("while True:\n    os.fork()", prelude=REACH), "forbidden: os.fork"),
    "os_system": (checker("os.system('touch {marker}')\nreturn True", prelude=REACH), "forbidden: os.system"),
    "subprocess": (checker("subprocess.run(['touch', '{marker}'])\nreturn True", prelude="import subprocess\n"),
                   "forbidden: import subprocess"),
    "posix_spawn": (checker("os.posix_spawn('/usr/bin/touch', ['touch', '{marker}'], {{}})\nreturn True",
                            prelude=REACH), "forbidden: os.posix_spawn"),
    "write_file": (checker("open('{marker}', 'w').write('x')\nreturn True"), "forbidden: open {marker}"),
    "write_file_swallowing_the_error": (checker("""
        try:
            open('{marker}', 'a').write('x')
        except Exception:
            pass
        return True
    """), "forbidden: open {marker}"),
    "os_open_for_writing": (checker("os.open('{marker}', os.O_CREAT | os.O_WRONLY)\nreturn True",
                                    prelude=REACH), "forbidden: open {marker}"),
    "mkfifo_unaudited": (checker("os.mkfifo('{marker}')\nreturn True", prelude=REACH),
                         "exception: AttributeError"),
    "remove_a_file": (checker("os.remove('/tmp/definitely-not-there')\nreturn True", prelude=REACH),
                      "forbidden: os.remove"),
    "read_etc_passwd": (checker("return 'root' in open('/etc/passwd').read()"), "forbidden: open /etc/passwd"),
    "read_etc_passwd_via_stdlib_dotdot": (checker(
        "return 'root' in open(os.path.dirname(os.__file__) + '/../../../../../../etc/passwd').read()",
        prelude=REACH), "forbidden: open"),
    "list_a_directory": (checker("return len(os.listdir('/etc')) > 0", prelude=REACH),
                         "forbidden: os.listdir /etc"),
    "socket_to_the_test": (checker("socket.create_connection(('127.0.0.1', {port}), timeout=1)\nreturn True",
                                   prelude="import socket\n"), "forbidden: import socket"),
    "sys_exit": (checker("sys.exit(0)", prelude=REACH), "exception: SystemExit"),
    "raise_system_exit": (checker("raise SystemExit(1)"), "exception: SystemExit: 1"),
    "raise_keyboard_interrupt": (checker("raise KeyboardInterrupt"), "exception: KeyboardInterrupt"),
    "raise_base_exception": (checker("raise BaseException('boom')"), "exception: BaseException: boom"),
    "os_exit": (checker("os._exit(3)", prelude=REACH), "worker died: exit code 3"),
    "abort": (checker("os.abort()", prelude=REACH), "worker died: signal"),  # SIGSEGV: it may not even signal itself
    "kill_the_workers_parent": (checker("os.kill(os.getppid(), 9)\nreturn True", prelude=REACH),
                                "forbidden: os.kill"),
    "kill_the_test_process": (checker(f"os.kill({TEST_PID}, 9)\nreturn True", prelude=REACH),
                              "forbidden: os.kill"),
    "kill_the_process_group": (checker("os.killpg(0, 9)\nreturn True", prelude=REACH), "forbidden: os.killpg"),
    "kill_the_test_via_pidfd": (checker(f"signal.pidfd_send_signal(os.pidfd_open({TEST_PID}), 9)\nreturn True",
                                        prelude=REACH_SIGNAL), "exception: AttributeError"),
    "revive_a_builtin_module": (checker("""
        _imp, importer = sys.modules['_imp'], sys.modules['_frozen_importlib'].BuiltinImporter
        return _imp.create_builtin(importer.find_spec('_signal')) is not None
    """, prelude=REACH), "exception: AttributeError"),
    "set_the_system_clock": (checker("time.clock_settime(time.CLOCK_REALTIME, 0)\nreturn True",
                                     prelude="import time\n"), "exception: AttributeError"),
    "ctypes": (checker(f"ctypes.CDLL(None).kill({TEST_PID}, 9)\nreturn True", prelude="import ctypes\n"),
               "forbidden: import ctypes"),
    "raise_own_limits": (checker("resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\nreturn True",
                                 prelude=REACH + "resource = sys.modules['resource']\n"),
                         "forbidden: resource.setrlimit"),
    "add_an_audit_hook": (checker("sys.addaudithook(lambda *a: None)\nreturn True", prelude=REACH),
                          "forbidden: sys.addaudithook"),
    "forge_results_on_every_fd": (checker("""
        for fd in range(64):
            try:
                os.write(fd, b"--T\\n" * 100)
            except OSError:
                pass
        return False
    """, prelude=REACH), "forbidden: the check wrote something other than its verdict"),
    "print_megabytes": (checker("""
        print('x' * 20_000_000)
        sys.stderr.write('y' * 20_000_000)
        return True
    """, prelude=REACH), "forbidden: more than 65536 characters of output"),
    "thread_left_running": (checker("""
        sys.modules['_thread'].start_new_thread(time.sleep, (10 ** 6,))
        return True
    """, prelude=REACH + "import time\n"), "exception: RuntimeError: can't start new thread"),
    "finalizer_that_hangs": (checker("""
        def spin():
            try:
                yield 1
            finally:
                while True:
                    pass
        cycle = []
        g = spin()
        next(g)
        cycle.append((g, cycle))
        return False
    """), CodeCheckResult(False)),
    # Poisoners: the change dies with the check's fork child, and the check fails for trying; the benign batch after
    # it must be unaffected.
    "patch_re_search": (checker("re.search = lambda *a, **k: True\nreturn True", prelude="import re\n"),
                        "forbidden: changed re.search"),
    "patch_json_loads": (checker("json.loads = lambda s, **k: {{}}\nreturn True", prelude="import json\n"),
                         "forbidden: changed json.loads"),
    "poison_the_regex_cache": (checker("""
        fake = re.compile('.*')
        for key in list(re._cache):
            re._cache[key] = fake
        return True
    """, prelude="import re\n"), "forbidden: changed re._cache["),
    "swap_sys_modules": (checker("""
        fake = types.ModuleType('re')
        fake.search = lambda *a, **k: True
        sys.modules['re'] = fake
        return True
    """, prelude=REACH + "types = sys.modules['types']\n"), "forbidden: changed sys.modules['re']"),
    "delete_builtins": (checker("""
        builtins = sys.modules['builtins']
        del builtins.len, builtins.isinstance
        return True
    """, prelude=REACH), "forbidden: changed builtins."),
    "replace_builtins_via_a_function": (checker("""
        next(c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close').__init__.__builtins__[
            'len'] = lambda x: 0
        return True
    """), "forbidden: changed builtins.len"),
    "patch_a_stdlib_class": (checker("""
        json.JSONDecoder.decode = lambda self, s: {{}}
        collections.Counter.most_common = lambda self, n=None: [('data', 1)]
        return True
    """, prelude="import json, collections\n"), "forbidden: changed "),
    "patch_str_methods": (checker("""
        str.split = lambda self, *a: []
        return True
    """), "exception: TypeError"),  # Python itself refuses: str is immutable
    "patch_str_methods_swallowing_the_refusal": (checker("""
        try:
            str.split = lambda self, *a: []
        except TypeError:
            pass
        return False
    """), CodeCheckResult(False)),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_checker_fails_with_a_reason_and_the_pool_recovers(name, pool, tmp_path):
    sandbox = pool
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    marker = tmp_path / "pwned"
    source, expected = HOSTILE[name]
    source = source.format(marker=marker, port=listener.getsockname()[1])
    if isinstance(expected, str):
        expected = expected.format(marker=marker)

    start = time.monotonic()
    [result] = sandbox.run([(source, "the instruction", "the response")])
    elapsed = time.monotonic() - start

    if isinstance(expected, CodeCheckResult):
        assert result == expected
    else:
        assert not result.passed and result.error.startswith(expected), result
    assert elapsed < TIMEOUT_S + MARGIN_S, elapsed
    assert not marker.exists()
    with pytest.raises(socket.timeout):
        listener.accept()  # no connection arrived
    listener.close()
    assert sandbox.run(BENIGN_BATCH) == BENIGN_EXPECTED
    # The hostile check in the middle of a batch costs only itself.
    mixed = BENIGN_BATCH[:5] + [(source, "i", "r")] + BENIGN_BATCH[5:]
    results = sandbox.run(mixed)
    assert results[:5] + results[6:] == BENIGN_EXPECTED
    assert not marker.exists()


def test_every_category_of_hostile_checker_is_covered():
    assert len(HOSTILE) >= 20
    reasons = {expected.split(":")[0] for _, expected in HOSTILE.values() if isinstance(expected, str)}
    assert reasons >= {"timeout", "memory limit", "exception", "forbidden", "worker died"}


def test_timeouts_report_cpu_for_busy_loops_and_wall_for_sleeps():
    with CodeSandbox(workers=1, timeout_s=TIMEOUT_S) as sandbox:
        spin, sleep = HOSTILE["infinite_loop"][0], HOSTILE["sleep_forever"][0]
        results = sandbox.run([(sleep, "i", "r"), (spin, "i", "r")])
    assert results[0] == CodeCheckResult(False, f"timeout: wall {TIMEOUT_S}s")
    assert results[1].error in (f"timeout: cpu {TIMEOUT_S}s", f"timeout: wall {TIMEOUT_S}s")  # wall if CPU is short


# ---------------------------------------------------------------------------------------------------------------------
# The parent trusts nothing from a worker; no kernel layer, no sandbox unless the caller opts in
# ---------------------------------------------------------------------------------------------------------------------
def lying_worker(reply, receipt=True):
    """A worker command that starts like a real one and (with `receipt`) says it has read each batch as a real one
    does, then answers every batch with `reply` (bytes) whatever it got."""
    script = ("import marshal, os, sys\nos.write(1, b'R\\n')\nwhile True:\n    header = sys.stdin.buffer.read(4)\n"
              "    if len(header) < 4:\n        break\n"
              "    run_id = marshal.loads(sys.stdin.buffer.read(int.from_bytes(header, 'little')))[0]\n"
              f"    os.write(1, (b'B%d\\n' % run_id if {receipt!r} else b'') + {reply!r})\n")
    return lambda *args: [sys.executable, "-c", script]


@pytest.mark.parametrize("reply, violation", [
    (b"---T\n" * 5, "more results than items sent"),  # forged verdicts for items it was not sent (yet)
    (b"hello\n", "malformed result line"),
    (b"--xT\n---F\n", "output after retiring"),
    (b"B999\n---T\n", "a line for another run"),  # a receipt of a batch that is not this run's
    (b"---T\n", "a result before its batch was received"),
])
def test_a_worker_that_breaks_the_protocol_fails_its_items_and_is_replaced(monkeypatch, reply, violation):
    monkeypatch.setattr("verify_lib._worker_command", lying_worker(reply, receipt=not violation.startswith("a ")))
    with CodeSandbox(workers=1, timeout_s=TIMEOUT_S) as sandbox:
        results = sandbox.run([(AT_MOST_50_WORDS, "i", "r")] * 3)
        assert results == [CodeCheckResult(False, "sandbox protocol violation: " + violation)] * 3
        assert sandbox.stats["worker_restarts"] >= 1


def test_without_the_kernel_layer_the_sandbox_refuses_unless_weak_isolation_is_asked_for(monkeypatch, caplog):
    monkeypatch.setattr("verify_lib._kernel_programs", lambda: "libseccomp is not available (test)")
    monkeypatch.delenv("VERIF_SANDBOX_ALLOW_WEAK_ISOLATION", raising=False)
    with pytest.raises(SandboxUnavailable, match="libseccomp is not available .test.*allow_weak_isolation=True"):
        CodeSandbox(workers=1).run(BENIGN_BATCH)
    with CodeSandbox(workers=1, allow_weak_isolation=True) as sandbox:
        assert sandbox.run(BENIGN_BATCH) == BENIGN_EXPECTED
        assert sandbox.isolation == "weak: libseccomp is not available (test)"
    assert "WEAK SANDBOX ISOLATION" in caplog.text
    monkeypatch.setenv("VERIF_SANDBOX_ALLOW_WEAK_ISOLATION", "1")
    assert run_code_checks(BENIGN_BATCH[:2]) == BENIGN_EXPECTED[:2]
    verify_lib._default_sandbox.close()  # its workers are unconfined: leave none behind for the other tests


def test_a_kernel_that_refuses_the_filter_stops_the_sandbox_with_the_reason(monkeypatch):
    refused = {role: b"\x00" * 8 for role in ("worker", "zygote", "check")}  # one instruction, no return: invalid
    monkeypatch.setattr("verify_lib._kernel_programs", lambda: refused)
    with pytest.raises(SandboxUnavailable, match="the kernel refused the seccomp filter"):
        CodeSandbox(workers=1).run(BENIGN_BATCH)


def test_workers_run_confined_by_default(pool):
    sandbox = pool
    assert sandbox.isolation == "kernel"
    workers = [psutil.Process(worker.proc.pid) for worker in sandbox._pool]
    for process in workers + [zygote for worker in workers for zygote in worker.children()]:
        assert "Seccomp:\t2\n" in open(f"/proc/{process.pid}/status").read()  # under a seccomp filter
        assert process.uids().real == (65534 if os.geteuid() == 0 else os.getuid())
    assert len(workers) == 2 and all(len(worker.children()) == 1 for worker in workers)
