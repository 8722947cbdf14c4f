"""Hostile checkers written to escape the sandbox (issue #14), each judged by what it leaves in the world.

The world the test owns: a folder anyone may write to, a secret in a file anyone may read, a secret in the parent's
environment and one in another response of the same batch, a loopback listener on 127.0.0.1, a dummy process of the
sandbox's own uid (so that only the kernel filter, not the uid, protects it) and the test process itself. After each
attack: the folder is empty, no connection arrived, the dummy lives, no secret shows in any result, honest probe checks
in the same batch (fast and forked, on the one worker that also ran the attack) keep their honest verdicts, and once
the pool is closed no sandbox process is left.

Each attack runs under three configurations: every layer (the default); the audit hook switched off, as crafted
bytecode or a native module switches it off, so that the attack calls the C library directly through ctypes (loaded for
it: verify_lib keeps ctypes out of the workers) and only the kernel filter and the process design stand in its way (on
the forked path); and the audit hook and the static screen off, so that the same attack runs inside the worker itself
(the fast path's process).
"""
import dis
import importlib.util
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from verify_lib import CodeCheckResult, CodeSandbox
from test_sandbox import sandbox_processes

TIMEOUT_S = 1.0
MEMORY_MB = 128
TEST_PID = os.getpid()
NOBODY = 65534

# Everything an attacker reaches without an import: sys and os through os._wrap_close's globals, the C library through
# ctypes (loaded in the kernel-only modes, see MODES), extension modules loaded from a path under another name.
PRELUDE = '''
def _attempt(action):
    try:
        return action()
    except BaseException as e:
        return e
_classes = ().__class__.__base__.__subclasses__()
sys = next(c for c in _classes if c.__name__ == '_wrap_close').__init__.__globals__['sys']
os = sys.modules['os']
def _libc():
    ctypes = next(c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'CDLL').__init__.__globals__
    return ctypes, ctypes['CDLL'](None, use_errno=True)
def _load_extension(name, path):
    spec = sys.modules['_frozen_importlib_external'].spec_from_file_location(name, path)
    return sys.modules['_frozen_importlib'].module_from_spec(spec)
'''

ATTACKS = {
    "write_a_file": '''
        path = '@OUT@/written'
        _attempt(lambda: open(path, 'w').write('x'))
        _attempt(lambda: os.open(path, os.O_WRONLY | os.O_CREAT, 0o666))
        ctypes, libc = _libc()
        fd = libc.open(path.encode(), 0o101, 0o666)  # O_WRONLY | O_CREAT
        libc.write(fd, b'x', 1)
        libc.creat(b'@OUT@/created', 0o666)
        return True
    ''',
    "socket_to_the_loopback_listener": '''
        address = ('127.0.0.1', @PORT@)
        _attempt(lambda: __import__('socket').create_connection(address, 1))
        module = _attempt(lambda: _load_extension('innocent._socket', '@SOCKET_SO@'))  # not "_socket" by its first name
        _attempt(lambda: module.socket(2, 1).connect(address))
        ctypes, libc = _libc()
        fd = libc.socket(2, 1, 0)  # AF_INET, SOCK_STREAM
        sockaddr = ctypes['create_string_buffer'](
            (2).to_bytes(2, 'little') + (@PORT@).to_bytes(2, 'big') + bytes([127, 0, 0, 1]) + bytes(8), 16)
        libc.connect(fd, sockaddr, 16)
        return True
    ''',
    "tcl_interpreter_runs_a_command": '''
        tk = _load_extension('innocent._tkinter', '@TKINTER_SO@')
        tk.create(None, 'x', 'Tk', False, True, False, False, None).call('exec', 'touch', '@OUT@/tcl')
        return True
    ''',
    "fork_a_daemon_that_outlives_the_pool": '''
        _attempt(lambda: os.fork() or os.setsid())
        _attempt(lambda: _load_extension('innocent._posixsubprocess', '@POSIXSUBPROCESS_SO@'))
        ctypes, libc = _libc()
        for _ in range(3):
            pid = libc.fork()
            if pid == 0:  # the daemon: a session of its own, a mark in the world, then it waits
                libc.setsid()
                libc.creat(b'@OUT@/daemon', 0o666)
                libc.sleep(30)
                libc._exit(0)
        libc.syscall(56, 0x11, 0, 0, 0, 0)  # raw clone(SIGCHLD)
        libc.execv(b'/bin/sh', None)
        return True
    ''',
    "signal_other_processes": '''
        _attempt(lambda: os.kill(@DUMMY@, 9))
        ctypes, libc = _libc()
        libc.kill(@DUMMY@, 9)
        libc.kill(@TEST_PID@, 10)  # SIGUSR1: the test counts it
        libc.syscall(62, @DUMMY@, 9)  # raw kill
        libc.kill(-1, 9)  # everything it may signal
        return True
    ''',
    "change_rlimits": '''
        resource = sys.modules['resource']
        _attempt(lambda: resource.setrlimit(resource.RLIMIT_AS, (-1, -1)))
        _attempt(lambda: resource.prlimit(@TEST_PID@, resource.RLIMIT_CORE, (4096, 4096)))
        ctypes, libc = _libc()
        unlimited = ctypes['create_string_buffer'](b'\\xff' * 16, 16)
        libc.setrlimit(9, unlimited)  # RLIMIT_AS
        libc.prlimit(@TEST_PID@, 4, ctypes['create_string_buffer'](
            (4096).to_bytes(8, 'little') * 2, 16), None)  # RLIMIT_CORE of the test process
        hoard = bytearray(3 * @MEMORY_MB@ * 2 ** 20)
        return len(hoard) > 0
    ''',
    "read_secrets_env_file_and_batch": '''
        found = []
        def look(text):
            if isinstance(text, bytes):
                text = text.decode('latin-1')
            if isinstance(text, str) and 'SECRET-' in text:
                found.append(text[text.index('SECRET-'):][:40])
        def report():
            raise ValueError('leaked: ' + ' '.join(found))
        paths = ('@SECRET_FILE@', '/proc/self/environ', '/proc/@TEST_PID@/environ')
        _attempt(lambda: [look(v) for v in os.environ.values()])
        for path in paths:
            _attempt(lambda: look(open(path, 'rb').read()))
        libc = _attempt(_libc)
        if not isinstance(libc, BaseException):
            ctypes, libc = libc
            for path in paths:
                buffer = ctypes['create_string_buffer'](4096)
                fd = libc.open(path.encode(), 0)
                look(buffer.raw[:max(0, libc.read(fd, buffer, 4096))])
        frame = sys._getframe()
        while frame is not None:  # the frames that called this check: a batch, a runner
            for value in frame.f_locals.values():
                look(value)
                if isinstance(value, (list, tuple)) and value is not found:
                    [_attempt(lambda: [look(x), [look(y) for y in x if isinstance(x, (list, tuple))]]) for x in value]
            frame = frame.f_back
        objects = _attempt(sys.modules['gc'].get_objects)
        for obj in objects if isinstance(objects, list) else ():  # every container of the process
            if type(obj) in (list, tuple) and obj is not found:
                for x in obj:
                    look(x)
            elif type(obj) is dict:
                for x in obj.values():
                    look(x)
        report()
    ''',
    "forge_verdicts_for_the_next_items": '''
        forged = b'---T\\n' * 64
        for fd in range(64):
            _attempt(lambda fd=fd: os.write(fd, forged))
            _attempt(lambda fd=fd: os.write(sys.modules['fcntl'].fcntl(fd, 0, 200), forged))  # F_DUPFD
        ctypes, libc = _libc()
        for fd in range(64):
            libc.write(fd, forged, len(forged))
        return False
    ''',
    "crafted_bytecode_reads_memory": '''
        code = (lambda: None).__code__
        # LOAD_CONST with an index far beyond co_consts: CPython does not bounds-check it and reads whatever is there
        bad = code.replace(co_code=bytes([@RESUME@, 0, @EXTENDED_ARG@, 1, @LOAD_CONST@, 0, @RETURN_VALUE@, 0]),
                           co_consts=(None,))
        value = type(check_following)(bad, {})()
        return repr(value) != ''
    ''',
}
# The kernel-only modes also load ctypes in the workers ("no_ctypes" off), which verify_lib keeps out of them: the attacks
# then call the C library directly, as any native code could.
MODES = {"all_layers": (), "kernel_only": ("audit_hook", "no_ctypes"),
         "kernel_only_in_the_worker": ("audit_hook", "screen", "no_ctypes")}

PROBE_FAST = "def check_following(instruction, response):\n    return 'sunrise' in response\n"
PROBE_FORKED = "def check_following(instruction, response):\n    return getattr(response, 'startswith')('zzz')\n"
PROBE_LONG = "def check_following(instruction, response):\n    return len(response) > 100000\n"


@pytest.fixture
def world(tmp_path, monkeypatch):
    out = tempfile.mkdtemp(prefix="verif-attack-")
    os.chmod(out, 0o777)  # anyone may write here: only the kernel filter keeps the sandbox out
    secret_file = os.path.join(out, "..", os.path.basename(out) + "-secret")
    with open(secret_file, "w") as f:
        f.write("SECRET-file-7d1c")
    os.chmod(secret_file, 0o644)
    monkeypatch.setenv("VERIF_TEST_API_KEY", "SECRET-env-93ab")  # before the pool starts: workers would inherit it
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    dummy = subprocess.Popen(["sleep", "60"], user=NOBODY if os.geteuid() == 0 else None)
    signals = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: signals.append(1))
    yield {"out": out, "secret_file": os.path.abspath(secret_file), "listener": listener, "dummy": dummy,
           "signals": signals}
    signal.signal(signal.SIGUSR1, previous)
    dummy.kill()
    dummy.wait()
    listener.close()
    os.remove(secret_file)
    for name in os.listdir(out):
        os.remove(os.path.join(out, name))
    os.rmdir(out)


def attack_source(name, world):
    tokens = {"@OUT@": world["out"], "@PORT@": str(world["listener"].getsockname()[1]),
              "@SECRET_FILE@": world["secret_file"], "@DUMMY@": str(world["dummy"].pid), "@TEST_PID@": str(TEST_PID),
              "@MEMORY_MB@": str(MEMORY_MB)}
    for module in ("_socket", "_tkinter", "_posixsubprocess"):
        spec = importlib.util.find_spec(module)
        tokens[f"@{module[1:].upper()}_SO@"] = spec.origin if spec else "/nonexistent.so"
    for op in ("RESUME", "EXTENDED_ARG", "LOAD_CONST", "RETURN_VALUE"):
        tokens[f"@{op}@"] = str(dis.opmap.get(op, 0))
    body = ATTACKS[name]
    for token, value in tokens.items():
        body = body.replace(token, value)
    lines = [line[8:] for line in body.strip("\n").splitlines()]
    return PRELUDE + "def check_following(instruction, response):\n" + "\n".join("    " + l for l in lines) + "\n"


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_leaves_nothing_in_the_world(name, mode, world):
    before = sandbox_processes()
    core_limit = resource.getrlimit(resource.RLIMIT_CORE)
    batch_secret = "a sunrise over SECRET-batch-51fe"
    probes = [(PROBE_FAST, "i", batch_secret), (PROBE_FORKED, "i", "zzz top"), (PROBE_LONG, "i", batch_secret)]
    honest = [CodeCheckResult(True), CodeCheckResult(True), CodeCheckResult(False)]
    with CodeSandbox(workers=1, timeout_s=TIMEOUT_S, memory_mb=MEMORY_MB, _disable=MODES[mode]) as sandbox:
        assert sandbox.isolation is None or sandbox.isolation == "kernel"
        items = probes + [(attack_source(name, world), "i", "r")] + probes
        results = sandbox.run(items)
        results += sandbox.run(probes)  # the same pool, afterwards
        assert sandbox.isolation == "kernel"
        probe_results = results[:3] + results[4:]
        if "screen" in MODES[mode]:  # the attack ran inside the worker: its batch may fail, but never with a lie
            assert all(r == h or r.error.startswith("sandbox protocol violation") for r, h in
                       zip(probe_results, honest * 3)), results
        else:
            assert probe_results == honest * 3, results
        attack = results[3]
    time.sleep(0.1)  # anything that did get out has had time to act
    assert os.listdir(world["out"]) == [], attack
    with pytest.raises(socket.timeout):
        world["listener"].accept()
    assert world["dummy"].poll() is None, "the dummy process was killed"
    assert world["signals"] == [], "the test process was signalled"
    assert resource.getrlimit(resource.RLIMIT_CORE) == core_limit
    # In the worker itself an attack reaches the items of its own batch: there only the static screen protects them.
    leaks = ("SECRET-file-7d1c", "SECRET-env-93ab") + (() if "screen" in MODES[mode] else ("SECRET-batch-51fe",))
    assert not any(leak in (r.error or "") for r in results for leak in leaks), results
    assert not (attack.passed and name == "change_rlimits"), attack  # its memory limit still held
    assert sandbox_processes() - before == set()
