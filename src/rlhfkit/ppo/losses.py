"""Log-probs and entropy from logits, the clipped PPO losses, and the old-vs-new policy KL.

Every loss is a masked mean over the valid tokens of the (micro-)batch. Masked positions are
replaced with zeros before any exp or square, so padding can change neither the loss nor its
gradient (not even through 0 · inf = NaN in the backward pass).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from rlhfkit.ppo.kl import kl_k3
from rlhfkit.ppo.stats import _as_bool, _require_same_shape, masked_mean

__all__ = [
    "approx_kl",
    "approx_kl_k3",
    "clipped_policy_loss",
    "clipped_value_loss",
    "entropy_from_logits",
    "logprobs_from_logits",
]


def _check_temperature(temperature: float) -> float:
    temperature = float(temperature)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return temperature


# Elements of one float32 temporary (1 MiB) on a CPU, where each freshly allocated buffer is paid for in page
# faults and stays in the allocator's pools; a GPU prefers few large kernels to many small ones.
CPU_CHUNK_ELEMENTS, GPU_CHUNK_ELEMENTS = 1 << 18, 1 << 24


def _scaled_chunks(logits: torch.Tensor, temperature: float) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (first position, (n, V) slice of logits.reshape(-1, V) / temperature) in at least float32.

    Working a few positions at a time bounds the temporary buffers of logsumexp / softmax (and of the dtype
    cast and the division) to about CPU_CHUNK_ELEMENTS each, instead of a second (B, T, V) tensor and its
    companions: on the FLAN-T5-small shape the entropy of a PPO mini-batch raised peak memory by ~30 MiB
    when it worked one (T, V) row at a time.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    vocab = logits.shape[-1]
    budget = CPU_CHUNK_ELEMENTS if logits.device.type == "cpu" else GPU_CHUNK_ELEMENTS
    step = max(1, budget // max(vocab, 1))
    flat = logits.reshape(-1, vocab)
    for start in range(0, flat.shape[0], step):
        chunk = flat[start : start + step].to(dtype)
        yield start, (chunk if temperature == 1.0 else chunk / temperature)


def logprobs_from_logits(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log π(a_t|s_t) of the given tokens under softmax(logits / temperature).

    The logits are divided by the sampling temperature first, so rollout, reference and training
    log-probs all describe the distribution the tokens were actually sampled from ("The N+
    Implementation Details of RLHF with PPO", Huang et al. 2024; DESIGN detail 2). Computed as
    gather(logits) − logsumexp(logits) a few positions at a time, without materialising a full log_softmax.

    Args:
        logits: (B, T, V) next-token logits aligned with ``tokens`` (logits[:, t] predicts
            tokens[:, t]); any float dtype.
        tokens: (B, T) integer token ids in [0, V).
        temperature: sampling temperature (> 0).

    Returns:
        (B, T) log-probs in float32 (float64 for float64 logits). Padding positions get the
        log-prob of whatever id they hold; mask them downstream.

    Raises:
        ValueError: shapes disagree, tokens are not integers or out of [0, V), bad temperature.
    """
    temperature = _check_temperature(temperature)
    if logits.dim() != 3 or tuple(tokens.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"logits must be (B, T, V) and tokens (B, T) with the same B and T; got logits "
            f"{tuple(logits.shape)} and tokens {tuple(tokens.shape)}"
        )
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool or tokens.dtype.is_complex:
        raise ValueError(f"tokens must be an integer tensor, got dtype {tokens.dtype}")
    vocab = logits.shape[-1]
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
        raise ValueError(
            f"token ids must lie in [0, {vocab}) for logits with vocabulary size {vocab}; got ids in "
            f"[{int(tokens.min())}, {int(tokens.max())}] (is a pad/ignore id like -100 left in?)"
        )
    flat = logits.reshape(-1, vocab)
    if flat.shape[0] == 0:
        return torch.zeros(
            tuple(tokens.shape), dtype=torch.promote_types(logits.dtype, torch.float32), device=logits.device
        )
    return _TokenLogprob.apply(flat, tokens.long().reshape(-1), temperature).reshape(tokens.shape)


class _TokenLogprob(torch.autograd.Function):
    """(N, V) logits, (N,) tokens → (N,) log softmax(logits / temperature)[token], with a hand-written backward.

    Autograd through gather − logsumexp would keep a float32 copy of every scaled logits chunk for the
    backward pass (16 MiB for a FLAN-T5-small mini-batch of 4 × 32 tokens, twice the bf16 logits) and build
    a float32 (N, V) gradient before casting it to the logits' dtype. This keeps the logits as they are and
    the (N,) log-normalisers, and writes the gradient chunk by chunk straight into the logits' dtype:
    d logp / d logits = (onehot(token) − softmax(logits / T)) / T.
    """

    @staticmethod
    def forward(ctx, flat: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
        chosen, lognorm = [], []
        for start, chunk in _scaled_chunks(flat, temperature):
            chosen.append(chunk.gather(-1, tokens[start : start + chunk.shape[0], None]).squeeze(-1))  # (n,)
            lognorm.append(torch.logsumexp(chunk, dim=-1))  # (n,)
        lse = torch.cat(lognorm)
        ctx.save_for_backward(flat, tokens, lse)
        ctx.temperature = temperature
        return torch.cat(chosen) - lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        flat, tokens, lse = ctx.saved_tensors
        temperature = ctx.temperature
        out = torch.empty_like(flat)
        for start, chunk in _scaled_chunks(flat, temperature):
            rows = slice(start, start + chunk.shape[0])
            g = grad[rows, None].to(chunk.dtype)  # (n, 1)
            d = torch.exp(chunk - lse[rows, None]).mul_(-g)  # −p · grad, (n, V)
            d.scatter_add_(-1, tokens[rows, None], g)  # + onehot · grad
            out[rows] = d.div_(temperature) if temperature != 1.0 else d
        return out, None, None


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy H = −Σ_v p_v log p_v of softmax(logits / temperature) at every position.

    log p comes from log_softmax (logsumexp inside), so large logits do not overflow; tokens with
    probability 0 (logit −inf, e.g. a banned token) contribute 0 instead of 0 · (−inf) = NaN.

    Args:
        logits: (B, T, V) next-token logits; any float dtype.
        temperature: sampling temperature (> 0), the same one used for the log-probs.

    Returns:
        (B, T) entropy in nats, float32 (float64 for float64 logits).
    """
    temperature = _check_temperature(temperature)
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, T, V), got shape {tuple(logits.shape)}")
    parts = []
    for _, chunk in _scaled_chunks(logits, temperature):
        logp = torch.log_softmax(chunk, dim=-1)
        p = logp.exp()
        parts.append(-(p * torch.where(p > 0, logp, 0.0)).sum(dim=-1))
    if not parts:
        return torch.zeros(
            tuple(logits.shape[:2]),
            dtype=torch.promote_types(logits.dtype, torch.float32),
            device=logits.device,
        )
    return torch.cat(parts).reshape(logits.shape[:2])


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
        returns: (B, T) return targets R_t from :func:`rlhfkit.ppo.advantages.gae_advantages`
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
    the old and new policy (DESIGN detail 8), with :func:`approx_kl` beside it if wanted.

    Args:
        logprobs: (B, T) log π(a_t|s_t) under the current policy.
        old_logprobs: (B, T) log π_old(a_t|s_t) from the rollout.
        mask: (B, T) 1.0 / True for valid response tokens.
    """
    # k3 from Schulman, "Approximating KL Divergence" (2020), with q = π_old (the sampler), p = π.
    _require_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, mask=mask)
    return masked_mean(kl_k3(old_logprobs.detach(), logprobs.detach()), mask)
