"""PPO's clipped losses: the surrogate for the policy and the clipped value loss.

Every loss is a masked mean over the valid tokens of the (micro-)batch. Masked positions are
replaced with zeros before any exp or square, so padding can change neither the loss nor its
gradient (not even through 0 · inf = NaN in the backward pass).
"""

from __future__ import annotations

import torch

from rlhfkit.core.masked import _as_bool, _require_same_shape, masked_mean

__all__ = ["clipped_policy_loss", "clipped_value_loss"]


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate loss (Schulman et al. 2017, "Proximal Policy Optimization Algorithms").

    With ratio_t = π(a_t|s_t) / π_old(a_t|s_t), each token's loss is
    max(−A_t·ratio_t, −A_t·clip(ratio_t, 1 − ε, 1 + ε)), the negative of the paper's pessimistic
    min; the loss is its mean over the valid tokens.

    Args:
        logprobs: (B, T) log π(a_t|s_t) under the policy being trained (carries the gradient).
        old_logprobs: (B, T) log π_old(a_t|s_t) from the rollout (detached here).
        advantages: (B, T) advantages A_t, usually whitened (detached here).
        mask: (B, T) 1.0 / True for valid response tokens.
        clip_eps: ε in (0, 1).

    Returns:
        ``(loss, clip_fraction)``: scalar loss, and the detached share of valid tokens where the
        clipped term is the larger one (so that token gives no gradient).
    """
    # Clipped surrogate objective: Schulman et al. 2017, eq. (7).
    _require_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    if not 0.0 < clip_eps < 1.0:
        raise ValueError(f"clip_eps must be in (0, 1), got {clip_eps!r}")
    valid = _as_bool(mask)
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    log_ratio = torch.where(valid, logprobs - old_logprobs.detach(), zero)
    adv = torch.where(valid, advantages.detach().to(logprobs.dtype), zero)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), valid)
    clip_fraction = masked_mean((clipped > unclipped).to(logprobs.dtype), valid).detach()
    return loss, clip_fraction


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss: ½ · masked mean of max((V − R)², (V_clipped − R)²).

    V_clipped = V_old + clip(V − V_old, −c, c) keeps the value head near its rollout predictions,
    as the policy ratio is kept near 1 (OpenAI baselines' PPO2 and lm-human-preferences; see "The N+
    Implementation Details of RLHF with PPO", Huang et al. 2024, on value clipping).

    The ½ makes the gradient (V − R) rather than 2(V − R), the convention of lm-human-preferences,
    TRL and OpenRLHF, so a value coefficient (e.g. 0.1) means the same as there.

    Args:
        values: (B, T) value predictions from the model being trained (carries the gradient).
        old_values: (B, T) value predictions from the rollout (detached here).
        returns: (B, T) return targets R_t from :func:`rlhfkit.algos.ppo.advantages.gae_advantages`
            (detached here).
        mask: (B, T) 1.0 / True for valid response tokens.
        clip_range: c > 0; ``math.inf`` turns clipping off.

    Returns:
        ``(loss, value_clip_fraction)``: scalar loss, and the detached share of valid tokens where
        the clipped error is the larger one (so that token gives no gradient).
    """
    _require_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    if not clip_range > 0:
        raise ValueError(f"clip_range must be > 0 (math.inf disables clipping), got {clip_range!r}")
    valid = _as_bool(mask)
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    values = torch.where(valid, values, zero)
    old_values = torch.where(valid, old_values.detach().to(values.dtype), zero)
    returns = torch.where(valid, returns.detach().to(values.dtype), zero)
    values_clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped = (values - returns) ** 2
    clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), valid)
    clip_fraction = masked_mean((clipped > unclipped).to(values.dtype), valid).detach()
    return loss, clip_fraction
