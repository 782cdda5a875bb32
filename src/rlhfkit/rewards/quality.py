"""The quality gate between reward-model training and RL: is this reward model worth optimising against?

A reward model that learned nothing still produces numbers, and PPO will optimise them. The gate judges a
trained model from three facts that `rlhfkit reward train` already measures:

1. **Enough held-out pairs to judge at all.** Below ``min_pairs`` even a good model cannot be told from
   chance, so the verdict says "too few to judge" rather than "weak".
2. **Held-out accuracy above chance, with confidence.** The lower end of the Wilson score interval
   (E. B. Wilson, "Probable inference, the law of succession, and statistical inference", JASA 22, 1927)
   of the held-out accuracy must lie above chance: 0.5 for pairs, the majority label's share for unpaired
   good/bad labels. Wilson rather than p ± z·√(p(1−p)/n) because the latter collapses to a zero-width
   interval at p = 0 or 1 and is badly off for the small n this gate exists to catch.
3. **A score that varies.** A near-constant model has a tiny normalisation std; dividing by it blows
   rounding-level wobbles up to unit-size rewards (the symptom: ``reward = (logit - -0.02291) / 8.119e-05``).

Pure: numbers in, a :class:`QualityVerdict` out. Printing, warning and stopping are the callers' business.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rlhfkit.rewards.losses import Z_95, wilson_interval


class WeakRewardModelWarning(UserWarning):
    """Issued (``warnings.warn``) when a trained reward model fails the quality gate; filter it by class."""


@dataclass(frozen=True)
class QualityThresholds:
    min_pairs: int = 25
    """Fewest held-out examples to judge from. At n = 25 a model that is right 70 % of the time (about as
    often as two human annotators agree with each other, 73-77 % on real data) has a Wilson lower bound of
    0.504, just above chance; with fewer pairs such a model would fail the chance test below, so a failure
    would say nothing about the model. It holds even when a smaller set happens to clear chance: a few pairs
    come from a handful of prompts, neither independent (as the interval assumes) nor representative."""
    z: float = Z_95
    """Normal quantile of the interval: 1.96, the 95 % interval `reward train` prints. Its lower end is a
    one-sided 97.5 % bound, so a model no better than chance passes at most 2.5 % of the time."""
    min_score_std: float = 0.01
    """Smallest std of the raw scores, in logits. A Bradley-Terry score difference is a log-odds: with a
    std of 0.01 two typical responses differ by about √2·0.01, a predicted preference of σ(0.014) = 0.5035,
    a coin flip. Normalising such a model multiplies its differences by 100 or more."""
    min_relative_std: float = 1e-3
    """Smallest std of the raw scores relative to their typical size √(mean² + std²). Below it the score is a
    constant plus a wobble in the fourth significant digit, which padding and batch composition move
    (float32 rounding through every layer); normalisation would turn that wobble into the reward."""


@dataclass(frozen=True)
class QualityVerdict:
    ok: bool
    """True when no problem was found: the model may go on to RL."""
    problems: tuple[str, ...]
    """One plain sentence per problem: what is wrong and what to do."""
    n: int
    """Held-out examples the accuracy is measured on (pairs labelled as ties excluded)."""
    accuracy: float | None
    ci_low: float
    """Wilson interval of the held-out accuracy (0 to 1 when n is 0)."""
    ci_high: float
    chance: float
    """The accuracy of guessing: 0.5 for pairs, the majority label's share for unpaired labels."""
    score_std: float | None
    """Std of the raw scores the spread is judged on (None when not measured)."""
    score_mean: float | None
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (problems as a list)."""
        return {**asdict(self), "problems": list(self.problems)}

    def describe(self) -> str:
        """One line when the model passes; otherwise every problem, one per line."""
        if self.ok:
            return (f"quality gate: passed (held-out accuracy's 95% lower bound {self.ci_low:.1%} > chance "
                    f"{self.chance:.0%}, n={self.n})")  # fmt: skip
        return "quality gate: FAILED\n" + "\n".join(f"  - {p}" for p in self.problems)


def chance_accuracy(labels: Sequence[bool | float]) -> float:
    """The accuracy of always answering the majority label (0.5 with no labels): chance for unpaired labels."""
    if not labels:
        return 0.5
    good = sum(1 for x in labels if float(x) >= 0.5) / len(labels)
    return max(good, 1.0 - good)


def judge_reward_model(successes: float, n: int, score_mean: float | None = None, score_std: float | None = None,
                       chance: float = 0.5, thresholds: QualityThresholds | None = None) -> QualityVerdict:  # fmt: skip
    """The verdict on a reward model right on ``successes`` of ``n`` held-out examples (a tie of scores counts
    ½), whose raw scores have ``score_mean`` and ``score_std`` (None when not measured)."""
    t = thresholds or QualityThresholds()
    low, high = wilson_interval(successes, n, t.z)
    accuracy = successes / n if n else None
    found = (_accuracy_problem(accuracy, n, low, high, chance, t), _spread_problem(score_mean, score_std, t))
    problems = [p for p in found if p is not None]
    return QualityVerdict(not problems, tuple(problems), n, accuracy, low, high, chance, score_std, score_mean, t)


def _accuracy_problem(accuracy: float | None, n: int, low: float, high: float, chance: float,
                      t: QualityThresholds) -> str | None:  # fmt: skip
    measured = f"{accuracy or 0.0:.1%} (95% CI {low:.1%}-{high:.1%}, n={n})"  # accuracy is None only at n = 0
    if n < t.min_pairs:
        shown = f"accuracy {accuracy:.1%}, 95% CI {low:.1%}-{high:.1%}" if accuracy is not None else "no accuracy"
        return (f"only {n} held-out examples ({shown}), too few to judge the model by (the gate needs at "
                f"least {t.min_pairs}): label more pairs, or hold out more of them (data.test_size, or "
                "data.eval_files).")  # fmt: skip
    if high < chance:
        return (f"held-out accuracy {measured} is below chance ({chance:.0%}) with confidence: the labels may "
                "be swapped (chosen and rejected, or good and bad) in the training or the held-out data; check "
                "the export, and check annotator agreement with `rlhfkit feedback stats --store STORE`.")  # fmt: skip
    if low <= chance:
        return (f"held-out accuracy {measured} cannot be told from chance ({chance:.0%}): the model learned no "
                "preference that holds on new prompts. Check annotator agreement with `rlhfkit feedback stats "
                "--store STORE` (arbitrary or inconsistent labels teach nothing), label more pairs, or train longer "
                "(train.epochs, train.learning_rate).")  # fmt: skip
    return None


def _spread_problem(mean: float | None, std: float | None, t: QualityThresholds) -> str | None:
    if mean is None or std is None:
        return None
    size = math.sqrt(mean * mean + std * std)
    if std >= t.min_score_std and std >= t.min_relative_std * size:
        return None
    return (f"the score is nearly constant: std {std:.3g} around {mean:.4g} (the gate needs at least "
            f"{t.min_score_std:g}, and {t.min_relative_std:g} of the scores' size), and normalising divides every "
            "score difference by that std, turning differences the model barely makes into unit-size rewards. "
            "The model did not learn to tell responses apart: train longer or with a larger "
            "train.learning_rate, and check that the chosen and rejected responses differ.")  # fmt: skip
