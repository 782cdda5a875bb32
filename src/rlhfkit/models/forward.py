"""Teacher-forced passes and the model plumbing every pass shares: decoder start ids, position ids of
left-padded rows, the output layer's input (for a value head), eval mode, dtype promotion.

Used by the sampling loop (:mod:`rlhfkit.rollout.decoding`), the policy's scoring passes
(:mod:`rlhfkit.models.policy`), SFT and evaluation, so the rules hold alike everywhere: decoder-only prompts
are left-padded and their positions count from each row's first real token (docs/ppo.md, detail 5), and
dropout is off while sampling or scoring (detail 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from rlhfkit.errors import RlhfkitError


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 if it is in a lower precision (bf16/fp16 under autocast); float32/float64 as it is."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def decoder_start_id(config: Any, pad_token_id: int) -> int:
    """The first decoder input of an encoder-decoder: config.decoder_start_token_id, else the pad id (T5)."""
    start = getattr(config, "decoder_start_token_id", None)
    return int(start if start is not None else pad_token_id)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) position ids that start at 0 on the first real token of each left-padded row."""
    return (torch.cumsum(attention_mask.long(), dim=1) - 1).clamp(min=0)


def unwrapped(model: Any) -> Any:
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextmanager
def output_layer_inputs(model: Any) -> Iterator[list[torch.Tensor]]:
    """Record the input of the model's output layer (the last hidden state) on every forward in the block.

    The value head needs only this one tensor; asking the model for ``output_hidden_states`` instead
    returns (and, without autograd, keeps alive) the hidden states of every layer.
    """
    seen: list[torch.Tensor] = []
    handle = model.get_output_embeddings().register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    try:
        yield seen
    finally:
        handle.remove()


@contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[None]:
    """Dropout off for the block, then the previous mode again (docs/ppo.md, detail 1)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def teacher_forced(model: Any, is_encoder_decoder: bool, start_id: int, prompt_ids: torch.Tensor,
                   prompt_mask: torch.Tensor, response_ids: torch.Tensor,
                   encoder_hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One pass over (prompt, response): (B, T, V) logits predicting each response token, (B, T, H) hidden.

    prompt_ids, prompt_mask: (B, P); response_ids: (B, T). The hidden states are the output layer's input
    (the decoder's last hidden state for encoder-decoders) at the positions that predict each response
    token, recorded by a hook: ``output_hidden_states`` would return, and in a no-grad pass keep alive,
    every layer's. ``encoder_hidden`` (B, P, H), encoder-decoders only: ``model``'s encoder output for
    these prompts, computed before; the encoder is then skipped.
    """
    T = response_ids.shape[1]
    if is_encoder_decoder:
        start = torch.full_like(response_ids[:, :1], start_id)
        decoder_input_ids = torch.cat([start, response_ids[:, :-1]], dim=1)  # (B, T) shifted right
        prompt: dict[str, Any] = {"input_ids": prompt_ids}
        if encoder_hidden is not None:
            from transformers.modeling_outputs import BaseModelOutput

            prompt = {"encoder_outputs": BaseModelOutput(last_hidden_state=encoder_hidden)}
        with output_layer_inputs(model) as seen:
            out = model(**prompt, attention_mask=prompt_mask, decoder_input_ids=decoder_input_ids, use_cache=False)
        return out.logits, seen[-1]
    if encoder_hidden is not None:
        raise RlhfkitError("encoder_hidden was given for a decoder-only model, which has no encoder.")
    input_ids = torch.cat([prompt_ids, response_ids], dim=1)  # (B, P + T)
    attention_mask = torch.cat([prompt_mask, torch.ones_like(response_ids)], dim=1)
    # left-padded prompts: positions count from each row's first real token (docs/ppo.md, detail 5)
    with output_layer_inputs(model) as seen:
        out = model(input_ids=input_ids, attention_mask=attention_mask,
                    position_ids=position_ids_from_mask(attention_mask), use_cache=False, logits_to_keep=T + 1)  # fmt: skip
    # logits_to_keep=T+1 keeps positions P-1 .. P+T-1; position P-1+t predicts response token t
    return out.logits[:, :T], seen[-1][:, :T]
