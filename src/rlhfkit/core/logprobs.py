"""Log-probs and entropy of tokens from a model's logits, with the sampling temperature applied.

Every algorithm scores responses this way (PPO's rollout, reference and update; DPO's chosen and rejected;
GRPO's groups), so the rule "divide the logits by the sampling temperature before every log-prob"
(docs/ppo.md, "One step") lives here once. Shapes: B = batch, T = response tokens, V = vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

__all__ = ["entropy_from_logits", "logprobs_from_logits"]


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
    Implementation Details of RLHF with PPO", Huang et al. 2024; docs/ppo.md, detail 2). Computed as
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
