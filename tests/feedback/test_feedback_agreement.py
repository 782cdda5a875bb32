"""Chance-corrected agreement (Krippendorff's alpha, Fleiss' kappa) against textbook values and cases worked out
by hand."""

from __future__ import annotations

import pytest

from rlhfkit.data.agreement import percent_agreement
from rlhfkit.feedback.agreement import fleiss_kappa, krippendorff_alpha_nominal

# Fleiss (1971) as reproduced on Wikipedia: 10 subjects, 14 raters, 5 categories; counts per category.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def _units_from_counts(table: list[list[int]]) -> list[list[int]]:
    return [[category for category, n in enumerate(row) for _ in range(n)] for row in table]


def test_fleiss_kappa_textbook_example() -> None:
    units = _units_from_counts(FLEISS_TABLE)
    assert percent_agreement(units) == pytest.approx(0.378, abs=5e-4)  # P-bar
    assert fleiss_kappa(units) == pytest.approx(0.210, abs=5e-4)


def test_krippendorff_alpha_textbook_example_with_missing_values() -> None:
    # Krippendorff, "Computing Krippendorff's alpha-reliability" (2011), nominal example: 4 observers,
    # 12 units, "." = no value. The published alpha is 0.743.
    observers = [
        "1 2 3 3 2 1 4 1 2 . . .",
        "1 2 3 3 2 2 4 1 2 5 . 3",
        ". 3 3 3 2 3 4 2 2 5 1 .",
        "1 2 3 3 2 4 4 1 2 5 1 .",
    ]
    columns = zip(*(row.split() for row in observers))
    units = [[value for value in column if value != "."] for column in columns]
    assert krippendorff_alpha_nominal(units) == pytest.approx(0.743, abs=5e-4)


def test_two_raters_hand_computed() -> None:
    # Units: (a,a) (a,b) (b,b) (a,a). Pairs agree in 3 of 4 units → 75 %.
    # Coincidences: o_aa = 4, o_bb = 2, o_ab = o_ba = 1; n_a = 5, n_b = 3, n = 8.
    # alpha = 1 - (n-1) * (o_ab + o_ba) / (2 n_a n_b) = 1 - 7 * 2 / 30 = 8/15.
    # Fleiss: P-bar = 0.75, p_a = 5/8, p_b = 3/8, P_e = 34/64; kappa = (0.75 - 34/64) / (1 - 34/64) = 7/15.
    units = [["a", "a"], ["a", "b"], ["b", "b"], ["a", "a"]]
    assert percent_agreement(units) == pytest.approx(0.75)
    assert krippendorff_alpha_nominal(units) == pytest.approx(8 / 15)
    assert fleiss_kappa(units) == pytest.approx(7 / 15)


def test_perfect_agreement_and_undefined_cases() -> None:
    assert krippendorff_alpha_nominal([["x", "x"], ["y", "y", "y"]]) == pytest.approx(1.0)
    assert percent_agreement([["x"], ["y"]]) is None, "single ratings carry no agreement information"
    assert krippendorff_alpha_nominal([["x", "x"], ["x", "x"]]) is None, "one category: alpha undefined"
    assert fleiss_kappa([["x", "x"]]) is None
    assert fleiss_kappa([]) is None
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([["x", "x"], ["x", "y", "y"]])
