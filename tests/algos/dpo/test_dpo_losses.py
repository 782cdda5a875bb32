"""DPO-family losses on hand-built log-probabilities, worked by hand.

Hand values: log(1 + e^-0.2) = 0.598138869381592 and log(1 + e^0.2) = 0.2 + 0.598138869381592; log 2 =
0.693147180559945. The tensors are float64 and each loss is a handful of operations, so the only error
against these 15-digit values is their own rounding (5e-16) plus a few float64 ulps: 1e-12 leaves room.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.algos.dpo.losses import (
    conservative_dpo_loss,
    dpo_loss,
    implicit_rewards,
    ipo_loss,
    log_ratios,
    robust_dpo_loss,
    tie_loss,
)

TOL = 1e-12
SOFT = 0.598138869381592  # -log σ(0.2)
HARD = 0.2 + SOFT  # -log σ(-0.2)
LOG2 = 0.693147180559945


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_log_ratios_by_hand_and_length_normalised():
    # chosen: −10 vs −11 under the reference (+1); rejected: −12 vs −11 (−1); h = 2
    args = t(-10.0), t(-12.0), t(-11.0), t(-11.0)
    assert log_ratios(*args).item() == 2.0
    # per-token means: +1 over 4 tokens, −1 over 2 tokens → 0.25 − (−0.5) = 0.75
    assert log_ratios(*args, chosen_lengths=t(4.0), rejected_lengths=t(2.0)).item() == 0.75


def test_dpo_loss_by_hand_with_margin_and_length_penalty():
    h = t(0.0, 2.0)
    loss = dpo_loss(h, beta=0.1)
    assert abs(loss[0].item() - LOG2) < TOL and abs(loss[1].item() - SOFT) < TOL
    # an offset of 0.2 (a pair labeled 'much better' must win by more) cancels β·h = 0.2 exactly
    assert abs(dpo_loss(t(2.0), beta=0.1, margin=0.2).item() - LOG2) < TOL
    # R-DPO's α·(|y_c| − |y_r|) = 0.01 · (30 − 10) enters the same way
    assert abs(dpo_loss(t(2.0), beta=0.1, length_penalty=0.01 * (30 - 10)).item() - LOG2) < TOL


def test_dpo_gradient_pushes_the_chosen_response_up():
    chosen = torch.tensor([-10.0], dtype=torch.float64, requires_grad=True)
    h = log_ratios(chosen, t(-12.0), t(-11.0), t(-11.0))
    dpo_loss(h, beta=0.1).sum().backward()
    # d/dlogπ(y_c) of −log σ(β·h) = −β·σ(−β·h) = −0.1·σ(−0.2)
    assert abs(chosen.grad.item() + 0.1 / (1 + math.exp(0.2))) < TOL


def test_conservative_dpo_by_hand_and_its_finite_optimum():
    assert abs(conservative_dpo_loss(t(2.0), beta=0.1, label_smoothing=0.1).item() - (0.9 * SOFT + 0.1 * HARD)) < TOL
    assert abs(conservative_dpo_loss(t(2.0), beta=0.1, label_smoothing=0.0).item() - SOFT) < TOL
    # least where σ(β·h) = 1 − ε: β·h = log((1 − ε)/ε) = log 9
    h = torch.tensor([math.log(9) / 0.1], dtype=torch.float64, requires_grad=True)
    conservative_dpo_loss(h, beta=0.1, label_smoothing=0.1).sum().backward()
    assert abs(h.grad.item()) < TOL


def test_robust_dpo_by_hand_and_unbiased_over_label_flips():
    expected = (0.9 * SOFT - 0.1 * HARD) / 0.8
    assert abs(robust_dpo_loss(t(2.0), beta=0.1, flip_rate=0.1).item() - expected) < TOL
    # a label kept with probability 1 − ε and flipped (h → −h) with probability ε: on average the clean loss
    h = t(-3.0, 0.0, 0.5, 4.0)
    averaged = 0.9 * robust_dpo_loss(h, 1.0, 0.1) + 0.1 * robust_dpo_loss(-h, 1.0, 0.1)
    assert torch.allclose(averaged, dpo_loss(h, 1.0), rtol=0, atol=TOL)


def test_ipo_pulls_the_margin_to_one_over_two_beta():
    assert ipo_loss(t(1.0, 3.0, -1.0), beta=0.5).tolist() == [0.0, 4.0, 4.0]


def test_a_tie_is_a_half_win_for_each_side():
    assert abs(tie_loss(t(0.0), beta=0.1).item() - LOG2) < TOL
    h = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
    tie_loss(h, beta=0.1).sum().backward()
    assert h.grad.item() == 0.0
    assert tie_loss(t(2.0), 0.1).item() == tie_loss(t(-2.0), 0.1).item()  # symmetric


def test_implicit_rewards_accuracy_and_margin():
    r = implicit_rewards(t(-10.0, -13.0), t(-12.0, -12.0), t(-11.0, -11.0), t(-11.0, -11.0), beta=0.5)
    assert r.chosen.tolist() == [0.5, -1.0] and r.rejected.tolist() == [-0.5, -0.5]
    assert r.margins.tolist() == [1.0, -0.5] and r.accuracy == 0.5


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: dpo_loss(t(1.0), beta=0.0), "beta must be > 0"),
        (lambda: conservative_dpo_loss(t(1.0), 0.1, 0.6), r"in \[0, 0.5\]"),
        (lambda: robust_dpo_loss(t(1.0), 0.1, 0.5), r"in \[0, 0.5\)"),
        (lambda: log_ratios(t(1.0), t(1.0, 2.0), t(1.0), t(1.0)), "one shape"),
        (lambda: log_ratios(t(1.0), t(1.0), t(1.0), t(1.0), chosen_lengths=t(2.0)), "both"),
        (lambda: log_ratios(t(1.0), t(1.0), t(1.0), t(1.0), t(0.0), t(2.0)), "positive"),
    ],
)
def test_bad_arguments_say_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()
