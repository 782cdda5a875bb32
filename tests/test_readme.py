"""The README's shell blocks, run in order as a newcomer pastes them into a fresh clone's shell.

Every ```bash block of README.md is split into commands, and they run one after another in a fresh folder
holding copies of the repository's configs/ and examples/, with this test's virtualenv first on PATH (what
`source .venv/bin/activate` does) and HF_HUB_OFFLINE=1. A command that trains gets fast settings appended
(FAST below: fewer steps, fewer prompts); otherwise it is the README's, letter for letter, so a wrong path,
a file nothing created, an option that no longer exists or an output folder a block before already filled
fails here. A command whose comment says it needs network or GPUs is not run, nor are the few in NOT_RUN,
each with the test that covers it instead. A README command this file does not know how to treat fails the
test, so a new block cannot escape it. A line whose comment starts with "→" shows an error on purpose: it
must exit with status 2 and print that message.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# Commands not run here, by the start of the command: why, and which test covers them instead.
NOT_RUN = {
    "make demo": "the quick start itself; tests/test_demo.py runs the demo on fast settings",
    "make test": "this test suite",
    "source .venv/bin/activate": "the test puts its virtualenv first on PATH instead",
    "rlhfkit feedback serve": "a server that runs until Ctrl+C; tests/feedback/test_feedback_app.py serves it",
    "OMP_NUM_THREADS=1 accelerate launch": "two processes; tests/engine/test_distributed.py launches them",
    ".venv/bin/python bench/": "a benchmark (minutes); its figures are published with the command that made them",
}
# Settings appended to commands that train or sample, so the whole README runs in about two minutes.
FAST = {
    "rlhfkit sft": ["--set", "sft.max_steps=2", "--set", "sft.eval_examples=4", "--set", "data.synthetic.size=60"],
    "rlhfkit ppo": ["--set", "ppo.steps=2", "--set", "ppo.batch_size=4", "--set", "ppo.mini_batch_size=4",
                    "--set", "ppo.micro_batch_size=4", "--set", "ppo.save_every=1", "--set", "data.synthetic.size=60",
                    "--set", "ppo.max_new_tokens=8", "--set", "ppo.min_new_tokens=8", "--no-progress"],
    "rlhfkit feedback generate": ["-n", "6"],
    "rlhfkit reward make-pairs": ["--size", "40"],
    "rlhfkit reward train": ["--set", "train.max_steps=2", "--set", "normalize.max_samples=20"],
    "rlhfkit eval": ["--set", "eval.prompts=6", "--set", "generation.max_new_tokens=8"],
}  # fmt: skip
NEEDS = re.compile(r"needs (network|\d+ GPUs?)")


@dataclass(frozen=True)
class Command:
    line: str  # the command as the README writes it (continuation lines joined), without its comment
    comment: str  # what follows '#' on the line, or ""


def split_comment(line: str) -> tuple[str, str]:
    """(command, comment): the comment starts at the first '#' outside quotes that follows a space."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def readme_commands(text: str) -> list[Command]:
    """Every command of every ```bash block, in order."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command, comment = split_comment(line.strip())
            if command:
                commands.append(Command(command, comment))
    return commands


def _starts(command: str, prefix: str) -> bool:
    return command == prefix or command.startswith(prefix + " ")


def plan(command: Command) -> tuple[str, list[str]] | None:
    """("run", extra args) or ("error", []) for a command to run; None for one that is not run here."""
    if NEEDS.search(command.comment) or any(_starts(command.line, p) or command.line.startswith(p)
                                            for p in NOT_RUN):  # fmt: skip
        return None
    if command.comment.startswith("→"):
        return "error", []
    if _starts(command.line, "export"):
        return "run", []
    for prefix, extra in FAST.items():
        if _starts(command.line, prefix):
            return "run", extra
    if _starts(command.line, "rlhfkit"):
        return "run", []
    raise AssertionError(f"README command this test does not know how to treat: {command.line!r}; add it to "
                         "NOT_RUN (with the test that covers it) or FAST in tests/test_readme.py")  # fmt: skip


def test_comments_are_split_outside_quotes():
    assert split_comment('rlhfkit reward score --text "#Person1# rude." # a comment') == (
        'rlhfkit reward score --text "#Person1# rude."', "a comment")  # fmt: skip
    assert split_comment("rlhfkit data -n 1") == ("rlhfkit data -n 1", "")


def test_every_readme_command_is_either_run_or_covered_elsewhere():
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert len(commands) > 20, "the README's shell blocks were not found"
    planned = [plan(c) for c in commands]  # raises on a command nobody decided about
    assert sum(p is not None for p in planned) > 15


@pytest.mark.slow
def test_the_readme_runs_as_written(tmp_path):
    for folder in ("configs", "examples"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}  # fmt: skip
    ran = []
    for command in readme_commands(README.read_text(encoding="utf-8")):
        what = plan(command)
        if what is None:
            continue
        kind, extra = what
        line = command.line + "".join(" " + shlex.quote(a) for a in extra)
        started = time.monotonic()
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        print(f"{time.monotonic() - started:6.1f} s  {line}")  # shown with -s: where the test's time goes
        said = done.stdout + done.stderr
        if kind == "error":
            expected = command.comment.lstrip("→ ").split("...")[0].strip()
            assert done.returncode == 2 and expected in said, f"{line}\nexpected exit 2 and {expected!r}:\n{said}"
        else:
            assert done.returncode == 0, f"README command failed (exit {done.returncode}): {line}\n{said[-3000:]}"
            assert "Traceback" not in said, f"{line}\n{said[-3000:]}"
        ran.append(command.line)
    assert len(ran) > 15
    # what the README writes stays under runs/ (git-ignored), never in the repository's root
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs", "examples", "runs"]
