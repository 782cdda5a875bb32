"""PPO losses, log-probs and entropy from logits, approximate KL and explained variance."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.algos.ppo.losses import clipped_policy_loss, clipped_value_loss
from rlhfkit.core.kl import approx_kl, approx_kl_k3
from rlhfkit.core.logprobs import entropy_from_logits, logprobs_from_logits
from rlhfkit.core.masked import explained_variance

NAN = float("nan")
E_HALF = math.exp(0.5)  # 1.648721
E_MINUS_HALF = math.exp(-0.5)  # 0.606531
EPS32 = torch.finfo(torch.float32).eps
EPS_BF16 = torch.finfo(torch.bfloat16).eps


def _tolerance(roundings: int, scale: float) -> float:
    """A bound on the error of ``roundings`` float32 operations (exp and log count twice: they are within one ulp,
    not half of one) on values of magnitude ≤ ``scale``: each is off by at most half an ulp, EPS32/2 · scale, and an
    error carried into a sum is not enlarged. One EPS32 per rounding leaves a factor 2 (for the inputs' own
    rounding, e.g. 1.2 or 1.1 to float32)."""
    return roundings * EPS32 * scale


def _vocab_tolerance(scaled_logits: torch.Tensor) -> float:
    """How far two float32 evaluations of a log-softmax or an entropy over V tempered logits z/T may be apart.

    Their rounding is relative to the largest term, max|z/T| (after the shift by the max, every log-prob and every
    term of Σ p_i·z_i/T is at most about that): a sum of V terms rounds by at most V half-ulps of it, and z/T, the
    shift and the log add ~3 more. EPS32·(V + 3)·max(max|z/T|, 1) covers both sides. It is also the bound on how far
    p = exp(log p) may move relative to p, so T times a gradient (onehot − p) stays within it too.
    """
    return EPS32 * (scaled_logits.shape[-1] + 3) * max(float(scaled_logits.abs().max()), 1.0)

# --- clipped policy loss ---------------------------------------------------------------------
# Four valid tokens (ε = 0.2) and one padded fifth token holding garbage.
#   t0: log ratio +0.5 → ratio 1.6487, A = +2: −min(3.2974, 2·1.2 = 2.4)     = −2.4     (clipped)
#   t1: log ratio −0.5 → ratio 0.6065, A = +2: −min(1.2131, 2·0.8 = 1.6)     = −1.2131  (unclipped)
#   t2: log ratio +0.5 → ratio 1.6487, A = −1: −min(−1.6487, −1.2)           = +1.6487  (unclipped)
#   t3: log ratio −0.5 → ratio 0.6065, A = −1: −min(−0.6065, −0.8)           = +0.8     (clipped)
# loss = (−2.4 − 1.2131 + 1.6487 + 0.8) / 4 = −0.29109; clip fraction = 2/4.
OLD = torch.tensor([[-1.0, -1.0, -1.0, -1.0, -1.0]])
NEW = torch.tensor([[-0.5, -1.5, -0.5, -1.5, 500.0]])
ADV = torch.tensor([[2.0, 2.0, -1.0, -1.0, NAN]])
MASK = torch.tensor([[1, 1, 1, 1, 0]])


def test_clipped_policy_loss_by_hand() -> None:
    loss, clip_frac = clipped_policy_loss(NEW, OLD, ADV, MASK, clip_eps=0.2)
    expected = (-2.4 - 2 * E_MINUS_HALF + E_HALF + 0.8) / 4
    # exp (2), × A, the clipped branch's 1.2 or 0.8, − , and the 3 additions of the sum: 7 roundings, each of a
    # value ≤ Σ|terms| = 6.06, then / 4 (exact): 1.3e-6 (measured: 5e-8)
    assert loss.item() == pytest.approx(expected, abs=_tolerance(7, 6.06 / 4))
    assert expected == pytest.approx(-0.29109, abs=5e-6)  # the comment's 5 decimals: half a unit of the last
    assert clip_frac.item() == 0.5  # 2 of 4, exact


def test_clipped_policy_loss_gradient_flows_only_through_unclipped_tokens() -> None:
    new = NEW.clone().requires_grad_(True)
    loss, _ = clipped_policy_loss(new, OLD, ADV, MASK)
    loss.backward()
    # d/dlogπ of −A·ratio is −A·ratio; divided by the 4 valid tokens. Clipped tokens and padding: 0.
    expected = torch.tensor([[0.0, -2 * E_MINUS_HALF / 4, E_HALF / 4, 0.0, 0.0]], dtype=torch.float64)
    # exp (2) and × A, of values ≤ 3.3, then / 4 (exact): 2.9e-7 (measured: 1.3e-8)
    assert (new.grad.double() - expected).abs().max() <= _tolerance(3, 3.3 / 4)


def test_clipped_policy_loss_at_ratio_one_is_minus_mean_advantage() -> None:
    adv = torch.tensor([[1.0, -3.0, 5.0]])
    logp = torch.tensor([[-0.3, -2.0, -1.1]])
    loss, clip_frac = clipped_policy_loss(logp, logp, adv, torch.ones(1, 3))
    assert loss.item() == -1.0  # −(1 − 3 + 5)/3: the ratio is exp(0) = 1 exactly, the rest small integers
    assert clip_frac.item() == 0.0


def test_clipped_policy_loss_padding_and_extra_columns_change_nothing() -> None:
    base, base_frac = clipped_policy_loss(NEW[:, :4], OLD[:, :4], ADV[:, :4], MASK[:, :4])
    loss, frac = clipped_policy_loss(NEW, OLD, ADV, MASK)
    assert loss.item() == base.item() and frac.item() == base_frac.item()


def test_clipped_policy_loss_validates() -> None:
    with pytest.raises(ValueError, match=r"logprobs \(1, 5\), old_logprobs \(1, 4\)"):
        clipped_policy_loss(NEW, OLD[:, :4], ADV, MASK)
    with pytest.raises(ValueError, match="clip_eps"):
        clipped_policy_loss(NEW, OLD, ADV, MASK, clip_eps=1.5)


# --- clipped value loss ----------------------------------------------------------------------
# old V = 1, c = 0.2, so V_clipped = clamp(V, 0.8, 1.2):
#   t0: V 1.5, R 2.0: (1.5 − 2)² = 0.25, (1.2 − 2)² = 0.64 → 0.64 (clipped larger)
#   t1: V 1.5, R 1.0: (1.5 − 1)² = 0.25, (1.2 − 1)² = 0.04 → 0.25
#   t2: V 1.1, R 3.0: inside the range, both (1.1 − 3)² = 3.61 → 3.61 (not counted as clipped)
# loss = ½ · (0.64 + 0.25 + 3.61)/3 = ½ · 1.5 = 0.75; value clip fraction = 1/3.
V = torch.tensor([[1.5, 1.5, 1.1, 7.0]])
OLD_V = torch.tensor([[1.0, 1.0, 1.0, NAN]])
RET = torch.tensor([[2.0, 1.0, 3.0, -1e6]])
VMASK = torch.tensor([[1.0, 1.0, 1.0, 0.0]])


def test_clipped_value_loss_by_hand() -> None:
    loss, frac = clipped_value_loss(V, OLD_V, RET, VMASK, clip_range=0.2)
    # the inputs 1.1 and 1.2, −, ², the 2 additions and / 3, of terms ≥ 0 whose sum / 6 is the result: ≤ 7 roundings
    # relative to 0.75 (measured: exact)
    assert loss.item() == pytest.approx(0.75, abs=_tolerance(7, 0.75))
    assert frac.item() == pytest.approx(1 / 3, rel=EPS32)  # one rounding: 1/3


def test_clipped_value_loss_gradient() -> None:
    v = V.clone().requires_grad_(True)
    loss, _ = clipped_value_loss(v, OLD_V, RET, VMASK, clip_range=0.2)
    loss.backward()
    # ½·d/dV (V − R)² = (V − R), over 3 tokens; t0 uses the clipped (flat) branch → 0.
    expected = torch.tensor([[0.0, 0.5 / 3, -1.9 / 3, 0.0]], dtype=torch.float64)
    # the input 1.1, − R, / 3, of values ≤ 1.9: 2.3e-7 (measured: 8e-9)
    assert (v.grad.double() - expected).abs().max() <= _tolerance(3, 1.9 / 3)


def test_value_loss_without_clipping_is_half_mse() -> None:
    loss, frac = clipped_value_loss(V, OLD_V, RET, VMASK, clip_range=math.inf)
    expected = 0.5 * (0.25 + 0.25 + 3.61) / 3
    assert loss.item() == pytest.approx(expected, abs=_tolerance(7, expected))  # as above (measured: 0.5 ulp)
    assert frac.item() == 0.0


def test_clipped_value_loss_validates() -> None:
    with pytest.raises(ValueError, match=r"returns \(1, 3\)"):
        clipped_value_loss(V, OLD_V, RET[:, :3], VMASK, 0.2)
    with pytest.raises(ValueError, match="clip_range"):
        clipped_value_loss(V, OLD_V, RET, VMASK, 0.0)


# --- log-probs and entropy from logits -------------------------------------------------------


def test_logprobs_temperature_by_hand() -> None:
    # logits (0, 2·ln 3) at temperature 2 become (0, ln 3): probabilities (1/4, 3/4).
    logits = torch.tensor([[[0.0, 2 * math.log(3.0)]]])
    lp = logprobs_from_logits(logits, torch.tensor([[1]]), temperature=2.0)
    assert lp.item() == pytest.approx(math.log(0.75), abs=_vocab_tolerance(logits / 2.0))  # 6.5e-7 (measured: 2e-8)
    # at temperature 1 they are (1/10, 9/10)
    lp = logprobs_from_logits(logits, torch.tensor([[1]]))
    assert lp.item() == pytest.approx(math.log(0.9), abs=_vocab_tolerance(logits))


@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.0])
def test_logprobs_match_log_softmax_of_scaled_logits(temperature: float) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g) * 4
    tokens = torch.randint(0, 11, (3, 5), generator=g)
    expected = torch.log_softmax(logits / temperature, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
    # measured: within 0.6 ulp of max|z/T| (at most 1e-6), against tolerances of 1.1e-5..3.3e-5; a temperature off
    # by 1 % moves these log-probs by 0.08..0.24
    tolerance = _vocab_tolerance(logits / temperature)
    assert (logprobs_from_logits(logits, tokens, temperature) - expected).abs().max() <= tolerance


def test_logprobs_gradient_matches_log_softmax() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 7, generator=g, requires_grad=True)
    tokens = torch.randint(0, 7, (2, 4), generator=g)
    logprobs_from_logits(logits, tokens, 0.7).sum().backward()
    ours = logits.grad.clone()
    logits.grad = None
    torch.log_softmax(logits / 0.7, -1).gather(-1, tokens[..., None]).sum().backward()
    # the gradient (onehot − p)/T: 5.5e-6 (measured: 1.2e-7)
    tolerance = _vocab_tolerance(logits.detach() / 0.7) / 0.7
    assert (ours - logits.grad).abs().max() <= tolerance


def test_logprobs_bf16_logits_come_back_float32() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 9, generator=g)
    tokens = torch.randint(0, 9, (2, 3), generator=g)
    lp = logprobs_from_logits(logits.bfloat16(), tokens)
    assert lp.dtype == torch.float32
    # bf16 → float32 is exact and the work is done in float32: the same numbers in, the same operations, the same bits
    assert torch.equal(lp, logprobs_from_logits(logits.bfloat16().float(), tokens))


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_logprobs_hand_written_backward_passes_gradcheck(temperature: float) -> None:
    """The log-prob's backward is written by hand (it keeps the logits, not float32 copies); check it against
    finite differences in float64, with a repeated token and a row whose logits are large."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 6, generator=g, dtype=torch.float64)
    logits[1, 2] *= 40
    tokens = torch.tensor([[0, 5, 5], [2, 2, 3]])
    logits.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: logprobs_from_logits(x, tokens, temperature), (logits,))


def test_logprobs_gradient_for_bf16_logits_is_bf16_and_matches_float32() -> None:
    g = torch.Generator().manual_seed(6)
    base = torch.randn(2, 4, 11, generator=g) * 4
    tokens = torch.randint(0, 11, (2, 4), generator=g)
    weights = torch.randn(2, 4, generator=g)  # an uneven upstream gradient
    low = base.bfloat16().requires_grad_()
    (logprobs_from_logits(low, tokens, 0.7) * weights).sum().backward()
    full = base.bfloat16().float().requires_grad_()
    (torch.log_softmax(full / 0.7, -1).gather(-1, tokens[..., None]).squeeze(-1) * weights).sum().backward()
    assert low.grad.dtype == torch.bfloat16
    # The bf16 gradient is a float32 gradient rounded once to bf16: off by at most half a bf16 ulp, a relative
    # EPS_BF16/2, plus the two float32 computations' own difference (as in the test above, times the upstream
    # weights: 1e-4). Measured: 0.4 of EPS_BF16, relative; computed in bf16 throughout it is off by up to 6.8 of them.
    float32_part = _vocab_tolerance(full.detach() / 0.7) / 0.7 * float(weights.abs().max())
    assert torch.allclose(low.grad.float(), full.grad, rtol=EPS_BF16, atol=float32_part)


def test_logprobs_validates() -> None:
    logits = torch.zeros(2, 3, 5)
    with pytest.raises(ValueError, match=r"logits \(2, 3, 5\) and tokens \(2, 4\)"):
        logprobs_from_logits(logits, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 5\).*-100"):
        logprobs_from_logits(logits, torch.full((2, 3), -100))
    with pytest.raises(ValueError, match="integer"):
        logprobs_from_logits(logits, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="temperature"):
        logprobs_from_logits(logits, torch.zeros(2, 3, dtype=torch.long), temperature=0.0)


def test_entropy_by_hand() -> None:
    # uniform over 4 tokens: ln 4 = 1.386294; one allowed token (the rest −inf): 0, and no NaN
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [3.0, -math.inf, -math.inf, -math.inf]]])
    h = entropy_from_logits(logits)
    expected = torch.tensor([[math.log(4.0), 0.0]], dtype=torch.float64)
    assert (h.double() - expected).abs().max() <= _vocab_tolerance(logits[:, :1])  # 8e-7 (measured: 4e-9)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_entropy_matches_categorical(temperature: float) -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 6, 13, generator=g) * 10  # large logits: needs the stable form
    expected = torch.distributions.Categorical(logits=logits / temperature).entropy()
    # measured: within 0.35 ulp of max|z/T| (1.4e-6 at T = 0.5), against tolerances of 1.7e-5..1e-4; the naive
    # −Σ p log p of softmax(z/T) gives NaN where a p underflows to 0
    tolerance = _vocab_tolerance(logits / temperature)
    assert (entropy_from_logits(logits, temperature) - expected).abs().max() <= tolerance


def test_entropy_gradient_is_finite_with_banned_tokens() -> None:
    logits = torch.tensor([[[1.0, 2.0, -math.inf]]], requires_grad=True)
    entropy_from_logits(logits).sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("chunk_elements", [1, 20, 1 << 18])
def test_logprobs_and_entropy_do_not_depend_on_the_chunking(monkeypatch, chunk_elements: int) -> None:
    """The (B, T, V) logits are worked a few positions at a time (one position per chunk at budget 1, a
    chunk that ends inside a batch row at 20): values and gradients are those of the whole tensor at once."""
    from rlhfkit.core import logprobs

    monkeypatch.setattr(logprobs, "CPU_CHUNK_ELEMENTS", chunk_elements)
    g = torch.Generator().manual_seed(4)
    logits = (torch.randn(3, 5, 7, generator=g) * 3).requires_grad_()
    tokens = torch.randint(0, 7, (3, 5), generator=g)
    lp, h = logprobs_from_logits(logits, tokens, 0.8), entropy_from_logits(logits, 0.8)
    (lp.sum() + h.sum()).backward()
    ours = logits.grad.clone()
    logits.grad = None
    logp = torch.log_softmax(logits / 0.8, dim=-1)
    expected_lp = logp.gather(-1, tokens[..., None]).squeeze(-1)
    expected_h = -(logp.exp() * logp).sum(-1)
    (expected_lp.sum() + expected_h.sum()).backward()
    # the same quantities as the tests above, along two paths (measured: the log-probs 0.8 ulp of max|z/T| apart,
    # the entropies equal, the gradients 5 ulps of 1, 6e-7, where the tolerance is 4.6e-5)
    tolerance = _vocab_tolerance(logits.detach() / 0.8)
    assert (lp - expected_lp).abs().max() <= tolerance and (h - expected_h).abs().max() <= tolerance
    # the entropy's gradient −p_i(log p_i + H)/T carries p's, log p's and H's errors: three times the budget
    assert (ours - logits.grad).abs().max() <= 3 * tolerance / 0.8


# --- approximate KL and explained variance ---------------------------------------------------


def test_approx_kl_by_hand() -> None:
    new = torch.tensor([[-0.5, -2.0, 9.0]])
    old = torch.tensor([[-1.0, -1.0, NAN]])
    mask = torch.tensor([[1, 1, 0]])
    # log ratio (0.5, −1.0): k2 = ½·(0.25, 1) → mean (0.125 + 0.5)/2 = 0.3125, exact in float32
    assert approx_kl(new, old, mask).item() == 0.3125
    # r = π/π_old = (e^0.5, e^−1): k3 = (1.648721 − 1 − 0.5, 0.367879 − 1 + 1) = (0.148721, 0.367879)
    # mean 0.258300; in float32: exp (2), − 1, − log r, the sum and / 2, of values ≤ 1.65 (measured: 0.07 ulp)
    expected = (E_HALF - 1 - 0.5 + math.exp(-1.0) - 1 + 1) / 2
    assert approx_kl_k3(new, old, mask).item() == pytest.approx(expected, abs=_tolerance(6, 1.65))


def test_approx_kl_is_zero_for_identical_policies() -> None:
    logp = torch.tensor([[-0.1, -3.0]])
    assert approx_kl(logp, logp, torch.ones(1, 2)).item() == 0.0
    assert approx_kl_k3(logp, logp, torch.ones(1, 2)).item() == 0.0


def test_explained_variance_by_hand() -> None:
    returns = torch.tensor([[1.0, 2.0, 3.0, NAN]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # V = (1, 2, 2): residual (0, 0, 1) has variance 2/9, returns have 2/3 → 1 − (2/9)/(2/3) = 2/3
    values = torch.tensor([[1.0, 2.0, 2.0, 5.0]])
    # two variances (a mean, −, ², a mean: 4 roundings each), their ratio and 1 − it, of values ≤ 1 (measured: 0.2 ulp)
    tolerance = _tolerance(10, 1.0)
    assert explained_variance(values, returns, mask).item() == pytest.approx(2 / 3, abs=tolerance)
    assert explained_variance(returns, returns, mask).item() == 1.0  # perfect: the residuals' variance is exactly 0
    constant = torch.full((1, 4), 2.0)
    assert explained_variance(constant, returns, mask).item() == pytest.approx(0.0, abs=tolerance)  # mean only


def test_explained_variance_with_constant_returns_is_zero_not_nan() -> None:
    returns = torch.tensor([[4.0, 4.0, 4.0]])
    ev = explained_variance(torch.tensor([[1.0, 2.0, 3.0]]), returns, torch.ones(1, 3))
    assert ev.item() == 0.0
