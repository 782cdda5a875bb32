"""The core commands work without the optional extras; a command that needs one names it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Runs in a fresh interpreter where importing SQLAlchemy fails, as on an install without the feedback extra.
_WITHOUT_SQLALCHEMY = textwrap.dedent(
    """
    import sys
    sys.modules["sqlalchemy"] = None  # makes `import sqlalchemy` raise ModuleNotFoundError
    from rlhfkit.cli import build_parser, main
    parser = build_parser()
    assert parser.parse_args(["ppo", "--config", "x.yaml"]).command == "ppo"
    code = main(["feedback", "stats", "--store", sys.argv[1]])
    print("exit", code)
    """
)


def test_cli_builds_without_the_feedback_extra_and_feedback_names_it(tmp_path):
    done = subprocess.run([sys.executable, "-c", _WITHOUT_SQLALCHEMY, str(tmp_path / "fb.sqlite")],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "exit 2" in done.stdout
    assert "pip install 'rlhfkit[feedback]'" in done.stderr
    assert "sqlalchemy is not installed" in done.stderr
    assert "Traceback" not in done.stderr


_WITHOUT_SCIPY = textwrap.dedent(
    """
    import sys
    sys.modules["scipy"] = None
    from rlhfkit.cli import main
    print("exit", main(["eval", "--policy", "a=base", "--policy", "b=base", "-o", sys.argv[1]]))
    """
)


def test_eval_without_the_eval_extra_names_it_before_any_work(tmp_path):
    out = tmp_path / "eval"
    done = subprocess.run([sys.executable, "-c", _WITHOUT_SCIPY, str(out)], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "exit 2" in done.stdout
    assert "pip install 'rlhfkit[eval]'" in done.stderr and "scipy not installed" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
