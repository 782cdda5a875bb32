"""KL estimators and β controllers, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.core.kl import kl_estimate, kl_k1, kl_k2, kl_k3, sequence_kl
from rlhfkit.core.kl_control import AdaptiveKLController, FixedKLController

# One row, two tokens: log π = (−1, −2), log π_ref = (−1.5, −1).
LOGP = torch.tensor([[-1.0, -2.0]])
REF = torch.tensor([[-1.5, -1.0]])


def test_k1_by_hand_and_can_be_negative() -> None:
    # k1 = logπ − logπ_ref = (−1 + 1.5, −2 + 1) = (0.5, −1.0): the second token is negative.
    k1 = kl_k1(LOGP, REF)
    assert torch.allclose(k1, torch.tensor([[0.5, -1.0]]))
    assert (k1 < 0).any()


def test_k2_by_hand() -> None:
    # k2 = ½·(0.5)² = 0.125 and ½·(−1)² = 0.5
    assert torch.allclose(kl_k2(LOGP, REF), torch.tensor([[0.125, 0.5]]))


def test_k3_by_hand() -> None:
    # log r = logπ_ref − logπ = (−0.5, 1.0)
    # token 1: r = e^−0.5 = 0.606531, k3 = (0.606531 − 1) − (−0.5) = 0.106531
    # token 2: r = e^1 = 2.718282,   k3 = (2.718282 − 1) − 1 = 0.718282
    assert torch.allclose(kl_k3(LOGP, REF), torch.tensor([[0.106531, 0.718282]]), atol=1e-6)


def test_k3_never_negative_on_random_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(64, 50, generator=g) * 10
    ref = -torch.rand(64, 50, generator=g) * 10
    assert (kl_k3(logp, ref) >= 0).all()
    # tiny differences, where r − 1 and log r nearly cancel
    near = logp + torch.randn(64, 50, generator=g) * 1e-6
    assert (kl_k3(logp, near) >= 0).all()


def test_k3_is_finite_for_extreme_log_ratios() -> None:
    # log r = ±1000 would overflow exp; the clamp to ±20 keeps it finite: e^20 − 1 − 20 ≈ 4.85e8.
    logp = torch.tensor([[0.0, -1000.0]])
    ref = torch.tensor([[-1000.0, 0.0]])
    k3 = kl_k3(logp, ref)
    assert torch.isfinite(k3).all()
    assert k3[0, 1].item() == pytest.approx(math.expm1(20.0) - 20.0, rel=1e-5)


def test_k3_half_precision_is_computed_in_float32() -> None:
    k3 = kl_k3(LOGP.half(), REF.half())
    assert k3.dtype == torch.float32
    assert torch.allclose(k3, kl_k3(LOGP, REF), atol=1e-3)


def test_k1_and_k3_are_unbiased_k2_is_not() -> None:
    # Sample tokens from π over 4 words and compare the estimators' means with the exact KL(π‖π_ref).
    g = torch.Generator().manual_seed(1)
    pi = torch.tensor([0.5, 0.3, 0.15, 0.05])
    ref = torch.tensor([0.25, 0.25, 0.25, 0.25])
    exact = (pi * (pi / ref).log()).sum().item()  # 0.2442
    samples = torch.multinomial(pi, 200_000, replacement=True, generator=g)
    logp, logr = pi.log()[samples], ref.log()[samples]
    assert kl_k1(logp, logr).mean().item() == pytest.approx(exact, abs=0.005)
    assert kl_k3(logp, logr).mean().item() == pytest.approx(exact, abs=0.005)
    assert abs(kl_k2(logp, logr).mean().item() - exact) > 0.01  # k2 is biased here (≈ 0.209)


def test_kl_estimate_dispatches() -> None:
    assert torch.equal(kl_estimate(LOGP, REF, "k1"), kl_k1(LOGP, REF))
    assert torch.equal(kl_estimate(LOGP, REF, "k2"), kl_k2(LOGP, REF))
    assert torch.equal(kl_estimate(LOGP, REF, "k3"), kl_k3(LOGP, REF))
    assert torch.equal(kl_estimate(LOGP, REF), kl_k1(LOGP, REF))  # k1 by default


def test_kl_estimate_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"'k4'.*k1, k2, k3"):
        kl_estimate(LOGP, REF, "k4")  # type: ignore[arg-type]


@pytest.mark.parametrize("estimator", [kl_k1, kl_k2, kl_k3])
def test_shape_mismatch_names_the_shapes(estimator) -> None:
    with pytest.raises(ValueError, match=r"logprobs \(2, 3\).*ref_logprobs \(2, 4\)"):
        estimator(torch.zeros(2, 3), torch.zeros(2, 4))


def test_sequence_kl_sums_valid_tokens_only() -> None:
    kl = torch.tensor([[0.5, -1.0, 2.0], [1.0, float("nan"), 1e9]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # row 0: 0.5 − 1 + 2 = 1.5; row 1: only the first token counts = 1.0
    assert torch.allclose(sequence_kl(kl, mask), torch.tensor([1.5, 1.0]))


# --- controllers -----------------------------------------------------------------------------


def test_fixed_controller_never_moves() -> None:
    ctl = FixedKLController(0.05)
    ctl.update(current_kl=100.0, n_steps=512)
    assert ctl.value == 0.05


def test_adaptive_controller_moves_up_when_kl_above_target_with_clipped_error() -> None:
    ctl = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=10_000)
    # error = 9/6 − 1 = 0.5, clipped to 0.2; β = 0.1 · (1 + 0.2 · 256/10000) = 0.1 · 1.00512
    ctl.update(current_kl=9.0, n_steps=256)
    assert ctl.value == pytest.approx(0.100512)


def test_adaptive_controller_moves_down_when_kl_below_target_with_clipped_error() -> None:
    ctl = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=10_000)
    # error = 3/6 − 1 = −0.5, clipped to −0.2; β = 0.1 · (1 − 0.2 · 256/10000) = 0.1 · 0.99488
    ctl.update(current_kl=3.0, n_steps=256)
    assert ctl.value == pytest.approx(0.099488)


def test_adaptive_controller_unclipped_error() -> None:
    ctl = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=10_000)
    # error = 6.6/6 − 1 = 0.1 (inside ±0.2); β = 0.1 · (1 + 0.1 · 256/10000) = 0.1 · 1.00256
    ctl.update(current_kl=6.6, n_steps=256)
    assert ctl.value == pytest.approx(0.100256)
    # at the target β stays put
    before = ctl.value
    ctl.update(current_kl=6.0, n_steps=256)
    assert ctl.value == pytest.approx(before)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"init_beta": 0.1, "target": 0.0, "horizon": 10}, "target must be a finite number > 0"),
        ({"init_beta": 0.1, "target": 6.0, "horizon": 0}, "horizon must be a finite number > 0"),
        ({"init_beta": -0.1, "target": 6.0, "horizon": 10}, "init_beta must be a finite number >= 0"),
    ],
)
def test_adaptive_controller_validates(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        AdaptiveKLController(**kwargs)


def test_fixed_controller_validates_and_adaptive_rejects_nan_kl() -> None:
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        FixedKLController(-1.0)
    ctl = AdaptiveKLController(0.1, 6.0, 100)
    with pytest.raises(ValueError, match="current_kl must be finite"):
        ctl.update(float("nan"), 1)
    assert ctl.value == 0.1


def test_controllers_round_trip_through_state_dict() -> None:
    ctl = AdaptiveKLController(0.2, 4.0, 1000)
    for kl in (1.0, 8.0, 5.0):
        ctl.update(kl, n_steps=64)
    restored = AdaptiveKLController(0.5, 1.0, 1)
    restored.load_state_dict(ctl.state_dict())
    assert restored.state_dict() == ctl.state_dict()
    ctl.update(7.0, 64)
    restored.update(7.0, 64)
    assert restored.value == ctl.value

    fixed = FixedKLController(0.3)
    other = FixedKLController(0.0)
    other.load_state_dict(fixed.state_dict())
    assert other.value == 0.3
