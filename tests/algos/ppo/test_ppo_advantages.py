"""Per-token rewards, GAE and masked statistics, against hand-worked numbers and a slow reference."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.algos.ppo.advantages import gae_advantages, last_valid_index, no_eos_penalty, per_token_rewards
from rlhfkit.core.masked import masked_mean, masked_sum, masked_var, masked_whiten

NAN = float("nan")
EPS32 = torch.finfo(torch.float32).eps
EPS64 = torch.finfo(torch.float64).eps


def _float32_error(actual: torch.Tensor, expected: list) -> float:
    """max |actual − expected|, with the hand-worked ``expected`` kept in float64 (not rounded to float32 first)."""
    return float((actual.double() - torch.tensor(expected, dtype=torch.float64)).abs().max())


def _tolerance(roundings: int, scale: float, eps: float = EPS32) -> float:
    """A bound on the error of ``roundings`` rounded operations on values of magnitude ≤ ``scale``: each is off by at
    most half an ulp, eps/2 · scale, and an error carried into a sum or difference is not enlarged. One eps per
    rounding leaves a factor 2 (for an input rounded on its way in, such as β = 0.1 to float32)."""
    return roundings * eps * scale


def _pad(x: torch.Tensor, mask: torch.Tensor, extra: int, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Append ``extra`` masked-out columns holding ``fill`` (garbage that must not matter)."""
    b = x.shape[0]
    return (
        torch.cat([x, torch.full((b, extra), fill, dtype=x.dtype)], dim=1),
        torch.cat([mask, torch.zeros(b, extra, dtype=mask.dtype)], dim=1),
    )


# --- per-token rewards -----------------------------------------------------------------------


def test_per_token_rewards_by_hand_with_different_row_lengths() -> None:
    kl = torch.tensor([[0.5, 1.0, 2.0, 9.0], [1.0, -1.0, 7.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    scores = torch.tensor([3.0, -1.0])
    # β = 0.1. Row 0 (3 tokens): −0.05, −0.1, −0.2 + 3 = 2.8, then padding 0.
    #          Row 1 (2 tokens): −0.1, +0.1 − 1 = −0.9 (k1 was negative there), then 0, 0.
    rewards = per_token_rewards(scores, kl, mask, beta=0.1)
    expected = [[-0.05, -0.1, 2.8, 0.0], [-0.1, -0.9, 0.0, 0.0]]
    # β rounded to float32, β·kl, − and + score: 3 roundings of values ≤ 3.2 (measured: 0.4 ulp of 1)
    assert _float32_error(rewards, expected) <= _tolerance(3, 3.2)


def test_per_token_rewards_ignore_padding_garbage() -> None:
    kl = torch.tensor([[0.5, 1.0], [1.0, -1.0]])
    mask = torch.tensor([[True, True], [True, False]])
    scores = torch.tensor([1.0, 2.0])
    base = per_token_rewards(scores, kl, mask, beta=0.2)
    kl_pad, mask_pad = _pad(kl, mask, extra=3, fill=NAN)
    padded = per_token_rewards(scores, kl_pad, mask_pad, beta=0.2)
    assert torch.equal(padded[:, :2], base)
    assert torch.equal(padded[:, 2:], torch.zeros(2, 3))
    # the masked second token of row 1 holds −1.0 but earns nothing; the score sits on token 0
    assert _float32_error(base, [[-0.1, 0.8], [1.8, 0.0]]) <= _tolerance(3, 2.2)  # as above, values ≤ 2.2


def test_single_token_response_and_beta_zero() -> None:
    rewards = per_token_rewards(torch.tensor([5.0]), torch.tensor([[3.0, 3.0]]), torch.tensor([[1, 0]]), 0.0)
    assert torch.equal(rewards, torch.tensor([[5.0, 0.0]]))


def test_row_without_valid_token_is_an_error() -> None:
    mask = torch.tensor([[1, 1], [0, 0], [1, 0]])
    with pytest.raises(ValueError, match=r"rows \[1\].*no valid token"):
        per_token_rewards(torch.zeros(3), torch.zeros(3, 2), mask, beta=0.1)


def test_per_token_rewards_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"kl \(2, 3\).*mask \(2, 4\)"):
        per_token_rewards(torch.zeros(2), torch.zeros(2, 3), torch.ones(2, 4), beta=0.1)
    with pytest.raises(ValueError, match=r"scores must have shape \(B,\) = \(2,\).*got \(3,\)"):
        per_token_rewards(torch.zeros(3), torch.zeros(2, 3), torch.ones(2, 3), beta=0.1)
    with pytest.raises(ValueError, match="beta must be"):
        per_token_rewards(torch.zeros(2), torch.zeros(2, 3), torch.ones(2, 3), beta=-1.0)


def test_last_valid_index() -> None:
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 1, 1, 1]])  # the last row has a leading pad
    assert last_valid_index(mask).tolist() == [2, 0, 3]


def test_no_eos_penalty() -> None:
    scores = torch.tensor([1.0, 2.0, -0.5])
    ended = torch.tensor([True, False, False])
    # sums of halves and integers are exact in float32: equal bit for bit
    assert torch.equal(no_eos_penalty(scores, ended, 1.0), torch.tensor([1.0, 1.0, -1.5]))
    assert torch.equal(
        no_eos_penalty(scores, ended, -1.0, mode="replace"), torch.tensor([1.0, -1.0, -1.0])
    )
    with pytest.raises(ValueError, match="must be >= 0"):
        no_eos_penalty(scores, ended, -1.0)
    with pytest.raises(ValueError, match="bool"):
        no_eos_penalty(scores, ended.float(), 1.0)
    with pytest.raises(ValueError, match="unknown mode"):
        no_eos_penalty(scores, ended, 1.0, mode="double")  # type: ignore[arg-type]


# --- GAE -------------------------------------------------------------------------------------


def test_gae_gamma_lambda_one_is_reward_to_go_minus_value() -> None:
    # γ = λ = 1: A_t = Σ_{k≥t} r_k − V_t.
    # Row 0 (3 tokens): rewards-to-go (6, 5, 3), values (0.5, 1, 1.5) → A = (5.5, 4, 1.5).
    # Row 1 (2 tokens; the 99s are padding): rewards-to-go (5, 1), values (2, 3) → A = (3, −2, 0).
    rewards = torch.tensor([[1.0, 2.0, 3.0], [4.0, 1.0, 99.0]])
    values = torch.tensor([[0.5, 1.0, 1.5], [2.0, 3.0, 99.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    # sums of halves and small integers, times γ = λ = 1: exact in float32, so equal bit for bit
    assert torch.equal(adv, torch.tensor([[5.5, 4.0, 1.5], [3.0, -2.0, 0.0]]))
    # returns = A + V = reward-to-go on valid tokens, 0 on padding
    assert torch.equal(ret, torch.tensor([[6.0, 5.0, 3.0], [5.0, 1.0, 0.0]]))


def test_gae_discounting_by_hand() -> None:
    # γ = λ = 0.5, r = (0, 1), V = (1, 2).
    # δ_1 = 1 + 0.5·0 − 2 = −1 (nothing after the last token); δ_0 = 0 + 0.5·2 − 1 = 0.
    # A_1 = −1; A_0 = δ_0 + γλ·A_1 = 0 + 0.25·(−1) = −0.25. Returns = A + V = (0.75, 1).
    adv, ret = gae_advantages(
        torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 2.0]]), torch.ones(1, 2), 0.5, 0.5
    )
    # γ = λ = 0.5 are powers of two: every step is exact in float32
    assert torch.equal(adv, torch.tensor([[-0.25, -1.0]]))
    assert torch.equal(ret, torch.tensor([[0.75, 1.0]]))


def _slow_gae(rewards, values, lengths, gamma, lam):
    """GAE by its definition, A_t = Σ_l (γλ)^l δ_{t+l}, one row and one token at a time."""
    adv = torch.zeros_like(rewards)
    for b, n in enumerate(lengths):
        deltas = []
        for s in range(n):
            next_v = values[b, s + 1].item() if s + 1 < n else 0.0
            deltas.append(rewards[b, s].item() + gamma * next_v - values[b, s].item())
        for t in range(n):
            adv[b, t] = sum((gamma * lam) ** l * deltas[t + l] for l in range(n - t))
    mask = torch.zeros_like(rewards)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    return adv, (adv + values) * mask


def test_gae_matches_slow_reference_on_random_rows_of_different_lengths() -> None:
    g = torch.Generator().manual_seed(0)
    lengths = [7, 1, 4, 10, 5, 2]
    rewards = torch.randn(6, 10, generator=g, dtype=torch.float64)
    values = torch.randn(6, 10, generator=g, dtype=torch.float64)
    mask = torch.zeros(6, 10, dtype=torch.float64)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1.0
    adv, ret = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.8)
    ref_adv, ref_ret = _slow_gae(rewards, values, lengths, 0.9, 0.8)
    # Both in float64, summing the same terms in other orders. Every term and partial sum is at most
    # Σ_l (γλ)^l max|δ| ≤ max|δ|/(1 − γλ), with |δ| ≤ max|r| + (1 + γ)·max|V|; each of the ≤ 4 roundings per token
    # over T = 10 tokens (δ, the product, the sum, + V) stays within half an ulp of that, on each side: 4.6e-13
    # here (measured: 4.4e-16, two ulps of the largest A); λ = 0.81 instead of 0.8 is off by 0.035.
    largest = float(rewards.abs().max() + 1.9 * values.abs().max()) / (1 - 0.9 * 0.8)
    tolerance = 2 * _tolerance(4 * 10, largest, EPS64)
    assert (adv - ref_adv).abs().max() <= tolerance
    assert (ret - ref_ret).abs().max() <= tolerance


def test_gae_padding_garbage_changes_nothing() -> None:
    g = torch.Generator().manual_seed(1)
    rewards, values = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    adv, ret = gae_advantages(rewards, values, mask, 0.9, 0.8)
    # garbage inside the existing padding …
    dirty_r = torch.where(mask.bool(), rewards, torch.tensor(1e6))
    dirty_v = torch.where(mask.bool(), values, torch.tensor(NAN))
    adv2, ret2 = gae_advantages(dirty_r, dirty_v, mask, 0.9, 0.8)
    assert torch.equal(adv2, adv) and torch.equal(ret2, ret)
    # … and extra padded columns
    r_pad, m_pad = _pad(rewards, mask, 4, NAN)
    v_pad, _ = _pad(values, mask, 4, -1e6)
    adv3, ret3 = gae_advantages(r_pad, v_pad, m_pad, 0.9, 0.8)
    assert torch.equal(adv3[:, :5], adv) and torch.equal(ret3[:, :5], ret)
    assert (adv3[:, 5:] == 0).all() and (ret3[:, 5:] == 0).all()


def test_gae_outputs_carry_no_gradient() -> None:
    values = torch.randn(2, 3, requires_grad=True)
    adv, ret = gae_advantages(torch.randn(2, 3), values, torch.ones(2, 3), 1.0, 0.95)
    assert not adv.requires_grad and not ret.requires_grad


def test_gae_validates_inputs() -> None:
    with pytest.raises(ValueError, match=r"rewards \(2, 3\), values \(2, 4\), mask \(2, 3\)"):
        gae_advantages(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3), 1.0, 0.95)
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\]"):
        gae_advantages(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3), 1.5, 0.95)
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\]"):
        gae_advantages(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3), 1.0, -0.1)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        gae_advantages(torch.zeros(3), torch.zeros(3), torch.ones(3), 1.0, 0.95)


# --- masked statistics -----------------------------------------------------------------------

X = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, NAN]])
M = torch.tensor([[1, 1, 0], [1, 0, 0]])


def test_masked_mean_sum_var_by_hand() -> None:
    # valid values 1, 2, 3: sum 6, mean 2, unbiased var ((1)² + 0 + (1)²)/2 = 1, biased 2/3
    assert masked_sum(X, M).item() == 6.0
    assert masked_mean(X, M).item() == 2.0
    assert masked_var(X, M).item() == 1.0  # centred values −1, 0, 1: every step exact
    assert masked_var(X, M, unbiased=False).item() == pytest.approx(2 / 3, rel=EPS32)  # one rounding: 2/3
    # per row: (1 + 2)/2 = 1.5 and 3/1 = 3
    assert torch.equal(masked_mean(X, M, dim=1), torch.tensor([1.5, 3.0]))


def test_masked_stats_errors() -> None:
    with pytest.raises(ValueError, match="no valid token"):
        masked_mean(X, torch.zeros_like(M))
    with pytest.raises(ValueError, match="slice along dim 1"):
        masked_mean(X, torch.tensor([[1, 0, 0], [0, 0, 0]]), dim=1)
    one = torch.tensor([[1, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="at least 2 valid tokens"):
        masked_var(X, one)
    assert masked_var(X, one, unbiased=False).item() == 0.0
    with pytest.raises(ValueError, match=r"x \(2, 3\), mask \(3, 2\)"):
        masked_mean(X, M.T)


def test_masked_whiten_gives_zero_mean_unit_std_on_valid_tokens() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 12, generator=g) * 5 + 3
    lengths = torch.randint(1, 13, (8,), generator=g)
    mask = (torch.arange(12) < lengths[:, None]).float()
    w = masked_whiten(x, mask)
    valid = w[mask.bool()]
    # Float32 sums of the n = 52 valid values may be off by n·u·Σ|x| (u = EPS32/2): the mean by n·u·max|x|, which
    # moves each w = (x − mean)/s by n·u·max|x|/s, and the variance by a relative n·u, which moves w by n·u·|w|/2;
    # the mean and std of the w's are themselves float32 sums of n values ≤ max|w|. n·EPS32·(max|x|/s + max|w|)
    # covers all of it: 3.0e-5 here (measured: 4e-8 and 0). A biased variance would give std 1.0097.
    x_valid = x[mask.bool()]
    tolerance = len(x_valid) * EPS32 * float(x_valid.abs().max() / x_valid.std() + valid.abs().max())
    assert valid.mean().item() == pytest.approx(0.0, abs=tolerance)
    assert valid.std().item() == pytest.approx(1.0, abs=tolerance)  # unbiased std, as whitened
    assert (w[~mask.bool()] == 0).all()
    # garbage in the padding changes nothing
    dirty = torch.where(mask.bool(), x, torch.tensor(NAN))
    assert torch.equal(masked_whiten(dirty, mask), w)


def test_masked_whiten_without_shift_keeps_the_mean() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # mean 2, unbiased std 1: (x − 2)/1 + 2 = x on the valid tokens
    w = masked_whiten(x, mask, shift_mean=False)
    # (x − mean), rsqrt(var + eps), ×, + mean: 4 roundings of values ≤ 3 (measured: exact)
    assert _float32_error(w, [[1.0, 2.0, 3.0, 0.0]]) <= _tolerance(4, 3.0)
