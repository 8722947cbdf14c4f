"""Throughput of the checker sandbox against the released VerIF way (exec in-process, in a thread pool, unsandboxed).

    .venv/bin/python bench/bench_sandbox.py [--checks 10000] [--forked-checks 1000] [--threads 16] [--repeat 3]

10,000 realistic checks: a few hundred distinct check_following sources, generated from 15 templates in the style of
VerInstruct's functions with varied constants, against responses of 50-300 words. Both ways run on the same items in
one process; each is timed --repeat times (interleaved, best kept, since the machine may be shared). The released way
passes the literal "instruction", so the sandbox runs with instruction_literal=True and the verdicts must agree.
The first --forked-checks items are also run made reflective (their response passes through getattr), which the
sandbox's static screen sends to the forked path: a process of its own per check.
"""
import argparse
import json
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from verify_lib import CodeSandbox  # noqa: E402

HEADER = "def check_following(instruction, response):\n"
TEMPLATES = [  # (body with {c} for the constant, constants)
    ("    words = response.split()\n    return len(words) <= {c}\n", range(60, 300, 5)),
    ("    return len(response.split()) >= {c}\n", range(40, 200, 4)),
    ("    import re\n    return re.search(r'\\b{c}\\b', response, re.IGNORECASE) is not None\n",
     ["data", "model", "river", "light", "market", "energy", "garden", "signal", "future", "growth", "system",
      "value", "people", "time", "world", "report", "result", "simple", "clear", "strong"]),
    ("    forbidden = [{c}]\n    lower = response.lower()\n    return not any(w in lower for w in forbidden)\n",
     ["'very'", "'really', 'just'", "'basically'", "'actually', 'literally'", "'stuff'", "'thing', 'things'"]),
    ("    return response.strip().startswith({c!r})\n", ["Dear", "Hello", "Title:", "Summary", "In short", "Yes"]),
    ("    return response.strip().endswith({c!r})\n", ["Best regards.", "Thank you.", "?", "!", "END", "."]),
    ("    bullets = [l for l in response.splitlines() if l.strip().startswith(('-', '*'))]\n"
     "    return len(bullets) == {c}\n", range(0, 8)),
    ("    import json\n    try:\n        data = json.loads(response)\n    except json.JSONDecodeError:\n"
     "        return False\n    return isinstance(data, dict) and len(data) >= {c}\n", range(1, 6)),
    ("    letters = [ch for ch in response if ch.isalpha()]\n    if not letters:\n        return False\n"
     "    return sum(1 for ch in letters if ch.isupper()) / len(letters) >= {c}\n", [0.05, 0.1, 0.2, 0.5, 0.8]),
    ("    import re\n    sentences = [s for s in re.split(r'[.!?]+', response) if s.strip()]\n"
     "    return len(sentences) <= {c}\n", range(3, 40)),
    ("    paragraphs = [p for p in response.split('\\n\\n') if p.strip()]\n    return len(paragraphs) == {c}\n",
     range(1, 6)),
    ("    from collections import Counter\n    import string\n"
     "    counts = Counter(w.strip(string.punctuation).lower() for w in response.split())\n"
     "    return counts[{c!r}] >= 2\n", ["the", "data", "light", "energy", "garden", "a", "and", "of"]),
    ("    return response.count(',') <= {c}\n", range(0, 40)),
    ("    import re\n    return len(re.findall(r'\\[[^\\]]+\\]', response)) >= {c}\n", range(0, 4)),
    ("    digits = sum(ch.isdigit() for ch in response)\n    return digits >= {c}\n", range(0, 60, 2)),
]
WORDS = ("data model river light market energy garden signal future growth the a and of in to with very really just "
         "basically system value people time world report result simple clear strong quiet bright").split()


def make_sources():
    return [HEADER + body.format(c=c) for body, constants in TEMPLATES for c in constants]


def make_response(rng):
    n = rng.randint(50, 300)
    words = [rng.choice(WORDS) for _ in range(n)]
    kind = rng.random()
    if kind < 0.1:
        return json.dumps({f"k{i}": " ".join(words[i::7]) for i in range(rng.randint(1, 6))})
    sentences, i = [], 0
    while i < n:
        k = rng.randint(5, 20)
        sentence = " ".join(words[i:i + k]).capitalize() + rng.choice(".!?.,")
        sentences.append(sentence.upper() if rng.random() < 0.1 else sentence)
        i += k
    if kind < 0.3:
        return "\n".join(f"- {s}" for s in sentences)
    if kind < 0.5:
        return "Dear team,\n\n" + " ".join(sentences) + f" [{rng.choice(WORDS)}] {rng.randint(0, 999)}\n\nBest regards."
    return "\n\n".join(" ".join(sentences[j:j + 4]) for j in range(0, len(sentences), 4))


def reflective(source):
    """The same checker, sent to the forked path by the sandbox's screen."""
    return source.replace(HEADER, HEADER + "    response = getattr(response, 'strip')()\n")


def released_check(item):
    """How the released VerIF code runs one check: exec the source in-process, call with the literal "instruction"."""
    source, _, response = item
    namespace = {}
    exec(source, namespace)
    return namespace["check_following"]("instruction", response)


def cached_in_process(items):
    """Reference only: unsandboxed, one thread, each source compiled once (what the sandbox's fast path does)."""
    code = {}
    verdicts = []
    for source, _, response in items:
        if source not in code:
            code[source] = compile(source, "<checker>", "exec")
        namespace = {}
        exec(code[source], namespace)
        verdicts.append(namespace["check_following"]("instruction", response))
    return verdicts


def timed(seconds, run):
    """run(), with its wall time appended to the list `seconds`."""
    start = time.perf_counter()
    result = run()
    seconds.append(time.perf_counter() - start)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=10_000)
    parser.add_argument("--forked-checks", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    rng = random.Random(0)
    sources = make_sources()
    responses = [make_response(rng) for _ in range(500)]
    items = [(rng.choice(sources), "Follow the constraints.", rng.choice(responses)) for _ in range(args.checks)]
    forked = [(reflective(source), instruction, response) for source, instruction, response in items[:args.forked_checks]]

    start = time.perf_counter()
    sandbox = CodeSandbox()
    sandbox.run(items[:1])
    cold_s = time.perf_counter() - start
    released_s, sandbox_s, cached_s, released_forked_s, forked_s = [], [], [], [], []
    with sandbox, ThreadPoolExecutor(args.threads) as pool:
        for _ in range(args.repeat):
            released = timed(released_s, lambda: list(pool.map(released_check, items)))
            sandboxed = timed(sandbox_s, lambda: sandbox.run(items, instruction_literal=True))
            timed(cached_s, lambda: cached_in_process(items))
            released_forked = timed(released_forked_s, lambda: list(pool.map(released_check, forked)))
            sandboxed_forked = timed(forked_s, lambda: sandbox.run(forked, instruction_literal=True))
        stats = dict(sandbox.stats)

    agree = sum(r.error is None and r.passed == v for r, v in zip(sandboxed + sandboxed_forked,
                                                                  released + released_forked))
    forked_rate, released_forked_rate = len(forked) / min(forked_s), len(forked) / min(released_forked_s)
    released_rate, sandbox_rate = args.checks / min(released_s), args.checks / min(sandbox_s)
    print(f"{args.checks} checks, {len(set(s for s, _, _ in items))} distinct sources from {len(TEMPLATES)} templates, "
          f"responses of 50-300 words, {os.cpu_count()} CPUs, best of {args.repeat}")
    print(f"released  exec in-process, ThreadPoolExecutor({args.threads}), unsandboxed: {released_rate:8.0f} checks/s")
    print(f"sandbox   CodeSandbox({sandbox.workers} workers), warm:                     {sandbox_rate:8.0f} checks/s"
          f"   (pool start-up + first check: {cold_s:.2f} s)")
    print(f"reference unsandboxed, one thread, each source compiled once:      {args.checks / min(cached_s):8.0f} checks/s")
    print(f"ratio sandbox / released: {sandbox_rate / released_rate:.2f}   (target >= 0.5)")
    print(f"forked path, {len(forked)} reflective checks: sandbox {forked_rate:.0f} checks/s, released "
          f"{released_forked_rate:.0f} checks/s, ratio {forked_rate / released_forked_rate:.3f}")
    print(f"verdicts agree: {agree}/{args.checks + len(forked)}; sandbox stats: {stats}")
    for r, v in [(r, v) for r, v in zip(sandboxed + sandboxed_forked, released + released_forked)
                 if not (r.error is None and r.passed == v)][:5]:
        print(f"  differs: released {v}, sandbox {r}")


if __name__ == "__main__":
    main()
