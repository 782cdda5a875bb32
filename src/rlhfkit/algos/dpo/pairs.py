"""Preference pairs as token ids for the policy's architecture, and batches of them.

A pair (prompt, chosen, rejected) becomes the prompt's ids and, for each response, the ids a policy would
have sampled: the response's tokens followed by EOS, scored exactly as PPO scores a sampled response that
ended (:mod:`rlhfkit.rollout.experience`: mask 1 up to and including the first EOS, pad after it). The
prompt is tokenised as the sampling loop tokenises it (with the tokenizer's special tokens: T5's closing
``</s>``, Llama's ``<s>``), the response without them (a sampled response has no BOS).

Truncation follows SFT (:func:`rlhfkit.algos.sft.tokenize_pair`), which trained the reference: a prompt
longer than ``max_prompt_tokens`` is cut by the tokenizer's own truncation (its ``truncation_side``, the end
for both presets, special tokens kept), so the reference scores the prompts it was fine-tuned on. A response
longer than ``max_response_tokens`` keeps its first tokens and gets no EOS, as PPO scores a sample that hit
the length limit without ending. Both are counted (:class:`TokenisedPairs`) for the run to report.

Shapes: B = pairs, P = prompt tokens, Tc / Tr = chosen / rejected response tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from rlhfkit.errors import RlhfkitError

__all__ = ["PairBatch", "TokenisedPair", "TokenisedPairs", "collate_pairs", "tokenise_pairs"]


class _PairLike(Protocol):
    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class TokenisedPair:
    """One pair's token ids (unpadded)."""

    index: int
    """Position of the pair in the list given to :func:`tokenise_pairs`."""
    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    """Response tokens, then EOS unless the response was truncated."""
    rejected_ids: tuple[int, ...]


@dataclass(frozen=True)
class TokenisedPairs:
    """Every pair's ids, and how many prompts and responses were truncated."""

    pairs: list[TokenisedPair]
    prompts_truncated: int
    chosen_truncated: int
    rejected_truncated: int

    def __len__(self) -> int:
        return len(self.pairs)


@dataclass(frozen=True)
class PairBatch:
    """A padded batch of tokenised pairs, both responses answering the same prompt rows."""

    index: torch.Tensor  # (B,) long: each pair's TokenisedPair.index
    prompt_ids: torch.Tensor  # (B, P) long, left-padded for decoder-only, right-padded for encoder-decoders
    prompt_mask: torch.Tensor  # (B, P) long, 1 for real prompt tokens
    chosen_ids: torch.Tensor  # (B, Tc) long, pad after the response (and its EOS)
    chosen_mask: torch.Tensor  # (B, Tc) float, 1.0 on response tokens including EOS
    rejected_ids: torch.Tensor  # (B, Tr) long
    rejected_mask: torch.Tensor  # (B, Tr) float

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def to(self, device: torch.device | str) -> PairBatch:
        return PairBatch(*(t.to(device) for t in (self.index, self.prompt_ids, self.prompt_mask, self.chosen_ids,
                                                  self.chosen_mask, self.rejected_ids, self.rejected_mask)))  # fmt: skip


def _where(i: int, pair: Any) -> str:
    line = getattr(pair, "line", None)
    return f"pair #{i}" + (f" (line {line})" if line is not None else "")


def _response_ids(tokenizer: Any, text: str, max_tokens: int, i: int, pair: Any, side: str) -> tuple[list[int], bool]:
    """(ids, truncated): the response's tokens + EOS, or its first ``max_tokens`` tokens without EOS."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text.strip() else []
    if not ids:
        raise RlhfkitError(
            f"{_where(i, pair)} has an empty {side} response ({text!r}); a DPO pair needs two non-empty responses "
            "to compare. Remove the pair from the data (or fix the export that produced it)."
        )
    if tokenizer.eos_token_id in ids:
        raise RlhfkitError(
            f"{_where(i, pair)}: the {side} response contains the EOS token {tokenizer.eos_token!r} (at token "
            f"{ids.index(tokenizer.eos_token_id)}), so it would be scored as ending there. Remove "
            f"{tokenizer.eos_token!r} from the response text."
        )
    if len(ids) + 1 <= max_tokens:
        return ids + [tokenizer.eos_token_id], False
    return ids[:max_tokens], True


def tokenise_pairs(tokenizer: Any, pairs: Sequence[_PairLike], is_encoder_decoder: bool, max_prompt_tokens: int,
                   max_response_tokens: int) -> TokenisedPairs:  # fmt: skip
    """Token ids of each pair (anything with ``prompt``, ``chosen``, ``rejected`` strings: a PreferencePair,
    a Comparison), with truncation counted (module docstring).

    ``is_encoder_decoder`` is checked against the tokenizer's padding side (right for encoder-decoders, left
    for decoder-only, as :func:`rlhfkit.models.loading.load_base_model` sets it), so ids tokenised for one
    architecture are not collated for the other.

    Raises:
        RlhfkitError: no pairs, limits below 1, an empty prompt or response, a response that contains EOS, or
            a pair whose two responses are the same text (or the same ids once truncated).
    """
    if not pairs:
        raise RlhfkitError("there are no preference pairs to tokenise; check the DPO data source.")
    if max_prompt_tokens < 1 or max_response_tokens < 1:
        raise RlhfkitError(
            f"max_prompt_tokens and max_response_tokens must be >= 1, got {max_prompt_tokens} and "
            f"{max_response_tokens}."
        )
    expected_side = "right" if is_encoder_decoder else "left"
    if getattr(tokenizer, "padding_side", expected_side) != expected_side:
        raise RlhfkitError(
            f"the tokenizer pads on the {tokenizer.padding_side}, but a{'n encoder-decoder' if is_encoder_decoder else ' decoder-only'} "
            f"model's prompts are padded on the {expected_side}; load the tokenizer with the model "
            "(rlhfkit.models.loading.load_base_model), which sets it."
        )
    out: list[TokenisedPair] = []
    cut_prompts = cut_chosen = cut_rejected = 0
    for i, pair in enumerate(pairs):
        if pair.chosen == pair.rejected:
            raise RlhfkitError(
                f"{_where(i, pair)} has the same text as chosen and as rejected ({pair.chosen[:80]!r}); such a pair "
                "says nothing about which response is better. Remove it (or mark it as a tie where the data allows)."
            )
        full = tokenizer(pair.prompt)["input_ids"]
        prompt = tokenizer(pair.prompt, truncation=True, max_length=max_prompt_tokens)["input_ids"]
        if not prompt:
            raise RlhfkitError(f"{_where(i, pair)} has an empty prompt, which gives the model nothing to answer.")
        chosen, c_cut = _response_ids(tokenizer, pair.chosen, max_response_tokens, i, pair, "chosen")
        rejected, r_cut = _response_ids(tokenizer, pair.rejected, max_response_tokens, i, pair, "rejected")
        if chosen == rejected:
            raise RlhfkitError(
                f"{_where(i, pair)}: chosen and rejected become the same {len(chosen)} tokens once cut to "
                f"max_response_tokens={max_response_tokens}, so the pair cannot tell them apart; raise "
                "max_response_tokens or remove the pair."
            )
        cut_prompts += len(full) > len(prompt)
        cut_chosen += c_cut
        cut_rejected += r_cut
        out.append(TokenisedPair(i, tuple(prompt), tuple(chosen), tuple(rejected)))
    return TokenisedPairs(out, cut_prompts, cut_chosen, cut_rejected)


def _pad(rows: Sequence[Sequence[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) ids padded with ``pad_id`` on one side, and the (B, L) long mask of real tokens."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, row in enumerate(rows):
        cols = slice(width - len(row), width) if left else slice(0, len(row))
        ids[k, cols] = torch.tensor(row, dtype=torch.long)
        mask[k, cols] = 1
    return ids, mask


def collate_pairs(items: Sequence[TokenisedPair], pad_token_id: int, is_encoder_decoder: bool) -> PairBatch:
    """Pad a list of tokenised pairs into a :class:`PairBatch`: prompts on the architecture's side (left for
    decoder-only, so every prompt ends where its response starts), responses on the right."""
    if not items:
        raise RlhfkitError("cannot collate an empty list of pairs.")
    prompt_ids, prompt_mask = _pad([p.prompt_ids for p in items], pad_token_id, left=not is_encoder_decoder)
    chosen_ids, chosen_mask = _pad([p.chosen_ids for p in items], pad_token_id, left=False)
    rejected_ids, rejected_mask = _pad([p.rejected_ids for p in items], pad_token_id, left=False)
    index = torch.tensor([p.index for p in items], dtype=torch.long)
    return PairBatch(index, prompt_ids, prompt_mask, chosen_ids, chosen_mask.float(), rejected_ids,
                     rejected_mask.float())  # fmt: skip
