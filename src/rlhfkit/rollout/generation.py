"""Batched generation with dropout off, stopping at EOS, for encoder-decoder and decoder-only models.

Used by SFT evaluation, PPO rollouts, feedback candidate sampling and `rlhfkit eval`, so the same rules
hold everywhere: prompts are checked against a token budget, decoder-only prompts are left-padded, the
model is in eval mode while sampling (docs/ppo.md, detail 1), and every token after the first EOS is
masked out (detail 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from rlhfkit.config import GenerationConfig
from rlhfkit.errors import RlhfkitError
from rlhfkit.rollout.decoding import DecodeSettings, decode

__all__ = ["Generation", "check_prompts", "decode_texts", "encode_prompts", "generate", "response_mask_from_eos"]


@dataclass
class Generation:
    """Prompts and the responses sampled for them, as padded token tensors and as text."""

    prompt_ids: torch.Tensor
    """(B, P) prompt tokens; left-padded for decoder-only models, right-padded for encoder-decoders."""
    prompt_mask: torch.Tensor
    """(B, P) 1 for real prompt tokens, 0 for padding."""
    response_ids: torch.Tensor
    """(B, T) generated tokens; positions after the first EOS hold the pad id."""
    response_mask: torch.Tensor
    """(B, T) 1 for tokens up to and including the first EOS, 0 after it."""
    ended: torch.Tensor
    """(B,) bool, True when the response produced EOS within the token budget."""
    texts: list[str]
    """Decoded responses without special tokens."""
    logprobs: torch.Tensor | None = None
    """(B, T) log-probs of the sampled tokens with logits / temperature (only with collect=True)."""
    last_hidden: torch.Tensor | None = None
    """(B, T, H) last-layer hidden state that predicted each token (only with collect=True)."""


def check_prompts(tokenizer: Any, prompts: Sequence[str], max_prompt_tokens: int) -> None:
    """Refuse an empty prompt list, or any prompt longer than ``max_prompt_tokens`` tokens, before any work."""
    if not prompts:
        raise RlhfkitError("no prompts to generate from.")
    lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
    too_long = [i for i, n in enumerate(lengths) if n > max_prompt_tokens]
    if too_long:
        i = too_long[0]
        raise RlhfkitError(
            f"{len(too_long)} prompt(s) exceed generation.max_prompt_tokens={max_prompt_tokens} (the first, "
            f"#{i}, has {lengths[i]} tokens: {prompts[i][:80]!r}...). Raise generation.max_prompt_tokens up to "
            "the model's maximum, or shorten the prompts (data.max_chars filters long dialogues)."
        )


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize and pad ``prompts`` (on the tokenizer's padding side)."""
    batch = tokenizer(list(prompts), add_special_tokens=True, padding=True, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def response_mask_from_eos(response_ids: torch.Tensor, eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of tokens up to and including the first EOS, and whether each row has an EOS.

    response_ids: (B, T). Returns mask (B, T) float and ended (B,) bool.
    """
    is_eos = response_ids == eos_token_id
    # number of EOS tokens strictly before each position; a token is valid while that count is 0
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    mask = (eos_before == 0).float()
    return mask, is_eos.any(dim=1)


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    gen: GenerationConfig,
    is_encoder_decoder: bool,
    *,
    do_sample: bool | None = None,
    max_new_tokens: int | None = None,
    seed: int | None = None,
    row_seeds: Sequence[int] | None = None,
    collect: bool = False,
    encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Generation:
    """Generate one response per prompt, in batches of ``gen.batch_size``, with dropout off.

    ``seed`` makes sampling reproducible without disturbing the caller's global RNG state.
    ``row_seeds`` (one per prompt) goes further: each prompt draws from its own random stream (a generator
    per row, see :func:`~rlhfkit.rollout.decoding.sample_from`), so its response does not depend on the
    batch it lands in, and two policies sampled with the same row seeds share their random numbers (paired
    evaluation). With ``collect=True`` the log-probs of the sampled tokens and the hidden states behind them are kept from
    the sampling pass itself, so a PPO rollout need not run the policy over its responses again.
    ``encode`` (encoder-decoders) replaces the encoder pass of each batch, see :func:`~rlhfkit.rollout.decoding.decode`.
    ``on_batch(n)`` is called after each batch with its number of prompts (a progress bar advances by it).
    """
    check_prompts(tokenizer, prompts, gen.max_prompt_tokens)
    if row_seeds is not None and len(row_seeds) != len(prompts):
        raise RlhfkitError(f"row_seeds has {len(row_seeds)} seeds for {len(prompts)} prompts; give one per prompt.")
    settings = DecodeSettings(
        max_new_tokens=max_new_tokens or gen.max_new_tokens, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, min_new_tokens=gen.min_new_tokens,
        do_sample=gen.do_sample if do_sample is None else do_sample, temperature=gen.temperature,
        top_k=gen.top_k, top_p=gen.top_p,
    )  # fmt: skip
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts: list[Generation] = []
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, len(prompts), gen.batch_size):
                ids, mask = encode_prompts(tokenizer, prompts[start : start + gen.batch_size])
                generators = None
                if settings.do_sample and row_seeds is not None:
                    seeds = row_seeds[start : start + gen.batch_size]
                    generators = [torch.Generator().manual_seed(int(s) % 2**63) for s in seeds]
                out = decode(model, ids.to(device), mask.to(device), settings, is_encoder_decoder=is_encoder_decoder,
                             collect=collect, generators=generators, encode=encode)  # fmt: skip
                part = _finish(tokenizer, ids, mask, out.tokens.cpu())
                if collect:
                    part.logprobs, part.last_hidden = out.logprobs.cpu(), out.last_hidden.cpu()
                parts.append(part)
                if on_batch is not None:
                    on_batch(len(ids))
    finally:
        model.train(was_training)
    return _concat(parts, tokenizer.pad_token_id, left=tokenizer.padding_side == "left")


def _finish(tokenizer: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response: torch.Tensor) -> Generation:
    mask, ended = response_mask_from_eos(response, tokenizer.eos_token_id)
    response = torch.where(mask.bool(), response, torch.full_like(response, tokenizer.pad_token_id))
    return Generation(prompt_ids, prompt_mask, response, mask, ended, decode_texts(tokenizer, response))


def decode_texts(tokenizer: Any, response: torch.Tensor) -> list[str]:
    """The text of each (B, T) response, decoded whole, without special tokens and without U+FFFD.

    A byte-level vocabulary (the presets', GPT-2's) holds every single byte, so a policy can sample bytes
    that form no UTF-8 character: a lone lead or continuation byte, or a character cut off by
    ``max_new_tokens``. Decoding the whole sequence joins the bytes of a character split over tokens; what
    is still invalid carries no text, and the tokenizer shows each such run as U+FFFD, the replacement
    character. Those runs are dropped here, once for every consumer (rewards, reports, feedback items); the
    token ids keep them.
    """
    texts = tokenizer.batch_decode(response, skip_special_tokens=True)
    return [t.replace("\ufffd", "").strip() for t in texts]


def _pad_to(t: torch.Tensor, width: int, value: float | int, left: bool = False) -> torch.Tensor:
    if t.shape[1] == width:
        return t
    pad = torch.full((t.shape[0], width - t.shape[1]), value, dtype=t.dtype)
    return torch.cat([pad, t] if left else [t, pad], dim=1)


def _concat(parts: list[Generation], pad_id: int, left: bool) -> Generation:
    if len(parts) == 1:
        return parts[0]
    p_width = max(g.prompt_ids.shape[1] for g in parts)
    r_width = max(g.response_ids.shape[1] for g in parts)
    return Generation(
        prompt_ids=torch.cat([_pad_to(g.prompt_ids, p_width, pad_id, left) for g in parts]),
        prompt_mask=torch.cat([_pad_to(g.prompt_mask, p_width, 0, left) for g in parts]),
        response_ids=torch.cat([_pad_to(g.response_ids, r_width, pad_id) for g in parts]),
        response_mask=torch.cat([_pad_to(g.response_mask, r_width, 0.0) for g in parts]),
        ended=torch.cat([g.ended for g in parts]),
        texts=[t for g in parts for t in g.texts],
        logprobs=None if parts[0].logprobs is None else torch.cat([_pad_to(g.logprobs, r_width, 0.0) for g in parts]),
        last_hidden=None if parts[0].last_hidden is None else torch.cat([_pad3(g.last_hidden, r_width) for g in parts]),
    )


def _pad3(t: torch.Tensor, width: int) -> torch.Tensor:
    """Pad a (B, T, H) tensor with zeros along T."""
    if t.shape[1] == width:
        return t
    return torch.cat([t, t.new_zeros(t.shape[0], width - t.shape[1], t.shape[2])], dim=1)
