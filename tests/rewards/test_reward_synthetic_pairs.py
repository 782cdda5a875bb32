"""Synthetic preference pairs: two kinds per dialogue, label noise that flips exactly, reproducible."""

from __future__ import annotations

import pytest

from rlhfkit.errors import RlhfkitError
from rlhfkit.rewards.synthetic_pairs import make_synthetic_pairs


def test_synthetic_pairs_shape_and_label_noise():
    clean = make_synthetic_pairs(size=50, seed=3)
    assert len(clean) == 100  # a toxic pair and a quality pair per dialogue
    assert all(r["chosen"] != r["rejected"] for r in clean)
    noisy = make_synthetic_pairs(size=50, seed=3, flip=1.0)
    assert [(r["chosen"], r["rejected"]) for r in noisy] == [(r["rejected"], r["chosen"]) for r in clean]
    assert make_synthetic_pairs(size=50, seed=3) == clean
    with pytest.raises(RlhfkitError, match="pair kinds"):
        make_synthetic_pairs(size=5, kinds=["rude"])
