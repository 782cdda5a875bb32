"""From scores and KL to per-token rewards, and from rewards and values to GAE advantages.

The reward-model score is one number per response; PPO needs one reward per token. Following
Ziegler et al. 2019 (openai/lm-human-preferences), every valid response token is charged −β·KL and
the score is paid on the last valid token. Generalised Advantage Estimation then spreads that
reward back over the tokens that led to it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from rlhfkit.core.masked import _as_bool, _require_same_shape

__all__ = ["gae_advantages", "last_valid_index", "no_eos_penalty", "per_token_rewards"]


def _require_2d(**tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        if t.dim() != 2:
            raise ValueError(f"{name} must be a (B, T) tensor, got shape {tuple(t.shape)}")


def last_valid_index(mask: torch.Tensor) -> torch.Tensor:
    """Position of the last valid token in each row.

    Args:
        mask: (B, T) 1.0 / True for valid response tokens; rows may have different lengths.

    Returns:
        (B,) int64 index of the last position where ``mask`` is set.

    Raises:
        ValueError: a row has no valid token (its index is named in the message).
    """
    _require_2d(mask=mask)
    valid = _as_bool(mask)
    empty = (~valid.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"rows {empty} of the mask have no valid token; every response needs at least one token "
            "to carry its score"
        )
    positions = torch.arange(valid.shape[1], device=valid.device)
    # Valid positions keep their index, the rest become -1; the row maximum is the last valid one.
    return torch.where(valid, positions, -1).amax(dim=1)


def per_token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """Per-token rewards: −β·KL on every valid token, plus the score on the last valid token.

    The reward shaping of Ziegler et al. 2019 (openai/lm-human-preferences), where responses have
    a fixed length and the score sits on the final position. Here it sits on each row's own last
    valid token, so responses that stop at EOS at different lengths get it where they end, as in
    "The N+ Implementation Details of RLHF with PPO" (Huang et al. 2024).

    Args:
        scores: (B,) reward-model score of each response.
        kl: (B, T) per-token KL(π‖π_ref) estimates (see :func:`rlhfkit.core.kl.kl_estimate`).
        mask: (B, T) 1.0 / True for valid response tokens.
        beta: the KL coefficient β ≥ 0 (a controller's ``value``).

    Returns:
        (B, T) rewards, 0 at masked positions.

    Raises:
        ValueError: shapes disagree, β is negative, or a row has no valid token.
    """
    _require_2d(kl=kl)
    _require_same_shape(kl=kl, mask=mask)
    if scores.shape != kl.shape[:1]:
        raise ValueError(
            f"scores must have shape (B,) = {tuple(kl.shape[:1])} to match kl {tuple(kl.shape)}, "
            f"got {tuple(scores.shape)}"
        )
    beta = float(beta)
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    valid = _as_bool(mask)
    last = last_valid_index(valid)
    rewards = torch.where(valid, -beta * kl, torch.zeros((), dtype=kl.dtype, device=kl.device))
    return rewards.scatter_add(1, last.unsqueeze(1), scores.to(rewards.dtype).unsqueeze(1))


def no_eos_penalty(
    scores: torch.Tensor,
    ended_with_eos: torch.Tensor,
    penalty: float,
    mode: Literal["subtract", "replace"] = "subtract",
) -> torch.Tensor:
    """Penalise responses that hit the length limit without producing EOS.

    A truncated response is usually worse than its score says, and without a penalty the policy can
    learn to ramble until cut off. "The N+ Implementation Details of RLHF with PPO" (Huang et al.
    2024) replace such scores with a fixed low value; TRL's ``missing_eos_penalty`` subtracts a fixed
    amount instead. Both are offered.

    Args:
        scores: (B,) reward-model scores.
        ended_with_eos: (B,) bool, True where the response produced EOS.
        penalty: "subtract": the amount taken off (≥ 0); "replace": the score such a response gets.
        mode: "subtract" (score − penalty) or "replace" (score := penalty).

    Returns:
        (B,) adjusted scores; rows that ended with EOS are unchanged.
    """
    _require_same_shape(scores=scores, ended_with_eos=ended_with_eos)
    if scores.dim() != 1:
        raise ValueError(f"scores must be a (B,) tensor, got shape {tuple(scores.shape)}")
    if ended_with_eos.dtype != torch.bool:
        raise ValueError(f"ended_with_eos must be a bool tensor, got dtype {ended_with_eos.dtype}")
    penalty = float(penalty)
    if not math.isfinite(penalty):
        raise ValueError(f"penalty must be finite, got {penalty!r}")
    if mode == "subtract":
        if penalty < 0:
            raise ValueError(
                f"with mode='subtract' the penalty is the amount taken off and must be >= 0, got {penalty}"
            )
        penalised = scores - penalty
    elif mode == "replace":
        penalised = torch.full_like(scores, penalty)
    else:
        raise ValueError(f"unknown mode {mode!r}; expected 'subtract' or 'replace'")
    return torch.where(ended_with_eos, scores, penalised)


def gae_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised Advantage Estimation over the tokens of each response.

    Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage
    Estimation": with δ_t = r_t + γ·V_{t+1} − V_t, the advantage is A_t = δ_t + γλ·A_{t+1}, computed
    backwards over time. A masked position is terminal: its reward and value are treated as 0 and
    nothing is bootstrapped from it, so after a row's last valid token the next value is 0 and
    padding (whatever it holds) cannot leak into the result. Masked positions *before* a row's
    response (e.g. a prompt) are harmless, since GAE only looks forward.

    Inputs are detached: advantages and returns are fixed targets during the PPO epochs.

    Args:
        rewards: (B, T) per-token rewards (see :func:`per_token_rewards`).
        values: (B, T) value-head predictions V(s_t) from the rollout.
        mask: (B, T) 1.0 / True for valid response tokens.
        gamma: discount γ in [0, 1] (RLHF usually uses 1).
        lam: GAE λ in [0, 1] (RLHF often uses 0.95).

    Returns:
        ``(advantages, returns)``, both (B, T) with 0 at masked positions; returns = advantages +
        values (the value-head targets).
    """
    _require_2d(rewards=rewards)
    _require_same_shape(rewards=rewards, values=values, mask=mask)
    for name, x in (("gamma", gamma), ("lam", lam)):
        if not 0.0 <= float(x) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {x!r}")
    valid = _as_bool(mask)
    zero = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    rewards = torch.where(valid, rewards.detach(), zero)
    values = torch.where(valid, values.detach().to(rewards.dtype), zero)

    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])  # V_{t+1}; 0 past the end of every row
    next_advantage = torch.zeros_like(rewards[:, 0])  # A_{t+1}
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = torch.where(valid[:, t], delta + gamma * lam * next_advantage, zero)
        advantages[:, t] = advantage
        next_value, next_advantage = values[:, t], advantage  # both 0 where this token is masked
    returns = torch.where(valid, advantages + values, zero)
    return advantages, returns
