"""A lean KV-cached sampling loop: one forward call per new token, keeping only what PPO uses.

Why not ``model.generate``: for a rollout we need, per sampled token, its log-prob under
softmax(logits / temperature) and the last hidden state that predicted it (for the value head).
``generate(output_logits=True, output_hidden_states=True)`` gives those, but keeps the hidden states of
every layer at every step, and runs its logits processors, stopping criteria and output bookkeeping
around each token. This loop calls the model's own forward with the model's own KV cache (created by
the model on the first call, so every architecture gets the cache type it expects), applies exactly
the sampling rules of :class:`DecodeSettings`, and collects the two things PPO needs as it goes.

Sampling follows transformers' order of processing: EOS is banned until ``min_new_tokens`` tokens
exist, then the logits are divided by the temperature, then top-k, then top-p (nucleus sampling,
Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration"). Log-probs are taken from the
tempered logits *before* any filtering, the distribution a teacher-forced pass computes (docs/ppo.md, detail 2). A checkpoint's own ``generation_config`` (repetition penalties, forced tokens) is not
applied: anything beyond these rules would make the sampling policy differ from the policy PPO trains.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from rlhfkit.errors import RlhfkitError
from rlhfkit.models.forward import (
    at_least_float32,
    decoder_start_id,
    output_layer_inputs,
    position_ids_from_mask,
    unwrapped,
)

NEG_INF = float("-inf")


@dataclass(frozen=True)
class DecodeSettings:
    """What to sample, and when to stop."""

    max_new_tokens: int
    eos_token_id: int
    pad_token_id: int
    min_new_tokens: int = 0
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


@dataclass
class Decoded:
    """The new tokens of a batch, and (with ``collect``) what the policy computed on the way."""

    tokens: torch.Tensor
    """(B, T) sampled ids; a row that produced EOS holds the pad id after it. T <= max_new_tokens."""
    logprobs: torch.Tensor | None = None
    """(B, T) float32 log softmax(logits / temperature) of each sampled token, unfiltered."""
    last_hidden: torch.Tensor | None = None
    """(B, T, H) input of the output layer at the position that predicted each token."""


# --------------------------------------------------------------------------------------------------
# Choosing the next token: pure tensor functions


def top_k_filter(scores: torch.Tensor, top_k: int) -> torch.Tensor:
    """(B, V) scores with everything below the k-th largest of each row set to -inf (ties kept)."""
    if top_k <= 0 or top_k >= scores.shape[-1]:
        return scores
    kth = scores.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
    return scores.masked_fill(scores < kth, NEG_INF)


def top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """(B, V) scores keeping the smallest set of most likely tokens whose probability reaches ``top_p``.

    A token is kept while the probability of the tokens strictly more likely than it is below
    ``top_p``, so the most likely token always survives.
    """
    if top_p >= 1.0:
        return scores
    sorted_scores, order = scores.sort(dim=-1, descending=True)  # (B, V)
    probs = sorted_scores.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # (B, V) mass of the more likely tokens
    drop_sorted = mass_before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
    return scores.masked_fill(drop, NEG_INF)


def sample_from(probs: torch.Tensor, generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
    """(B,) one draw from each row of (B, V) probabilities, by inverting the cumulative distribution.

    ``torch.multinomial`` draws one exponential variate per vocabulary entry for a single sample (its
    fast path for n=1); with a 32k vocabulary that was 15% of a rollout's time. One uniform per row and
    a binary search give the same distribution. The cumulative sum is taken in float64, so its rounding
    cannot shift probability between tokens, and ``u`` lies in (0, total], so a zero-probability token
    (a flat step of the cdf) is never picked.

    With ``generators`` (one per row, CPU) each row takes its uniform from its own stream, so a row's
    sample depends only on its stream and its probabilities, not on the other rows of the batch.
    """
    cdf = probs.double().cumsum(dim=-1)  # (B, V)
    if generators is None:
        uniform = torch.rand(probs.shape[0], 1, dtype=torch.float64, device=probs.device)
    else:
        uniform = torch.cat([torch.rand(1, 1, dtype=torch.float64, generator=g) for g in generators]).to(probs.device)
    u = (1.0 - uniform) * cdf[:, -1:]  # (B, 1)
    return torch.searchsorted(cdf, u).squeeze(-1)


def choose_next(logits: torch.Tensor, settings: DecodeSettings, step: int,
                generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:  # fmt: skip
    """(B,) next token ids from (B, V) float logits at 0-based ``step`` of the response (see :func:`sample_from`)."""
    scores = logits
    if step < settings.min_new_tokens:
        scores = scores.clone()
        scores[:, settings.eos_token_id] = NEG_INF
    if not settings.do_sample:
        return scores.argmax(dim=-1)
    scores = scores / settings.temperature
    scores = top_p_filter(top_k_filter(scores, settings.top_k), settings.top_p)
    return sample_from(scores.softmax(dim=-1), generators)


# --------------------------------------------------------------------------------------------------
# Attention for one-query steps


@contextmanager
def cpu_decode_attention(model: Any) -> Iterator[None]:
    """On a CPU, run the block with the model's eager attention instead of SDPA, then switch back.

    Each decoding step asks attention for one query row. PyTorch's CPU SDPA takes its flash kernel there,
    which is slow for q_len = 1: 1.12 ms against 0.23 ms for the plain matmul-softmax-matmul of eager attention
    in bf16 (16 rows, 12 heads, 128 keys; 0.19 against 0.14 ms in fp32; torch 2.13, 2 threads), a quarter of a
    bf16 rollout of flan-t5-base-shape. Encoder and teacher-forced passes have long queries, where the two are
    within 15% of each other, and keep SDPA. Both compute softmax(QK^T + bias)V; only the rounding differs.
    """
    base = unwrapped(model)
    current = getattr(getattr(base, "config", None), "_attn_implementation", None)
    on_cpu = next(base.parameters()).device.type == "cpu"
    if not on_cpu or current != "sdpa" or not hasattr(base, "set_attn_implementation"):
        yield
        return
    base.set_attn_implementation("eager")
    try:
        yield
    finally:
        base.set_attn_implementation(current)


def _cache_keyword(model: Any) -> str:
    """transformers 5 renamed the forward argument ``past_key_values`` to ``cache``; use what this model takes."""
    return "cache" if "cache" in inspect.signature(unwrapped(model).forward).parameters else "past_key_values"


# --------------------------------------------------------------------------------------------------
# The loop


@torch.no_grad()
def decode(model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, settings: DecodeSettings, *,
           is_encoder_decoder: bool, collect: bool = False, generators: Sequence[torch.Generator] | None = None,
           encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> Decoded:  # fmt: skip
    """Sample up to ``settings.max_new_tokens`` tokens for each prompt row, stopping when every row has EOS.

    prompt_ids, prompt_mask: (B, P); left-padded for decoder-only models. The caller sets eval mode
    and seeds the random stream: sampling draws from the global generator, or with ``generators`` (one
    per row) each row from its own. ``encode`` (encoder-decoders) maps the prompts to the (B, P, H)
    encoder output; by default the model's encoder runs on the whole batch at once.
    """
    if generators is not None and len(generators) != prompt_ids.shape[0]:
        raise RlhfkitError(f"{len(generators)} generators for {prompt_ids.shape[0]} prompt rows; give one per row.")
    if settings.temperature <= 0:
        raise RlhfkitError(f"generation.temperature must be > 0, got {settings.temperature}")
    B = prompt_ids.shape[0]
    cache_kw = _cache_keyword(model)
    if is_encoder_decoder:
        from transformers.modeling_outputs import BaseModelOutput

        if encode is None:
            encoder_hidden = model.get_encoder()(input_ids=prompt_ids, attention_mask=prompt_mask).last_hidden_state
        else:
            encoder_hidden = encode(prompt_ids, prompt_mask)
        fixed = {"encoder_outputs": BaseModelOutput(last_hidden_state=encoder_hidden), "attention_mask": prompt_mask}
        start = torch.full((B, 1), decoder_start_id(model.config, settings.pad_token_id), dtype=torch.long, device=prompt_ids.device)
        inputs: dict[str, Any] = {"decoder_input_ids": start}
    else:
        fixed = {}
        # left-padded prompts: positions count from each row's first real token (docs/ppo.md, detail 5)
        inputs = {"input_ids": prompt_ids, "attention_mask": prompt_mask,
                  "position_ids": position_ids_from_mask(prompt_mask), "logits_to_keep": 1}  # fmt: skip
    finished = torch.zeros(B, dtype=torch.bool, device=prompt_ids.device)
    tokens, logprobs, hidden = [], [], []
    cache = None
    with output_layer_inputs(model) as seen, cpu_decode_attention(model):
        for step in range(settings.max_new_tokens):
            out = model(**fixed, **inputs, use_cache=True, **{cache_kw: cache})
            cache = out[cache_kw]
            logits = at_least_float32(out.logits[:, -1])  # (B, V) raw logits of the next token
            next_ids = choose_next(logits, settings, step, generators)
            next_ids = torch.where(finished, settings.pad_token_id, next_ids)  # (B,)
            tokens.append(next_ids)
            if collect:
                tempered = torch.log_softmax(logits / settings.temperature, dim=-1)  # (B, V)
                logprobs.append(tempered.gather(-1, next_ids[:, None]).squeeze(-1))
                hidden.append(seen[-1][:, -1])  # (B, H)
            seen.clear()
            finished |= next_ids == settings.eos_token_id
            # EOS is banned before min_new_tokens, so no row can have finished: skip the check, which on a GPU
            # would wait for the step's kernels instead of queuing the next step's behind them
            if step + 1 >= settings.min_new_tokens and bool(finished.all()):
                break
            inputs = _next_inputs(inputs, next_ids, is_encoder_decoder)
    empty = prompt_ids.new_zeros(B, 0)
    return Decoded(
        tokens=torch.stack(tokens, dim=1) if tokens else empty,
        logprobs=torch.stack(logprobs, dim=1) if collect and tokens else None,
        last_hidden=torch.stack(hidden, dim=1) if collect and tokens else None,
    )


def _next_inputs(inputs: dict[str, Any], next_ids: torch.Tensor, is_encoder_decoder: bool) -> dict[str, Any]:
    """The forward arguments of the next step: only the new token; the cache holds everything before it."""
    if is_encoder_decoder:
        return {"decoder_input_ids": next_ids[:, None]}
    mask = inputs["attention_mask"]
    return {
        "input_ids": next_ids[:, None],
        "attention_mask": torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1),  # (B, L + 1)
        "position_ids": inputs["position_ids"][:, -1:] + 1,  # (B, 1)
    }
