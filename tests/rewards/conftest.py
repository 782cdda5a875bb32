"""Fixtures of the reward tests: tiny backbones built once per session, synthetic pairs, a CLI runner."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_bert_dir(_preset_cache) -> str:
    from rlhfkit.rewards.tiny_backbones import ensure_backbone

    return str(ensure_backbone("tiny-bert"))


@pytest.fixture(scope="session")
def hate_classifier_dir(_preset_cache) -> str:
    from rlhfkit.rewards.tiny_backbones import ensure_backbone

    return str(ensure_backbone("tiny-hate-classifier"))


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def write_jsonl():
    """``write_jsonl(path, rows)`` writes one JSON object per line and returns the path."""
    return _write_jsonl


@pytest.fixture(scope="session")
def synthetic_pair_files(tmp_path_factory) -> tuple[Path, Path]:
    """(train, held-out) synthetic preference files from different corpus seeds."""
    from rlhfkit.rewards.synthetic_pairs import make_synthetic_pairs

    folder = tmp_path_factory.mktemp("pairs")
    train = _write_jsonl(folder / "train.jsonl", make_synthetic_pairs(size=60, seed=0))
    test = _write_jsonl(folder / "test.jsonl", make_synthetic_pairs(size=20, seed=1))
    return train, test


@pytest.fixture
def reward_cli(capsys):
    """``reward_cli([...])`` runs `rlhfkit reward ...` through register() as rlhfkit.cli.main does.

    Returns (exit status, stdout, stderr); a user error exits 2 with one paragraph on stderr.
    """
    from rlhfkit.errors import RlhfkitError
    from rlhfkit.rewards.cli import register

    def run(argv: list[str]) -> tuple[int, str, str]:
        parser = argparse.ArgumentParser(prog="rlhfkit")
        register(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["reward", *argv])
        try:
            code = int(args.func(args) or 0)
        except RlhfkitError as e:
            print(f"rlhfkit reward: error: {e}", file=sys.stderr)
            code = 2
        out, err = capsys.readouterr()
        return code, out, err

    return run
