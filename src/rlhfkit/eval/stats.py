"""Statistics a reviewer would accept: bootstrap confidence intervals, paired tests and win rates.

Everything works on 1-D arrays of per-prompt values. Intervals are percentile bootstraps over prompts
(Efron & Tibshirani 1993, ch. 13) computed by ``scipy.stats.bootstrap``; the paired test is the Wilcoxon
signed-rank test with Pratt's handling of zero differences (Pratt 1959), which keeps the many exact ties
of a 0/1 measure such as "contains an insult" in the ranking instead of silently dropping them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class Summary:
    """One policy's values of one measure over the evaluation prompts."""

    n: int
    mean: float
    mean_ci: Interval
    median: float
    median_ci: Interval
    std: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PairedComparison:
    """Policy b against policy a on the same prompts: differences are b − a."""

    n: int
    mean_difference: float
    ci: Interval
    """Bootstrap interval of the mean difference."""
    statistic: float
    """Wilcoxon signed-rank statistic."""
    p_value: float
    """Two-sided p-value of the Wilcoxon signed-rank test (1.0 when every difference is 0)."""
    b_higher: float
    """Share of prompts where b's value is higher than a's."""
    equal: float
    """Share of prompts where the two values are equal."""
    b_lower: float
    """Share of prompts where b's value is lower than a's."""

    def win_rate(self, higher_is_better: bool) -> float:
        """Share of prompts where b is better than a (ties count as half a win)."""
        wins = self.b_higher if higher_is_better else self.b_lower
        return wins + 0.5 * self.equal

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_interval(values: Sequence[float], statistic: Callable[..., Any] = np.mean, *, confidence: float = 0.95,
                       resamples: int = 2000, seed: int = 0) -> Interval:  # fmt: skip
    """Percentile bootstrap interval of ``statistic`` over ``values`` (n,), resampling values with replacement.

    ``statistic(sample, axis=-1)`` must reduce along the last axis (np.mean and np.median do). A constant
    sample gives the degenerate interval [value, value].
    """
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return Interval(float("nan"), float("nan"))
    if np.all(data == data[0]):
        value = float(statistic(data, axis=-1))
        return Interval(value, value)
    result = bootstrap((data,), statistic, n_resamples=resamples, confidence_level=confidence, method="percentile",
                       vectorized=True, random_state=np.random.default_rng(seed))  # fmt: skip
    return Interval(float(result.confidence_interval.low), float(result.confidence_interval.high))


def summarize(values: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> Summary:
    """Mean, median and standard deviation of ``values`` (n,), with bootstrap intervals of the mean and median."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("cannot summarise an empty list of values")
    kw = {"confidence": confidence, "resamples": resamples, "seed": seed}
    return Summary(
        n=int(data.size),
        mean=float(data.mean()),
        mean_ci=bootstrap_interval(data, np.mean, **kw),
        median=float(np.median(data)),
        median_ci=bootstrap_interval(data, np.median, **kw),
        std=float(data.std(ddof=1)) if data.size > 1 else 0.0,
    )


def compare_paired(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000,
                   seed: int = 0) -> PairedComparison:  # fmt: skip
    """Paired comparison of ``b`` against ``a`` (both (n,), value i of each from prompt i).

    The interval resamples prompts, i.e. the differences b_i − a_i, so it accounts for the pairing; the
    Wilcoxon test asks whether the differences are symmetric around 0.
    """
    from scipy.stats import wilcoxon

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired values need two 1-D arrays of one length, got shapes {x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError("cannot compare empty lists of values")
    diff = y - x
    if np.all(diff == 0):
        statistic, p_value = 0.0, 1.0
    else:
        test = wilcoxon(diff, zero_method="pratt", alternative="two-sided")
        statistic, p_value = float(test.statistic), float(test.pvalue)
    return PairedComparison(
        n=int(diff.size),
        mean_difference=float(diff.mean()),
        ci=bootstrap_interval(diff, np.mean, confidence=confidence, resamples=resamples, seed=seed),
        statistic=statistic,
        p_value=p_value,
        b_higher=float(np.mean(diff > 0)),
        equal=float(np.mean(diff == 0)),
        b_lower=float(np.mean(diff < 0)),
    )


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique word n-grams over all word n-grams of ``texts``; 0.0 when there are none.

    A measure of n-gram variety, not of collapse: one answer repeated for every prompt lowers it, but word
    salad (random words, often in short responses) raises it above fluent text, because it repeats fewer
    n-grams. Use :func:`repeated_share` to see a collapse. A property of the whole set of responses, so it
    gets no bootstrap interval: resampling responses with replacement duplicates some of them and biases
    distinct-n downwards.
    """
    total, unique = 0, set()
    for text in texts:
        words = text.split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else 0.0



def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


def repeated_share(texts: Sequence[str]) -> float:
    """Share of the responses whose text, ignoring case and spacing, is also the response to another prompt.

    The collapse check: 0 when every prompt got a response of its own, 1 when every response is one of
    a few answers given regardless of the prompt, the loss of output diversity across inputs that RLHF is
    known for (Kirk et al. 2024, "Understanding the effects of RLHF on LLM generalisation and diversity",
    ICLR). Word salad does not raise it, since each salad differs from the others (ROUGE-L against the
    references and the KL to the reference show salad), and near-duplicates that differ in one word are not
    counted. It is the limit case of across-input similarity measures such as Self-BLEU (Zhu et al. 2018,
    "Texygen", SIGIR), kept as a plain count so that its value reads directly. Empty responses count as one
    answer too. No bootstrap interval: it is a property of the whole set.
    """
    if not texts:
        return 0.0
    counts = Counter(_normalised(t) for t in texts)
    return sum(c for c in counts.values() if c > 1) / len(texts)
