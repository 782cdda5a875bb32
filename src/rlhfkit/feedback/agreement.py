"""Chance-corrected inter-annotator agreement for nominal labels, as the labeling app reports it.

Units are as in :mod:`rlhfkit.data.agreement` (one item, the categories its annotators chose; units with
fewer than two ratings are ignored), which also holds percentage agreement and agreement with the majority.

- Krippendorff's α (nominal): 1 − observed / expected disagreement, from the coincidence matrix; it
  allows a different number of annotators per unit (Krippendorff, *Content Analysis*, 2004, ch. 11);
- Fleiss' κ: chance-corrected agreement when every unit has the same number of ratings
  (Fleiss, 1971, "Measuring nominal scale agreement among many raters").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

from rlhfkit.data.agreement import pairable_units, percent_agreement


def krippendorff_alpha_nominal(units: Sequence[Sequence[Hashable]]) -> float | None:
    """Krippendorff's α for nominal data; None when it is undefined (no pairable unit, one category).

    With o_ck the coincidence counts (each ordered pair of ratings within a unit of m ratings adds
    1 / (m − 1)), n_c = Σ_k o_ck and n = Σ_c n_c:  α = 1 − (n − 1) Σ_{c≠k} o_ck / Σ_{c≠k} n_c n_k.
    """
    counted = pairable_units(units)
    if not counted:
        return None
    observed_disagreement = 0.0  # Σ_{c≠k} o_ck
    totals: Counter = Counter()  # n_c
    for counts in counted:
        m = sum(counts.values())
        for c, n_c in counts.items():
            totals[c] += n_c  # each rating is paired with the m − 1 others, each pair weighing 1 / (m − 1)
            observed_disagreement += n_c * (m - n_c) / (m - 1)
    n = sum(totals.values())
    expected_disagreement = n * n - sum(v * v for v in totals.values())  # Σ_{c≠k} n_c n_k
    if expected_disagreement == 0:
        return None
    return 1.0 - (n - 1) * observed_disagreement / expected_disagreement


def fleiss_kappa(units: Sequence[Sequence[Hashable]]) -> float | None:
    """Fleiss' κ = (P̄ − P̄_e) / (1 − P̄_e); every unit must have the same number (≥ 2) of ratings.

    None when there is no unit or chance agreement is 1 (every rating is the same category).
    """
    counted = pairable_units(units)
    if not counted:
        return None
    sizes = {sum(c.values()) for c in counted}
    if len(sizes) != 1 or len(counted) != len(units):
        raise ValueError(
            f"Fleiss' kappa needs the same number (>= 2) of ratings per unit, found sizes {sorted(sizes)}"
        )
    p_bar = percent_agreement(units)
    assert p_bar is not None
    totals: Counter = Counter()
    for counts in counted:
        totals.update(counts)
    n_ratings = sum(totals.values())
    p_e = sum((v / n_ratings) ** 2 for v in totals.values())
    if p_e == 1.0:
        return None
    return (p_bar - p_e) / (1.0 - p_e)
