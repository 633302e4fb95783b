"""The README's tutorial ("A first job module, in ten minutes"), run as written.

Its blocks marked ``<!-- tutorial: NAME -->`` are taken from README.md: the files are
written into a directory of their own (the user's working directory), and the commands
run there against a stack of the test's own. The README is the source: a renamed
function, a wrong import or a changed output there fails this test.

What differs from a user's terminal, and why: the gateway listens on a free port, not
8000, so ``submit.py`` gets it by ``JOBLEDGER_URL`` (which it reads, as the README
shows) and ``jobledger history`` by ``--url``; the settings of the test's schema and
broker prefix come from the stack's environment."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, Stack

HEADING = "### A first job module, in ten minutes"
BIN = Path(sys.executable).parent  # the .venv/bin the README's commands name
BLOCK = re.compile(r"<!-- tutorial: (\S+) -->\n```[^\n]*\n(.*?)\n```", re.DOTALL)
OUTPUT = re.compile(r"```[^\n]*\n(.*?)\n```", re.DOTALL)
JOB_ID = re.compile(r"^jobledger history (\S+)$", re.MULTILINE)
PROGRESS = re.compile(r"^ *\d+% ")


def tutorial() -> str:
    """The subsection's text, up to the next heading of its level or above."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index(HEADING) + len(HEADING)
    end = re.search(r"^#{1,3} ", readme[start:], re.MULTILINE)
    return readme[start : start + end.start()] if end else readme[start:]


def blocks(text: str) -> dict[str, str]:
    """The marked blocks by name; all that the test runs must be there."""
    found = dict(BLOCK.findall(text))
    names = {
        "myjobs.py",
        "run",
        "token",
        "submit.py",
        "submit",
        "history",
        "test_myjobs.py",
        "pytest",
    }
    assert names <= found.keys(), sorted(found)
    return found


def shown_output(text: str, command: str) -> str:
    """The output block the README shows right after the command's block."""
    after = text[text.index(f"<!-- tutorial: {command} -->") :]
    after = after[after.index("```", after.index("```") + 3) + 3 :]  # past the command
    shown = OUTPUT.search(after)
    assert shown, f"no output shown after {command!r}"
    return shown.group(1)


def argv(command: str) -> list[str]:
    """A README command line as an argv: ``.venv/bin/X`` is this venv's X."""
    words = shlex.split(command)
    assert words[0].startswith(".venv/bin/"), command
    return [str(BIN / words[0].removeprefix(".venv/bin/")), *words[1:]]


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.mark.timeout(600)  # a stack and five commands, on a loaded machine
def test_the_tutorial_runs_as_written(stack: Stack, tmp_path: Path) -> None:
    text = tutorial()
    code = blocks(text)
    workdir = tmp_path / "clone"
    workdir.mkdir()
    for name in ("myjobs.py", "submit.py", "test_myjobs.py"):
        (workdir / name).write_text(code[name] + "\n")
    # pytest in the clone reads the clone's pyproject.toml (its filterwarnings=error too).
    shutil.copy(ROOT / "pyproject.toml", workdir / "pyproject.toml")

    # Terminal one: the control plane and a worker for myjobs, from the working directory.
    serve = argv(code["run"])
    assert serve[0].endswith("/jobledger"), serve
    stack.start(*serve[1:], cwd=workdir, program=(serve[0],))
    stack.wait_ready()

    # Terminal two: export JOBLEDGER_TOKEN=$(...), then submit.py.
    one_line = code["token"].replace("\\\n", " ")  # the README breaks it with a backslash
    exported = re.fullmatch(r"export (\w+)=\$\((.*)\)", one_line)
    assert exported, code["token"]
    token = run(argv(exported.group(2)), workdir, stack.env).strip()
    env = {**stack.env, exported.group(1): token, "JOBLEDGER_URL": stack.url}
    printed = run(argv(code["submit"]), workdir, env)

    # Every line the README shows is printed, the failed job's id aside; of the progress
    # lines, the last (a loaded worker coalesces reports closer than its interval).
    shown = JOB_ID.sub("", shown_output(text, "submit")).splitlines()
    progress = [line for line in shown if PROGRESS.match(line)]
    lines = printed.splitlines()
    for line in [line for line in shown if line and not PROGRESS.match(line)] + progress[-1:]:
        assert line in lines, f"{line!r} not in:\n{printed}"
    assert {line for line in lines if PROGRESS.match(line)} <= set(progress), printed
    job_id = JOB_ID.search(printed)
    assert job_id, printed

    history = argv(code["history"].replace("JOB_ID", job_id.group(1)))
    told = run([*history, "--url", stack.url], workdir, env)
    # The traceback lines the README shows whole (not trimmed with …) are printed.
    told_lines = told.splitlines()
    traceback_lines = [
        line
        for line in shown_output(text, "history").splitlines()
        if line.startswith("       | ") and "…" not in line
    ]
    assert any("raise ValueError" in line for line in traceback_lines), "no raise shown"
    for line in traceback_lines:
        assert line in told_lines, f"{line!r} not in:\n{told}"
    assert "failed  attempt 2/2" in told.splitlines()[0], told
    assert told.count("AttemptFailed") == 2, told

    # The user's tests, with pytest, in the working directory.
    passed = run(argv(code["pytest"]), workdir, stack.env)
    assert "2 passed" in passed, passed
