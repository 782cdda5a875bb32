"""Inter-annotator agreement for nominal labels (pure functions, no database).

A *unit* is one item and the list of categories its annotators chose (``["first", "first", "tie"]``).
Units with fewer than two ratings carry no information about agreement and are ignored.

- percentage agreement: the share of agreeing annotator pairs within a unit, averaged over units;
- Krippendorff's α (nominal): 1 − observed / expected disagreement, from the coincidence matrix; it
  allows a different number of annotators per unit (Krippendorff, *Content Analysis*, 2004, ch. 11);
- Fleiss' κ: chance-corrected agreement when every unit has the same number of ratings
  (Fleiss, 1971, "Measuring nominal scale agreement among many raters").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass


def _pairable(units: Sequence[Sequence[Hashable]]) -> list[Counter]:
    return [Counter(unit) for unit in units if len(unit) >= 2]


def percent_agreement(units: Sequence[Sequence[Hashable]]) -> float | None:
    """Mean over units of Σ_c n_c (n_c − 1) / (m (m − 1)); None when no unit has two ratings."""
    counted = _pairable(units)
    if not counted:
        return None
    shares = []
    for counts in counted:
        m = sum(counts.values())
        shares.append(sum(n * (n - 1) for n in counts.values()) / (m * (m - 1)))
    return sum(shares) / len(shares)


def krippendorff_alpha_nominal(units: Sequence[Sequence[Hashable]]) -> float | None:
    """Krippendorff's α for nominal data; None when it is undefined (no pairable unit, one category).

    With o_ck the coincidence counts (each ordered pair of ratings within a unit of m ratings adds
    1 / (m − 1)), n_c = Σ_k o_ck and n = Σ_c n_c:  α = 1 − (n − 1) Σ_{c≠k} o_ck / Σ_{c≠k} n_c n_k.
    """
    counted = _pairable(units)
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
    counted = _pairable(units)
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


def plurality(categories: Sequence[Hashable]) -> Hashable | None:
    """The most frequent category, or None when the top count is shared (or there is nothing)."""
    ranked = Counter(categories).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


@dataclass(frozen=True)
class MajorityAgreement:
    """How often one annotator agreed with the majority of the other annotators of the same items."""

    agreed: int
    compared: int
    """Items where the others had a clear (unshared) plurality to compare with."""

    @property
    def rate(self) -> float | None:
        return self.agreed / self.compared if self.compared else None


def agreement_with_majority(
    ratings: Mapping[Hashable, Mapping[Hashable, Hashable]],
) -> dict[Hashable, MajorityAgreement]:
    """Per annotator, agreement with the plurality of the *other* annotators, item by item.

    ``ratings[item][annotator] = category``. Leaving the annotator out of their own majority keeps the
    figure honest: with three annotators, counting oneself would guarantee at least one vote of two.
    Items where the others are split evenly are not counted.
    """
    agreed: Counter = Counter()
    compared: Counter = Counter()
    annotators: set[Hashable] = set()
    for by_annotator in ratings.values():
        for annotator, category in by_annotator.items():
            annotators.add(annotator)
            others = [c for a, c in by_annotator.items() if a != annotator]
            majority = plurality(others)
            if majority is None:
                continue
            compared[annotator] += 1
            agreed[annotator] += category == majority
    return {a: MajorityAgreement(agreed=agreed[a], compared=compared[a]) for a in annotators}
