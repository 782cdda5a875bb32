"""Preference records: written as exactly TRL's fields, atomically; split and capped by prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhfkit.data.preference_readers import read_trl_pairs
from rlhfkit.data.preferences import (
    Comparison,
    PreferencePair,
    UnpairedLabel,
    cap_by_prompt,
    pair_to_trl,
    split_by_prompt,
    unpaired_to_trl,
    write_jsonl_atomic,
)
from rlhfkit.errors import RlhfkitError


def test_trl_lines_have_exactly_the_trl_fields() -> None:
    pair = PreferencePair("p", "c", "r", margin=None, annotator="a", chosen_source="ppo")
    assert pair_to_trl(pair) == {"prompt": "p", "chosen": "c", "rejected": "r", "margin": 0.0}
    assert pair_to_trl(PreferencePair("p", "c", "r", margin=3)) == {
        "prompt": "p",
        "chosen": "c",
        "rejected": "r",
        "margin": 3.0,
    }
    assert unpaired_to_trl(UnpairedLabel("p", "c", True, "x")) == {
        "prompt": "p",
        "completion": "c",
        "label": True,
    }


def test_atomic_write_round_trips_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("old content\n")
    pairs = [PreferencePair("p<script>", "ünïcode ✓", "r\nwith newline", margin=1.0)]
    assert write_jsonl_atomic((pair_to_trl(p) for p in pairs), path) == 1
    assert list(read_trl_pairs(path)) == pairs
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"], "no temporary file left behind"


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("old content\n")

    def broken():
        yield {"prompt": "p", "chosen": "c", "rejected": "r", "margin": 1.0}
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(broken(), path)
    assert path.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_split_by_prompt_keeps_each_prompts_pairs_together():
    items = [Comparison(f"p{i // 3}", f"c{i}", f"r{i}") for i in range(30)]  # 10 prompts, 3 pairs each
    train, test = split_by_prompt(items, 0.2, seed=1)
    assert len(test) == 6 and len(train) == 24
    assert not {c.prompt for c in train} & {c.prompt for c in test}
    assert split_by_prompt(items, 0.2, seed=1) == (train, test)  # deterministic
    with pytest.raises(RlhfkitError, match="share one prompt"):
        split_by_prompt([Comparison("p", "a", "b")] * 2, 0.5, 0)


def test_cap_by_prompt_keeps_whole_groups():
    items = [Comparison(f"p{i // 2}", f"c{i}", f"r{i}") for i in range(10)]
    assert len(cap_by_prompt(items, 3)) == 4 and cap_by_prompt(items, None) == items
