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
EPS32 = torch.finfo(torch.float32).eps
EPS64 = torch.finfo(torch.float64).eps


def test_k1_by_hand_and_can_be_negative() -> None:
    # k1 = logπ − logπ_ref = (−1 + 1.5, −2 + 1) = (0.5, −1.0): the second token is negative.
    k1 = kl_k1(LOGP, REF)
    assert torch.equal(k1, torch.tensor([[0.5, -1.0]]))  # differences of halves: exact in float32
    assert (k1 < 0).any()


def test_k2_by_hand() -> None:
    # k2 = ½·(0.5)² = 0.125 and ½·(−1)² = 0.5, exact in float32
    assert torch.equal(kl_k2(LOGP, REF), torch.tensor([[0.125, 0.5]]))


def test_k3_by_hand() -> None:
    # log r = logπ_ref − logπ = (−0.5, 1.0)
    # token 1: r = e^−0.5 = 0.606531, k3 = (0.606531 − 1) − (−0.5) = 0.106531
    # token 2: r = e^1 = 2.718282,   k3 = (2.718282 − 1) − 1 = 0.718282
    expected = torch.tensor([[math.expm1(-0.5) + 0.5, math.expm1(1.0) - 1.0]], dtype=torch.float64)
    # float32: expm1 (within 1 ulp, two half-ulps) and the subtraction, of values ≤ 1.72, one EPS32 per half-ulp
    # rounding with a factor 2 to spare: 6.1e-7 (measured: 0.3 ulp of 1). A 6-decimal literal alone is off by 3e-7.
    assert (kl_k3(LOGP, REF).double() - expected).abs().max() <= 3 * EPS32 * 1.72


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
    # expm1(20) within 1 ulp, then − 20: 3 half-ulps relative to the result (measured: 0.4 ulp); a clamp at 19 or 21
    # would be off by a factor e
    assert k3[0, 1].item() == pytest.approx(math.expm1(20.0) - 20.0, rel=3 * EPS32)


def test_k3_half_precision_is_computed_in_float32() -> None:
    k3 = kl_k3(LOGP.half(), REF.half())
    assert k3.dtype == torch.float32
    # the inputs are exact in fp16, so computed in float32 the result is the float32 one bit for bit (computed in
    # fp16 it would be off by 4.7e-4)
    assert torch.equal(k3, kl_k3(LOGP, REF))


def test_k1_and_k3_are_unbiased_k2_is_not() -> None:
    # Sample tokens from π over 4 words and compare the estimators' means with the exact KL(π‖π_ref).
    g = torch.Generator().manual_seed(1)
    pi = torch.tensor([0.5, 0.3, 0.15, 0.05])
    ref = torch.tensor([0.25, 0.25, 0.25, 0.25])
    exact = (pi * (pi / ref).log()).sum().item()  # 0.2442
    n = 200_000
    samples = torch.multinomial(pi, n, replacement=True, generator=g)
    logp, logr = pi.log()[samples], ref.log()[samples]

    def standard_error(estimator) -> float:
        """sqrt(Var/n) of the estimator's mean over n samples, its variance taken exactly over the 4 words."""
        values = estimator(pi.double().log()[None], ref.double().log()[None])[0]
        p = pi.double()
        return math.sqrt(float((p * values**2).sum() - (p * values).sum() ** 2) / n)

    # The mean of n iid samples is normal around its expectation with sd sqrt(Var/n) (0.0013 for k1, 0.0011 for
    # k3): 5 of them fail with probability 6e-7 (measured: 0.7 and 1.0 of them). k2's bias, 0.035, is 26 of them.
    assert kl_k1(logp, logr).mean().item() == pytest.approx(exact, abs=5 * standard_error(kl_k1))
    assert kl_k3(logp, logr).mean().item() == pytest.approx(exact, abs=5 * standard_error(kl_k3))
    # k2 is biased here (≈ 0.209): |0.209 − 0.244| − 0.01 is 41 of k2's standard errors (0.0006)
    assert abs(kl_k2(logp, logr).mean().item() - exact) > 0.01


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
    # row 0: 0.5 − 1 + 2 = 1.5; row 1: only the first token counts = 1.0 (exact in float32)
    assert torch.equal(sequence_kl(kl, mask), torch.tensor([1.5, 1.0]))


# --- controllers -----------------------------------------------------------------------------
# β is updated in float64: the error, its clip, × n_steps, / horizon, 1 + …, × β, and the decimal literal of the
# expected value: 7 roundings, one EPS64 each (with a factor 2 to spare); measured: within 1 ulp.
BETA_REL = 7 * EPS64


def test_fixed_controller_never_moves() -> None:
    ctl = FixedKLController(0.05)
    ctl.update(current_kl=100.0, n_steps=512)
    assert ctl.value == 0.05


def test_adaptive_controller_moves_up_when_kl_above_target_with_clipped_error() -> None:
    ctl = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=10_000)
    # error = 9/6 − 1 = 0.5, clipped to 0.2; β = 0.1 · (1 + 0.2 · 256/10000) = 0.1 · 1.00512
    ctl.update(current_kl=9.0, n_steps=256)
    assert ctl.value == pytest.approx(0.100512, rel=BETA_REL)


def test_adaptive_controller_moves_down_when_kl_below_target_with_clipped_error() -> None:
    ctl = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=10_000)
    # error = 3/6 − 1 = −0.5, clipped to −0.2; β = 0.1 · (1 − 0.2 · 256/10000) = 0.1 · 0.99488
    ctl.update(current_kl=3.0, n_steps=256)
    assert ctl.value == pytest.approx(0.099488, rel=BETA_REL)


def test_adaptive_controller_unclipped_error() -> None:
    ctl = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=10_000)
    # error = 6.6/6 − 1 = 0.1 (inside ±0.2); β = 0.1 · (1 + 0.1 · 256/10000) = 0.1 · 1.00256
    ctl.update(current_kl=6.6, n_steps=256)
    assert ctl.value == pytest.approx(0.100256, rel=BETA_REL)
    # at the target β stays put: the error 6/6 − 1 is exactly 0, so β is multiplied by exactly 1
    before = ctl.value
    ctl.update(current_kl=6.0, n_steps=256)
    assert ctl.value == before


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
