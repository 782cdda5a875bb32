"""Agreement between annotators of preference data (pure functions, no database).

A *unit* is one item and the list of categories its annotators chose (``["first", "first", "tie"]``).
Units with fewer than two ratings carry no information about agreement and are ignored.

- percentage agreement: the share of agreeing annotator pairs within a unit, averaged over units;
- agreement with the majority: per annotator, how often they chose what the plurality of the *other*
  annotators of the same item chose;
- :func:`annotator_agreement`: both, over the comparisons of a preference data set, as the reward-model
  trainer reports them.

The chance-corrected measures the labeling app shows (Krippendorff's alpha, Fleiss' kappa) are in
:mod:`rlhfkit.feedback.agreement`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlhfkit.data.preferences import Comparison


def pairable_units(units: Sequence[Sequence[Hashable]]) -> list[Counter]:
    """The category counts of each unit with at least two ratings (the others say nothing about agreement)."""
    return [Counter(unit) for unit in units if len(unit) >= 2]


def percent_agreement(units: Sequence[Sequence[Hashable]]) -> float | None:
    """Mean over units of Σ_c n_c (n_c − 1) / (m (m − 1)); None when no unit has two ratings."""
    counted = pairable_units(units)
    if not counted:
        return None
    shares = []
    for counts in counted:
        m = sum(counts.values())
        shares.append(sum(n * (n - 1) for n in counts.values()) / (m * (m - 1)))
    return sum(shares) / len(shares)


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


def annotator_agreement(comparisons: Sequence[Comparison]) -> dict[str, Any] | None:
    """How often two annotators of the same comparison agree; None without two annotators on any.

    A unit is one comparison (prompt and the unordered pair of responses); each annotator's category is
    the response they preferred, or "tie". Human agreement on summarisation and instruction data is
    about 73–77 % (Stiennon et al. 2020; Ouyang et al. 2022), which bounds a reward model's accuracy
    measured against single labels.
    """
    units: dict[tuple[str, frozenset[str]], dict[str, str]] = defaultdict(dict)
    for c in comparisons:
        if c.annotator is None:
            continue
        units[(c.prompt, frozenset((c.chosen, c.rejected)))][c.annotator] = "tie" if c.tie else c.chosen
    shared = {k: v for k, v in units.items() if len(v) >= 2}
    if not shared:
        return None
    pct = percent_agreement([list(v.values()) for v in shared.values()])
    majority = agreement_with_majority(shared)
    agreed = sum(m.agreed for m in majority.values())
    compared = sum(m.compared for m in majority.values())
    return {
        "units": len(shared),
        "annotators": len({a for v in shared.values() for a in v}),
        "pairwise_agreement": pct,
        "agreement_with_majority_of_others": agreed / compared if compared else None,
    }
