"""Turning (prompt, response) texts into a sequence classifier's inputs, and scoring them in batches.

Training (`rlhfkit reward train`) and scoring (the reward at PPO time) go through these same functions,
so a reward model sees its inputs at scoring time exactly as it saw them in training.

Input modes:

* ``response`` — the response alone (how a hate-speech classifier judges a text).
* ``prompt+response`` — the two as a text pair, with the tokenizer's own separator between them
  (``[CLS] prompt [SEP] response [SEP]`` for BERT, ``<s> prompt </s></s> response </s>`` for RoBERTa).

Truncation keeps the response: when a pair is too long, the end of the prompt is cut first (down to a
quarter of the budget), then the end of the response. Every truncated text is counted, never silent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

INPUT_MODES = ("response", "prompt+response")


@dataclass
class Encoded:
    """Token ids of a list of texts (unpadded), and which of them were truncated."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    """Segment ids (0 prompt, 1 response) for models that use them, else None."""
    truncated: list[bool]

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def classifier_max_length(tokenizer: Any, model_config: Any, fallback: int = 512) -> int:
    """The longest input the classifier takes: the tokenizer's limit, capped by the position embeddings."""
    limits = []
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:  # "no limit" is stored as a huge integer
        limits.append(tok_max)
    positions = getattr(model_config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        # RoBERTa reserves padding_idx + 1 positions before the first token (514 embeddings, 512 tokens).
        offset = (getattr(model_config, "pad_token_id", 0) or 0) + 1 if model_config.model_type in ("roberta", "xlm-roberta") else 0
        limits.append(positions - offset)
    return min(limits) if limits else fallback


def _cut(text: str, offsets: Sequence[tuple[int, int]], keep: int) -> str:
    """``text`` cut after its first ``keep`` tokens (by the tokenizer's character offsets)."""
    if keep <= 0:
        return ""
    if keep >= len(offsets):
        return text
    return text[: offsets[keep - 1][1]]


def encode_texts(
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    input_mode: str,
    max_length: int,
    use_token_types: bool = False,
) -> Encoded:
    """Token ids of each (prompt, response) in ``input_mode``, at most ``max_length`` tokens each."""
    if input_mode not in INPUT_MODES:
        raise ValueError(f"input mode must be one of {INPUT_MODES}, got {input_mode!r}")
    if input_mode == "response":
        enc = tokenizer(list(responses), truncation=False, return_token_type_ids=use_token_types)
        over = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) > max_length]
        if over:
            again = tokenizer([responses[i] for i in over], truncation=True, max_length=max_length,
                              return_token_type_ids=use_token_types)  # fmt: skip
            for j, i in enumerate(over):
                for key in enc:
                    enc[key][i] = again[key][j]
    else:
        enc = tokenizer(list(prompts), list(responses), truncation=False, return_token_type_ids=use_token_types)
        over = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) > max_length]
        if over:
            _shorten_pairs(tokenizer, enc, over, prompts, responses, max_length, use_token_types)
    overset = set(over)
    types = enc.get("token_type_ids") if use_token_types else None
    return Encoded(list(enc["input_ids"]), list(types) if types is not None else None,
                   [i in overset for i in range(len(responses))])  # fmt: skip


def _shorten_pairs(tokenizer: Any, enc: Any, over: list[int], prompts: Sequence[str], responses: Sequence[str],
                   max_length: int, use_token_types: bool) -> None:  # fmt: skip
    """Re-encode the pairs ``over`` within ``max_length``: prompt end cut first, then response end."""
    budget = max(2, max_length - tokenizer.num_special_tokens_to_add(pair=True))
    p_texts, r_texts = [prompts[i] for i in over], [responses[i] for i in over]
    p_enc = tokenizer(p_texts, add_special_tokens=False, return_offsets_mapping=True)
    r_enc = tokenizer(r_texts, add_special_tokens=False, return_offsets_mapping=True)
    cut_p, cut_r = [], []
    for k in range(len(over)):
        p_len, r_len = len(p_enc["input_ids"][k]), len(r_enc["input_ids"][k])
        p_keep = max(min(p_len, budget // 4), budget - r_len)  # the prompt keeps at least a quarter
        r_keep = budget - p_keep
        cut_p.append(_cut(p_texts[k], p_enc["offset_mapping"][k], p_keep))
        cut_r.append(_cut(r_texts[k], r_enc["offset_mapping"][k], r_keep))
    # Re-tokenising cut text can differ by a token at the cut; longest_first trims any such excess.
    again = tokenizer(cut_p, cut_r, truncation="longest_first", max_length=max_length,
                      return_token_type_ids=use_token_types)  # fmt: skip
    for j, i in enumerate(over):
        for key in enc:
            enc[key][i] = again[key][j]


def pad_batch(encoded: Encoded, indices: Sequence[int], pad_id: int, device: torch.device | str = "cpu",
              pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """Right-padded tensors for the texts ``indices`` of ``encoded``: input_ids, attention_mask (N, T).

    Padding only to the longest text of this batch (dynamic padding) is what makes length-sorted batches
    cheap. A decoder-only classifier reads its score at the last non-pad token, so right padding suits it
    as well as an encoder.
    """
    rows = [encoded.input_ids[i] for i in indices]
    width = max(len(r) for r in rows)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for n, r in enumerate(rows):
        ids[n, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[n, : len(r)] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if encoded.token_type_ids is not None:
        types = torch.zeros((len(rows), width), dtype=torch.long)
        for n, i in enumerate(indices):
            t = encoded.token_type_ids[i]
            types[n, : len(t)] = torch.tensor(t, dtype=torch.long)
        batch["token_type_ids"] = types
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def classifier_logits(model: Any, encoded: Encoded, pad_id: int, batch_size: int,
                      device: torch.device | str) -> torch.Tensor:  # fmt: skip
    """(N, num_labels) fp32 logits of every text in ``encoded``, in order; no gradients.

    Texts are scored longest first in batches of ``batch_size``, so each batch pads little; the caller
    is responsible for ``model.eval()`` (dropout off).
    """
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded.input_ids[i]))
    out: torch.Tensor | None = None
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        logits = model(**pad_batch(encoded, chunk, pad_id, device)).logits.float()
        if out is None:
            out = torch.empty((len(encoded), logits.shape[-1]), dtype=torch.float32)
        out[torch.tensor(chunk)] = logits.cpu()
    if out is None:
        return torch.empty((0, 1), dtype=torch.float32)
    return out
