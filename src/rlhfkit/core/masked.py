"""Statistics over the valid tokens of a padded batch.

A PPO batch is a (B, T) grid in which each row is one response, padded after its end. Every
statistic here looks only at the positions where ``mask`` is set; whatever sits in the other
positions (padding, values computed after EOS, even NaN) cannot change a result, because masked
entries are replaced with zeros through ``torch.where`` before any arithmetic touches them.

Masks may be bool or float tensors; any non-zero entry marks a valid token.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["explained_variance", "masked_mean", "masked_sum", "masked_var", "masked_whiten"]


def _require_same_shape(**tensors: torch.Tensor) -> None:
    """Raise a ValueError naming every shape when the given tensors do not all share one shape."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"shape mismatch: {listing}; these tensors must all have the same shape")


def _as_bool(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` as a bool tensor (non-zero = valid token)."""
    return mask if mask.dtype == torch.bool else mask != 0


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` over the valid positions.

    Args:
        x: (B, T) or any shape; the values.
        mask: same shape as ``x``; 1.0 / True for valid tokens.
        dim: reduce over this dimension only (e.g. ``dim=1`` gives one sum per row, shape (B,)),
            or over everything when None (a scalar).
    """
    _require_same_shape(x=x, mask=mask)
    valid = _as_bool(mask)
    return torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the valid positions.

    Args:
        x: (B, T) or any shape; the values.
        mask: same shape as ``x``; 1.0 / True for valid tokens.
        dim: average over this dimension only (``dim=1`` gives a per-row mean, shape (B,)), or over
            all valid tokens of the batch when None (a scalar: every token weighs the same, so long
            responses count more than short ones).

    Raises:
        ValueError: when there is no valid token to average (in any slice along ``dim``).
    """
    valid = _as_bool(mask)
    total = masked_sum(x, valid, dim=dim)
    count = valid.sum(dim=dim)
    if bool((count == 0).any()):
        where = "the whole mask" if dim is None else f"at least one slice along dim {dim}"
        raise ValueError(f"masked_mean: {where} has no valid token (mask sums to 0)")
    return total / count.to(total.dtype)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over all valid positions (a scalar).

    Args:
        x: (B, T) or any shape.
        mask: same shape as ``x``; 1.0 / True for valid tokens.
        unbiased: divide by n − 1 (Bessel's correction) instead of n, n = number of valid tokens.

    Raises:
        ValueError: when no token is valid, or only one is and ``unbiased`` is True.
    """
    valid = _as_bool(mask)
    n = int(valid.sum())
    if n == 0:
        raise ValueError("masked_var: the mask has no valid token (mask sums to 0)")
    if unbiased and n == 1:
        raise ValueError(
            "masked_var: the unbiased variance needs at least 2 valid tokens but the mask has 1; "
            "pass unbiased=False for the population variance"
        )
    centered = x - masked_mean(x, valid)
    return masked_sum(centered * centered, valid) / (n - 1 if unbiased else n)


def masked_whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    eps: float = 1e-8,
    reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Normalise ``x`` to unit (unbiased) variance over the valid tokens; masked positions become 0.

    Used on advantages before the policy loss, and optionally on rewards. Statistics come from the
    valid tokens only: padding zeros would otherwise pull the mean toward 0 and shrink the variance
    (masked whitening, "The N+ Implementation Details of RLHF with PPO", Huang et al. 2024).

    Args:
        x: (B, T) values to whiten, e.g. advantages.
        mask: (B, T) 1.0 / True for valid response tokens.
        shift_mean: True gives (x − mean) / std (mean 0, std 1). False only rescales, keeping the
            original mean: (x − mean) / std + mean. lm-human-preferences (Ziegler et al. 2019) whitens
            rewards this way so that their sign is not changed.
        eps: added to the variance before the square root.
        reduce_sum: when the batch is split across processes, a function that sums a small tensor over
            all of them; mean and variance are then those of the whole batch (two passes: the sum and
            count, then the squared deviations), so every process whitens with the same statistics.

    Returns:
        (B, T) whitened values; 0 at masked positions.

    Raises:
        ValueError: shapes differ, or fewer than 2 valid tokens (see :func:`masked_var`).
    """
    _require_same_shape(x=x, mask=mask)
    valid = _as_bool(mask)
    if reduce_sum is None:
        mean = masked_mean(x, valid)
        var = masked_var(x, valid, unbiased=True)
    else:
        total, count = reduce_sum(torch.stack([masked_sum(x, valid), valid.sum().to(x.dtype)])).tolist()
        if count < 2:
            raise ValueError(
                f"masked_whiten: the unbiased variance needs at least 2 valid tokens, the batch has {count:.0f}"
            )
        mean = torch.tensor(total / count, dtype=x.dtype, device=x.device)
        centered = x - mean
        squares = float(reduce_sum(masked_sum(centered * centered, valid).reshape(1))[0])
        var = torch.tensor(squares / (count - 1), dtype=x.dtype, device=x.device)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(valid, whitened, torch.zeros((), dtype=whitened.dtype, device=whitened.device))


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """How much of the returns' variance the value head explains: 1 − Var[R − V] / Var[R].

    1 is a perfect value function, 0 is no better than predicting the mean return, negative is
    worse than that. Variances are population variances (divide by n) over the valid tokens.

    Args:
        values: (B, T) value predictions V(s_t).
        returns: (B, T) return targets R_t.
        mask: (B, T) 1.0 / True for valid response tokens.

    Returns:
        A detached scalar tensor. When Var[R] == 0 (e.g. one valid token, or all returns equal) the
        ratio is undefined and **0.0** is returned instead of NaN/inf, so logs and averages of this
        metric stay finite.

    Raises:
        ValueError: shapes differ, or no valid token.
    """
    _require_same_shape(values=values, returns=returns, mask=mask)
    valid = _as_bool(mask)
    values, returns = values.detach(), returns.detach()
    var_returns = masked_var(returns, valid, unbiased=False)
    var_residual = masked_var(returns - values, valid, unbiased=False)
    safe_denominator = torch.where(var_returns > 0, var_returns, torch.ones_like(var_returns))
    return torch.where(var_returns > 0, 1.0 - var_residual / safe_denominator, torch.zeros_like(var_returns))
