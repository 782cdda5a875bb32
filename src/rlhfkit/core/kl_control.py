"""The controllers that set β, the weight of the KL penalty in the reward (fixed, or adaptive towards a target).

Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", sec. 2.2: the adaptive
controller moves β by a proportional error clipped to ±0.2, scaled by steps/horizon.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

__all__ = ["AdaptiveKLController", "FixedKLController", "KLController"]


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
