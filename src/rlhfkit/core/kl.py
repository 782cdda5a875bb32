"""KL(π‖π_ref) per token, and the controllers that set its weight β in the reward.

Each response token a_t was sampled from the policy π, so the log-probs of that token under the
policy and under the frozen reference give a one-sample Monte-Carlo estimate of the per-token
KL(π(·|s_t) ‖ π_ref(·|s_t)). Three estimators are offered, named as in John Schulman's post
"Approximating KL Divergence" (2020, http://joschu.net/blog/kl-approx.html), with
log r = log π_ref(a_t) − log π(a_t):

* k1 = −log r = log π − log π_ref: unbiased, but negative whenever the reference likes the sampled
  token more than the policy does, so its per-token values are noisy and can be < 0.
* k2 = ½ (log r)²: always ≥ 0 and low-variance, but biased (exact only to second order).
* k3 = (r − 1) − log r: unbiased and always ≥ 0 (log is concave, so log r ≤ r − 1).

All estimator functions are elementwise: inputs of any (equal) shape, usually (B, T); masking
happens where the values are used (:func:`rlhfkit.algos.ppo.advantages.per_token_rewards`,
:func:`sequence_kl`).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from rlhfkit.core.masked import _as_bool, _require_same_shape, masked_mean, masked_sum

__all__ = [
    "KL_KINDS",
    "approx_kl",
    "approx_kl_k3",
    "MAX_LOG_RATIO",
    "KLKind",
    "kl_estimate",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "sequence_kl",
]

KLKind = Literal["k1", "k2", "k3"]
KL_KINDS: tuple[str, ...] = get_args(KLKind)

MAX_LOG_RATIO = 20.0
"""k3 clamps log r to ±this before exp: e^20 ≈ 4.9e8 is finite in float32, and a real policy /
reference pair never gets near it (one token 4.9e8 times likelier under one model than the other)."""


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k1 = log π(a_t|s_t) − log π_ref(a_t|s_t); unbiased, may be negative per token.

    Args:
        logprobs: (B, T) log π(a_t|s_t) of the sampled tokens under the policy.
        ref_logprobs: (B, T) log π_ref(a_t|s_t) of the same tokens under the reference.

    Returns:
        (B, T) per-token estimate.
    """
    # k1 from Schulman, "Approximating KL Divergence" (2020).
    _require_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    return logprobs - ref_logprobs


def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k2 = ½ (log π(a_t|s_t) − log π_ref(a_t|s_t))²; never negative, biased.

    Args:
        logprobs: (B, T) log π(a_t|s_t).
        ref_logprobs: (B, T) log π_ref(a_t|s_t).

    Returns:
        (B, T) per-token estimate.
    """
    # k2 from Schulman, "Approximating KL Divergence" (2020).
    log_ratio = kl_k1(logprobs, ref_logprobs)
    return 0.5 * log_ratio * log_ratio


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k3 = (r − 1) − log r with r = π_ref(a_t|s_t) / π(a_t|s_t); unbiased and never negative.

    Computed as expm1(log r) − log r, which keeps precision when r ≈ 1 (where r − 1 and log r
    nearly cancel); log r is clamped to ±:data:`MAX_LOG_RATIO` first so exp cannot overflow.
    Half-precision inputs are computed (and returned) in float32, where e^20 still fits.

    Args:
        logprobs: (B, T) log π(a_t|s_t).
        ref_logprobs: (B, T) log π_ref(a_t|s_t).

    Returns:
        (B, T) per-token estimate, ≥ 0 everywhere (float32 or float64).
    """
    # k3 from Schulman, "Approximating KL Divergence" (2020).
    _require_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    dtype = torch.promote_types(logprobs.dtype, torch.float32)
    log_r = (ref_logprobs.to(dtype) - logprobs.to(dtype)).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    # expm1(x) − x ≥ 0 exactly; the clamp only removes a possible last-bit rounding below zero.
    return (torch.expm1(log_r) - log_r).clamp_min(0.0)


_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: KLKind = "k1") -> torch.Tensor:
    """Per-token KL(π‖π_ref) estimate by the estimator named ``kind``.

    Args:
        logprobs: (B, T) log π(a_t|s_t).
        ref_logprobs: (B, T) log π_ref(a_t|s_t).
        kind: "k1", "k2" or "k3" (see the module docstring).

    Returns:
        (B, T) per-token estimate.

    Raises:
        ValueError: unknown ``kind``, or shapes differ.
    """
    estimator = _ESTIMATORS.get(kind)
    if estimator is None:
        raise ValueError(f"unknown KL estimator kind {kind!r}; expected one of {', '.join(KL_KINDS)}")
    return estimator(logprobs, ref_logprobs)


def sequence_kl(kl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Total KL of each response: the per-token estimates summed over its valid tokens.

    The batch mean of this is the "current KL" that :class:`AdaptiveKLController` steers toward its
    target (as in lm-human-preferences, where KL is summed over the response).

    Args:
        kl: (B, T) per-token KL estimates.
        mask: (B, T) 1.0 / True for valid response tokens.

    Returns:
        (B,) per-sequence KL.
    """
    if kl.dim() != 2:
        raise ValueError(f"sequence_kl: kl must be (B, T), got shape {tuple(kl.shape)}")
    return masked_sum(kl, mask, dim=1)


def approx_kl(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(π_old‖π) by the k2 estimator: masked mean of ½ (log π − log π_old)² (detached scalar).

    The "approxkl" of lm-human-preferences and TRL; biased but ≥ 0 and comparable with their
    published curves. See :func:`approx_kl_k3` for the value the trainer should report first.

    Args:
        logprobs: (B, T) log π(a_t|s_t) under the current policy.
        old_logprobs: (B, T) log π_old(a_t|s_t) from the rollout.
        mask: (B, T) 1.0 / True for valid response tokens.
    """
    # k2 from Schulman, "Approximating KL Divergence" (2020).
    _require_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, mask=mask)
    valid = _as_bool(mask)
    log_ratio = torch.where(valid, logprobs.detach() - old_logprobs.detach(), 0.0)
    return masked_mean(0.5 * log_ratio * log_ratio, valid)


def approx_kl_k3(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(π_old‖π) by the k3 estimator: masked mean of (r − 1) − log r, r = π / π_old (detached).

    Tokens were sampled from π_old, so this is unbiased for KL(π_old‖π) and never negative
    (CleanRL's PPO reports the same quantity). **Report this one** as the approximate KL between
    the old and new policy (docs/ppo.md, detail 8), with :func:`approx_kl` beside it if wanted.

    Args:
        logprobs: (B, T) log π(a_t|s_t) under the current policy.
        old_logprobs: (B, T) log π_old(a_t|s_t) from the rollout.
        mask: (B, T) 1.0 / True for valid response tokens.
    """
    # k3 from Schulman, "Approximating KL Divergence" (2020), with q = π_old (the sampler), p = π.
    _require_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, mask=mask)
    return masked_mean(kl_k3(old_logprobs.detach(), logprobs.detach()), mask)
