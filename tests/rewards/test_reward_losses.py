"""Bradley–Terry loss, centering term, binary loss, pairwise accuracy and the Wilson interval, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.rewards.losses import (
    Z_95,
    binary_reward_loss,
    bradley_terry_loss,
    centering_penalty,
    pairwise_correct,
    wilson_interval,
)

EPS32 = torch.finfo(torch.float32).eps
EPS64 = torch.finfo(torch.float64).eps
# −log σ(d) in float32 is max(−d, 0) + log1p(exp(−|d|)): exp and log1p (within an ulp each: 2 half-ulps), the sum,
# and the inputs' differences, of values ≤ 2.2 here. One EPS32 per half-ulp with a factor 2 to spare: 5 · EPS32 · 2.2
# = 1.3e-6 (measured: within 0.7 ulp, 8e-8). A loss of σ(d) in place of −log σ(d) is off by 0.1 or more.
LOSS_TOLERANCE = 5 * EPS32 * 2.2
# the hand-worked 6-decimal values in the comments are within half a unit of their last digit of the exact ones
DECIMALS = 5e-7


def test_bradley_terry_matches_hand_computed_values():
    # d = 2 - 0 = 2: -log σ(2) = log(1 + e^-2) = 0.126928; d = 0: log 2; d = -1: log(1 + e) = 1.313262
    loss = bradley_terry_loss(torch.tensor([2.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 1.0]))
    expected = [math.log1p(math.exp(-2)), math.log(2), math.log1p(math.e)]
    assert loss.tolist() == pytest.approx(expected, abs=LOSS_TOLERANCE)
    assert loss[0].item() == pytest.approx(0.126928, abs=LOSS_TOLERANCE + DECIMALS)


def test_margin_is_subtracted_inside_the_sigmoid():
    # r_c - r_r = 2, margin 1 -> d = 1: log(1 + e^-1) = 0.313262; a margin of 2 leaves d = 0: log 2
    loss = bradley_terry_loss(torch.tensor([2.0, 2.0]), torch.tensor([0.0, 0.0]), margin=torch.tensor([1.0, 2.0]))
    assert loss.tolist() == pytest.approx([0.313262, math.log(2)], abs=LOSS_TOLERANCE + DECIMALS)


def test_tie_counts_as_half_a_win_for_each_side():
    # target ½: -(½ log σ(d) + ½ log σ(-d)); d = 0 -> log 2, d = 2 -> ½ (0.126928 + 2.126928) = 1.126928
    loss = bradley_terry_loss(torch.tensor([0.0, 2.0]), torch.tensor([0.0, 0.0]), target=torch.tensor([0.5, 0.5]))
    # (two losses, halved and added: 2 LOSS_TOLERANCE)
    assert loss.tolist() == pytest.approx([math.log(2), 1.126928], abs=2 * LOSS_TOLERANCE + DECIMALS)
    # a tie is symmetric: swapping the two responses changes nothing
    swapped = bradley_terry_loss(torch.tensor([0.0]), torch.tensor([2.0]), target=torch.tensor([0.5]))
    assert swapped.item() == pytest.approx(1.126928, abs=2 * LOSS_TOLERANCE + DECIMALS)


def test_target_one_equals_plain_loss_and_is_finite_for_huge_gaps():
    rc, rr = torch.tensor([300.0, -300.0]), torch.tensor([0.0, 0.0])
    plain = bradley_terry_loss(rc, rr)
    assert torch.isfinite(plain).all()
    # exp(−300) underflows to 0 in float32: log1p(0) = 0, so the losses are 0 and 300 exactly
    assert plain.tolist() == [0.0, 300.0]
    # with target 1 the other term is multiplied by exactly 0: the same bits
    assert torch.equal(plain, bradley_terry_loss(rc, rr, target=torch.ones(2)))


def test_gradient_of_bradley_terry_is_sigmoid_of_minus_gap():
    # d/dr_c [-log σ(r_c - r_r)] = -(1 - σ(d)) = -σ(-d); at d = 0 that is -½, and +½ for r_r
    rc, rr = torch.tensor([0.0], requires_grad=True), torch.tensor([0.0], requires_grad=True)
    bradley_terry_loss(rc, rr).sum().backward()
    assert rc.grad.item() == -0.5  # σ(0) = 1/(1 + e^0) = 1/2 exactly
    assert rr.grad.item() == 0.5


def test_centering_penalty_is_mean_square_of_sums():
    # sums 1 + 1 = 2 and -1 + 3 = 2 -> mean of 4 and 4 = 4; equal and opposite rewards cost nothing
    assert centering_penalty(torch.tensor([1.0, -1.0]), torch.tensor([1.0, 3.0])).item() == 4.0  # small integers
    assert centering_penalty(torch.tensor([2.0, -5.0]), torch.tensor([-2.0, 5.0])).item() == 0.0


def test_binary_reward_loss():
    # r = 0 -> log 2 whatever the label; r = 2 with label 1 -> log(1 + e^-2); with label 0 -> log(1 + e^2)
    loss = binary_reward_loss(torch.tensor([0.0, 2.0, 2.0]), torch.tensor([1.0, 1.0, 0.0]))
    expected = [math.log(2), math.log1p(math.exp(-2)), math.log1p(math.exp(2))]
    assert loss.tolist() == pytest.approx(expected, abs=LOSS_TOLERANCE)


def test_pairwise_correct_counts_score_ties_half():
    correct = pairwise_correct(torch.tensor([2.0, 0.0, 1.0]), torch.tensor([1.0, 1.0, 1.0]))
    assert correct.tolist() == [1.0, 0.0, 0.5]


def test_wilson_interval_by_hand():
    # p = 0.95, n = 100, z = 1.96: centre (0.95 + 0.019208) / 1.038416 = 0.933356,
    # half-width 1.96 * sqrt(0.000475 + 0.00009604) / 1.038416 = 0.045105
    low, high = wilson_interval(95, 100)
    # 5 decimals (half a unit: 5e-6), and z = 1.96 here but 1.959964 in the code, which moves the bounds by 1.5e-6
    # and 3e-7: 1e-5 covers both (measured: 5e-7 and 3.7e-6). The normal approximation's 0.9073 is off by 0.019.
    assert low == pytest.approx(0.88825, abs=1e-5)
    assert high == pytest.approx(0.97846, abs=1e-5)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # At p = 1 and p = 0 the bounds simplify to 1 and 1/(1 + z²/n), and to 0 and (z²/n)/(1 + z²/n). Computed in
    # float64 through ~8 roundings of values ≤ 1.4 instead: 16 · EPS64 covers it (measured: 1 ulp).
    tolerance = 16 * EPS64
    shrink = 1 / (1 + Z_95**2 / 10)  # 0.7225
    low, high = wilson_interval(10, 10)  # 100 % observed: the interval still has width
    assert high == pytest.approx(1.0, abs=tolerance) and low == pytest.approx(shrink, abs=tolerance)
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=tolerance) and high == pytest.approx(1 - shrink, abs=tolerance)
