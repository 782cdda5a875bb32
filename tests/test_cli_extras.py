"""The core commands work without the optional extras; a command that needs one names it; typos get a guess."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

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


# --------------------------------------------------------------------------------------------------
# Typos: the error names the subcommand, shows its usage and suggests the closest spelling


def _parse_error(argv, capsys):
    """(exit status, stderr) of parsing ``argv``; parsing stops before any command runs."""
    from rlhfkit.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(argv)
    return stopped.value.code, capsys.readouterr().err


def test_typo_in_a_subcommand_option_shows_that_subcommands_usage_and_suggests(capsys):
    code, err = _parse_error(["sft", "--confg", "x.yaml"], capsys)
    assert code == 2
    assert err.startswith("usage: rlhfkit sft ")
    assert "rlhfkit sft: error: unrecognized arguments: --confg x.yaml" in err
    assert "Did you mean --config?" in err and "Traceback" not in err


def test_typo_in_a_nested_subcommand_option_and_name(capsys):
    code, err = _parse_error(["eval", "--polcy", "a=base"], capsys)
    assert code == 2 and err.startswith("usage: rlhfkit eval ") and "Did you mean --policy?" in err
    code, err = _parse_error(["reward", "backbone"], capsys)
    assert code == 2 and err.startswith("usage: rlhfkit reward ") and "Did you mean backbones?" in err


def test_typo_in_the_subcommand_name_suggests_the_closest(capsys):
    code, err = _parse_error(["spt"], capsys)
    assert code == 2 and "invalid choice: 'spt'" in err and "Did you mean sft?" in err


def test_unknown_word_with_nothing_close_gets_no_guess(capsys):
    code, err = _parse_error(["sft", "--zzzzzz"], capsys)
    assert code == 2 and err.startswith("usage: rlhfkit sft ") and "Did you mean" not in err


# --------------------------------------------------------------------------------------------------
# The demo's own keys (feedback.*, reward_model.*) are explainable


def test_config_demo_explains_the_demos_own_keys_and_applies_set(capsys):
    from rlhfkit.cli import main

    assert main(["config", "--demo", "--explain", "--set", "feedback.prompts=50"]) == 0
    out = capsys.readouterr().out
    assert "feedback.prompts = 50\n    Training prompts whose SFT samples are compared." in out
    assert "reward_model.train.learning_rate = " in out and "kl_comparison = False" in out
    assert "sft.learning_rate = " in out  # the sections every command shares are there too
    assert main(["config", "--demo"]) == 0
    assert "feedback:\n  prompts: 400" in capsys.readouterr().out


def test_config_explain_points_at_the_demo_keys_and_demo_refuses_a_file(capsys):
    from rlhfkit.cli import main

    assert main(["config", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "feedback.prompts" not in out and "rlhfkit config --demo --explain" in out
    assert main(["config", "--demo", "--config", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlhfkit config: error: --demo shows") and "Traceback" not in err


def _openmp_env_after_import(env_overrides: dict[str, str]) -> tuple[str | None, str | None]:
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_overrides)
    code = "import os, json, rlhfkit; print(json.dumps([os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT')]))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return tuple(json.loads(out.stdout))


def test_importing_rlhfkit_makes_openmp_threads_spin_briefly_unless_the_user_chose():
    # set before torch is imported (libgomp reads it then); bench/cpu_contention.py measures why
    assert _openmp_env_after_import({}) == (None, "2000")
    assert _openmp_env_after_import({"OMP_WAIT_POLICY": "PASSIVE"}) == ("PASSIVE", None)
    assert _openmp_env_after_import({"GOMP_SPINCOUNT": "0"}) == (None, "0")
    assert _openmp_env_after_import({"OMP_WAIT_POLICY": ""}) == ("", None)
