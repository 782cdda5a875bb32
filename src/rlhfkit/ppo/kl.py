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
happens where the values are used (:func:`rlhfkit.ppo.advantages.per_token_rewards`,
:func:`sequence_kl`).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Protocol, get_args

import torch

from rlhfkit.ppo.stats import _require_same_shape, masked_sum

__all__ = [
    "KL_KINDS",
    "MAX_LOG_RATIO",
    "AdaptiveKLController",
    "FixedKLController",
    "KLController",
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


def _check_number(name: str, value: float, *, positive: bool) -> float:
    """``value`` as a float, or a ValueError if it is not finite and > 0 (positive) / ≥ 0."""
    value = float(value)
    ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        rule = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {rule}, got {value!r}")
    return value


class KLController(Protocol):
    """What the PPO loop needs from a β controller."""

    value: float
    """The current KL coefficient β."""

    def update(self, current_kl: float, n_steps: int) -> None:
        """Adjust β after a PPO batch whose measured KL was ``current_kl``."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore the controller from a checkpoint."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        ...


class FixedKLController:
    """β stays at the value it was given.

    Args:
        beta: the KL coefficient β ≥ 0.
    """

    def __init__(self, beta: float) -> None:
        self.value = _check_number("beta", beta, positive=False)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Do nothing: a fixed β ignores the measured KL."""

    def state_dict(self) -> dict[str, Any]:
        """``{"value": β}``."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore β from :meth:`state_dict`'s output."""
        self.value = _check_number("value", state["value"], positive=False)

    def __repr__(self) -> str:
        return f"FixedKLController(beta={self.value})"


class AdaptiveKLController:
    """Proportional controller that moves β so the measured KL approaches ``target``.

    After each batch: error = clip(current_kl / target − 1, −0.2, 0.2) and
    β ← β · (1 + error · n_steps / horizon). KL above target raises β (pulls the policy back toward
    the reference); KL below target lowers it. The clip bounds how fast β moves on a noisy batch.

    From Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", §2.2, and its
    code, openai/lm-human-preferences (AdaptiveKLController), where ``n_steps`` is the number of
    episodes in the batch and horizon is 10 000.

    Args:
        init_beta: starting β ≥ 0.
        target: the KL the controller aims for (> 0), in the units of ``current_kl`` passed to
            :meth:`update` (usually the batch mean of :func:`sequence_kl`).
        horizon: how many steps (> 0) a full ±20 % correction is spread over.
    """

    ERROR_CLIP = 0.2

    def __init__(self, init_beta: float, target: float, horizon: float) -> None:
        self.value = _check_number("init_beta", init_beta, positive=False)
        self.target = _check_number("target", target, positive=True)
        self.horizon = _check_number("horizon", horizon, positive=True)

    def update(self, current_kl: float, n_steps: int) -> None:
        """β ← β · (1 + clip(current_kl / target − 1, ±0.2) · n_steps / horizon).

        Args:
            current_kl: the KL measured on the last batch (a finite float).
            n_steps: how many steps that batch counts for (≥ 0), e.g. its number of episodes.
        """
        current_kl = float(current_kl)
        if not math.isfinite(current_kl):
            raise ValueError(f"current_kl must be finite, got {current_kl!r}; β is left at {self.value}")
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        error = min(max(current_kl / self.target - 1.0, -self.ERROR_CLIP), self.ERROR_CLIP)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        """``{"value": β, "target": ..., "horizon": ...}``."""
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore β (and target / horizon when present) from :meth:`state_dict`'s output."""
        self.value = _check_number("value", state["value"], positive=False)
        if "target" in state:
            self.target = _check_number("target", state["target"], positive=True)
        if "horizon" in state:
            self.horizon = _check_number("horizon", state["horizon"], positive=True)

    def __repr__(self) -> str:
        return f"AdaptiveKLController(beta={self.value}, target={self.target}, horizon={self.horizon})"
