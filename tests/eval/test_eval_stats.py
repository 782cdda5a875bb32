"""Evaluation statistics on numbers worked out by hand (and one coverage check against theory)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlhfkit.eval.stats import bootstrap_interval, compare_paired, distinct_n, repeated_share, summarize


def test_summary_of_known_values():
    s = summarize([1.0, 2.0, 3.0, 4.0, 10.0], resamples=500)
    # every step here is exact in binary floating point (sums of small integers, 20/5, 50/4), and the square
    # root is correctly rounded: the results equal the hand-worked values bit for bit, no tolerance needed
    assert s.n == 5 and s.mean == 4.0 and s.median == 3.0
    # sample standard deviation: squared deviations 9+4+1+0+36 = 50, / (n-1) = 12.5
    assert s.std == math.sqrt(12.5)
    assert s.mean_ci.low <= s.mean <= s.mean_ci.high
    assert 1.0 <= s.mean_ci.low and s.mean_ci.high <= 10.0  # a mean of resamples stays within the data's range
    assert s.median_ci.low <= s.median <= s.median_ci.high


def test_constant_values_give_a_degenerate_interval():
    s = summarize([0.25] * 10)
    assert (s.mean_ci.low, s.mean_ci.high) == (0.25, 0.25) and s.std == 0.0


def test_empty_values_are_refused():
    with pytest.raises(ValueError, match="empty"):
        summarize([])
    with pytest.raises(ValueError, match="empty"):
        compare_paired([], [])


def test_bootstrap_interval_has_the_width_theory_predicts():
    # mean of n=400 standard normals: the 95% interval is about ±1.96/sqrt(400) = ±0.098 wide around the mean
    data = np.random.default_rng(0).standard_normal(400)
    ci = bootstrap_interval(data, resamples=2000, seed=1)
    # The resampled means are ~normal with sd s/sqrt(n), s the data's own (ddof=0) standard deviation, so the
    # percentile interval is 2·1.96·s/sqrt(n) wide up to Monte Carlo error: each quantile of B = 2000 resamples
    # has standard error sqrt(p(1−p)/B)/f(q) = 0.0035/(φ(1.96)·sqrt(n)/s) ≈ 0.003, the width ≈ 0.0042, 2.2 % of
    # it (seeds 1..11 gave −4.3 %..+2.5 %). 10 % is 4.5 of those: P(|Z| > 4.5) = 7e-6 for another resampling
    # seed; a 90 % interval taken for a 95 % one is 16 % narrower. (Comparing with the theoretical sd 1 instead
    # of s would add the data's own ±3.5 % spread.)
    expected = 2 * 1.96 * data.std() / math.sqrt(len(data))
    assert ci.high - ci.low == pytest.approx(expected, rel=0.10)
    assert ci.low < data.mean() < ci.high


def test_paired_comparison_counts_wins_ties_and_losses():
    a = [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    b = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    c = compare_paired(a, b, resamples=500)
    # differences b - a: 0, +1, -1, -1, -1, 0, -1, 0 → mean -3/8; higher 1/8, equal 3/8, lower 4/8
    # eighths are exact in binary floating point, so these are equalities
    assert c.n == 8 and c.mean_difference == -3 / 8
    assert (c.b_higher, c.equal, c.b_lower) == (1 / 8, 3 / 8, 4 / 8)
    # toxicity-like (lower is better): b wins on 4, ties count half → (4 + 1.5) / 8
    assert c.win_rate(higher_is_better=False) == 5.5 / 8
    assert c.win_rate(higher_is_better=True) == 2.5 / 8
    assert c.ci.low <= c.mean_difference <= c.ci.high and 0.0 < c.p_value <= 1.0


def test_identical_policies_give_p_one_and_a_zero_interval():
    values = [0.3, 0.1, 0.9, 0.4]
    c = compare_paired(values, values)
    assert c.p_value == 1.0 and c.mean_difference == 0.0 and (c.ci.low, c.ci.high) == (0.0, 0.0) and c.equal == 1.0


def test_a_clear_shift_is_significant_and_its_interval_excludes_zero():
    rng = np.random.default_rng(3)
    a = rng.normal(0.0, 1.0, 200)
    b = a + 0.5 + rng.normal(0.0, 0.5, 200)
    c = compare_paired(a, b, resamples=1000)
    # The differences are 0.5 + N(0, 0.5²): their mean has standard error 0.5/sqrt(200) = 0.035 and the 95 %
    # interval is that mean ± 0.07. It stays inside (0.25, 0.75) unless the mean is 5.1 standard errors from 0.5
    # (P = 3e-7 per side); measured [0.441, 0.577]. 84 % of the differences are positive: the Wilcoxon z is ~10
    # (measured p = 7e-26), so p < 1e-10 (z > 6.5) holds with a wide margin.
    assert c.p_value < 1e-10 and c.ci.low > 0.25 and c.ci.high < 0.75
    # noise with a mean difference of 0 (each deviation also appears negated): the interval contains 0.
    # (a + d) − a is d only up to rounding, which may break the tie between |d| and |−d| in the ranking: that
    # moves each of the 100 pairs' rank sum by at most 1, so |W+ − W−| ≤ 100 against the statistic's
    # sd sqrt(n(n+1)(2n+1)/6) = 1638 at n = 200: |z| ≤ 0.06, p ≥ 0.95 (measured 0.997).
    noise = rng.normal(0.0, 0.5, 100)
    d = compare_paired(a, a + np.concatenate([noise, -noise]), resamples=1000)
    assert d.ci.low < 0 < d.ci.high and d.p_value > 0.9


def test_paired_values_must_have_one_length():
    with pytest.raises(ValueError, match="one length"):
        compare_paired([1.0, 2.0], [1.0])


def test_distinct_n_by_hand():
    texts = ["a b a b", "a b"]
    # unigrams a b a b a b: 2 unique of 6; bigrams (a b) (b a) (a b) (a b): 2 unique of 4
    # (one division of two counts, as distinct_n does it: equal bit for bit)
    assert distinct_n(texts, 1) == 2 / 6
    assert distinct_n(texts, 2) == 2 / 4
    assert distinct_n(["one"], 2) == 0.0  # no bigram at all
    assert distinct_n(["the same answer"] * 5, 2) == 2 / 10  # collapse shows as a low value


# Hand-built responses to 6 prompts: what a summariser, a collapsed policy and word salad look like.
VARIED = ["#Person1# borrows a history of Rome from the library for 4 weeks.",
          "#Person1# and #Person2# will go cycling on Sunday at 9 am.",
          "#Person2# helps #Person1# book a hotel room for 7 nights.",
          "#Person1# tells #Person2# the bus to the airport leaves at 6.",
          "#Person2# lost a wallet on the bus and #Person1# helps look for it.",
          "#Person1# and #Person2# plan a party for Friday evening."]  # fmt: skip
COLLAPSED = ["#Person1# and #Person2# talk."] * 5 + ["#Person1# and  #person2# TALK."]
SALAD = ["#Person2# helps sweater's party.", "#Person2# and of's party. The weather will Call a lazy dollars..",
         "lazy sweater Call of's", "#Person2# dollars weather party", "Call Call the of's a", "sweater's idiot weather"]  # fmt: skip


def test_repeated_share_rises_with_a_collapse_and_not_with_word_salad():
    assert repeated_share(VARIED) == 0.0
    assert repeated_share(COLLAPSED) == 1.0  # one answer for every prompt (case and spacing ignored)
    assert repeated_share(SALAD) == 0.0  # salad is incoherent, not repeated: ROUGE-L and KL show it
    assert repeated_share(VARIED[:4] + [VARIED[0], VARIED[1]]) == 4 / 6  # two answers given twice each
    assert repeated_share([]) == 0.0


def test_distinct_2_measures_variety_so_word_salad_raises_it():
    """Why distinct-2 is no collapse check: salad repeats fewer bigrams than fluent summaries do."""
    assert distinct_n(COLLAPSED, 2) < distinct_n(VARIED, 2) < distinct_n(SALAD, 2)
