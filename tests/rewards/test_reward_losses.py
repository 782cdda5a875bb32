"""Bradley–Terry loss, centering term, binary loss, pairwise accuracy and the Wilson interval, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.rewards.losses import (
    binary_reward_loss,
    bradley_terry_loss,
    centering_penalty,
    pairwise_correct,
    wilson_interval,
)


def test_bradley_terry_matches_hand_computed_values():
    # d = 2 - 0 = 2: -log σ(2) = log(1 + e^-2) = 0.126928; d = 0: log 2; d = -1: log(1 + e) = 1.313262
    loss = bradley_terry_loss(torch.tensor([2.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 1.0]))
    assert loss.tolist() == pytest.approx([math.log1p(math.exp(-2)), math.log(2), math.log1p(math.e)], abs=1e-6)
    assert loss[0].item() == pytest.approx(0.126928, abs=1e-6)


def test_margin_is_subtracted_inside_the_sigmoid():
    # r_c - r_r = 2, margin 1 -> d = 1: log(1 + e^-1) = 0.313262; a margin of 2 leaves d = 0: log 2
    loss = bradley_terry_loss(torch.tensor([2.0, 2.0]), torch.tensor([0.0, 0.0]), margin=torch.tensor([1.0, 2.0]))
    assert loss.tolist() == pytest.approx([0.313262, math.log(2)], abs=1e-6)


def test_tie_counts_as_half_a_win_for_each_side():
    # target ½: -(½ log σ(d) + ½ log σ(-d)); d = 0 -> log 2, d = 2 -> ½ (0.126928 + 2.126928) = 1.126928
    loss = bradley_terry_loss(torch.tensor([0.0, 2.0]), torch.tensor([0.0, 0.0]), target=torch.tensor([0.5, 0.5]))
    assert loss.tolist() == pytest.approx([math.log(2), 1.126928], abs=1e-6)
    # a tie is symmetric: swapping the two responses changes nothing
    swapped = bradley_terry_loss(torch.tensor([0.0]), torch.tensor([2.0]), target=torch.tensor([0.5]))
    assert swapped.item() == pytest.approx(1.126928, abs=1e-6)


def test_target_one_equals_plain_loss_and_is_finite_for_huge_gaps():
    rc, rr = torch.tensor([300.0, -300.0]), torch.tensor([0.0, 0.0])
    plain = bradley_terry_loss(rc, rr)
    assert torch.isfinite(plain).all()
    assert plain.tolist() == pytest.approx([0.0, 300.0], abs=1e-4)
    assert torch.allclose(plain, bradley_terry_loss(rc, rr, target=torch.ones(2)))


def test_gradient_of_bradley_terry_is_sigmoid_of_minus_gap():
    # d/dr_c [-log σ(r_c - r_r)] = -(1 - σ(d)) = -σ(-d); at d = 0 that is -½, and +½ for r_r
    rc, rr = torch.tensor([0.0], requires_grad=True), torch.tensor([0.0], requires_grad=True)
    bradley_terry_loss(rc, rr).sum().backward()
    assert rc.grad.item() == pytest.approx(-0.5)
    assert rr.grad.item() == pytest.approx(0.5)


def test_centering_penalty_is_mean_square_of_sums():
    # sums 1 + 1 = 2 and -1 + 3 = 2 -> mean of 4 and 4 = 4; equal and opposite rewards cost nothing
    assert centering_penalty(torch.tensor([1.0, -1.0]), torch.tensor([1.0, 3.0])).item() == pytest.approx(4.0)
    assert centering_penalty(torch.tensor([2.0, -5.0]), torch.tensor([-2.0, 5.0])).item() == 0.0


def test_binary_reward_loss():
    # r = 0 -> log 2 whatever the label; r = 2 with label 1 -> log(1 + e^-2); with label 0 -> log(1 + e^2)
    loss = binary_reward_loss(torch.tensor([0.0, 2.0, 2.0]), torch.tensor([1.0, 1.0, 0.0]))
    assert loss.tolist() == pytest.approx([math.log(2), math.log1p(math.exp(-2)), math.log1p(math.exp(2))], abs=1e-6)


def test_pairwise_correct_counts_score_ties_half():
    correct = pairwise_correct(torch.tensor([2.0, 0.0, 1.0]), torch.tensor([1.0, 1.0, 1.0]))
    assert correct.tolist() == [1.0, 0.0, 0.5]


def test_wilson_interval_by_hand():
    # p = 0.95, n = 100, z = 1.96: centre (0.95 + 0.019208) / 1.038416 = 0.933356,
    # half-width 1.96 * sqrt(0.000475 + 0.00009604) / 1.038416 = 0.045105
    low, high = wilson_interval(95, 100)
    assert low == pytest.approx(0.88825, abs=2e-4)
    assert high == pytest.approx(0.97846, abs=2e-4)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(10, 10)  # 100 % observed: the interval still has width
    assert high == pytest.approx(1.0) and 0.69 < low < 0.73
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0) and 0.27 < high < 0.31
