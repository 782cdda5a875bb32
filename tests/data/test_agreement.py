"""Percentage agreement's building blocks, agreement with the majority, and agreement over a preference data set."""

from __future__ import annotations

import pytest

from rlhfkit.data.agreement import MajorityAgreement, agreement_with_majority, annotator_agreement, plurality
from rlhfkit.data.preference_sources import load_preferences
from rlhfkit.data.preferences import Comparison
from rlhfkit.rewards.synthetic_pairs import make_synthetic_pairs


def test_plurality() -> None:
    assert plurality(["a", "b", "a"]) == "a"
    assert plurality(["a", "b"]) is None
    assert plurality([]) is None


def test_agreement_with_majority_leaves_the_annotator_out() -> None:
    ratings = {
        1: {"ann": "a", "bob": "a", "cat": "a"},
        2: {
            "ann": "a",
            "bob": "b",
            "cat": "b",
        },  # ann against b/b; bob and cat see a split (a vs b): not counted
        3: {"ann": "b", "bob": "b"},
        4: {"ann": "a"},  # nobody to compare with
    }
    result = agreement_with_majority(ratings)
    assert result["ann"] == MajorityAgreement(agreed=2, compared=3)
    assert result["bob"] == MajorityAgreement(agreed=2, compared=2)
    assert result["cat"] == MajorityAgreement(agreed=1, compared=1)
    assert result["ann"].rate == pytest.approx(2 / 3)
    assert MajorityAgreement(0, 0).rate is None


def test_annotator_agreement_from_simulated_annotators(tmp_path, write_jsonl):
    rows = make_synthetic_pairs(size=100, seed=0, flip=0.2, annotators=3)
    data = load_preferences([str(write_jsonl(tmp_path / "a.jsonl", rows))])
    a = annotator_agreement(data.comparisons)
    assert a["units"] == 200 and a["annotators"] == 3
    # two annotators who each flip with p = 0.2 agree with probability 0.8² + 0.2² = 0.68
    assert 0.62 < a["pairwise_agreement"] < 0.74
    assert annotator_agreement([Comparison("p", "a", "b")]) is None
