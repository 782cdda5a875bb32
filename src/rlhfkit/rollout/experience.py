"""Experience for online RL: which prompts a step takes, the responses sampled for them (with the policy's
log-probs, and values when it has a value head), their reward scores and their reference log-probs.

PPO uses every stage here; critic-free methods (GRPO, RLOO) use the same with several samples per prompt.
Each stage *returns* what it computed — an :class:`Experience`, a score tensor, a log-prob tensor — so a step
reads as a pipeline of named calls.

Randomness is derived from (seed, step, stage) (:func:`derived_seed`), so a resumed run draws exactly what an
uninterrupted one would have drawn; a step's prompts come from :class:`PromptStream`, addressable by step.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from rlhfkit.config import GenerationConfig
from rlhfkit.errors import RlhfkitError
from rlhfkit.models.forward import evaluation_mode
from rlhfkit.models.policy import Policy
from rlhfkit.rewards.base import Reward, check_scores
from rlhfkit.rollout.generation import generate


@dataclass(frozen=True)
class Experience:
    """Responses sampled by the policy. B = responses, P = prompt tokens, T = response tokens."""

    prompts: list[str]  # B, the prompt each response answers (repeated for several samples per prompt)
    responses: list[str]  # B
    group_ids: torch.Tensor  # (B,) long: responses with the same id answer the same prompt
    prompt_ids: torch.Tensor  # (B, P) left-padded for decoder-only, right-padded for encoder-decoders
    prompt_mask: torch.Tensor  # (B, P) 1 for real prompt tokens
    response_ids: torch.Tensor  # (B, T) pad after the first EOS
    mask: torch.Tensor  # (B, T) 1.0 up to and including the first EOS
    ended: torch.Tensor  # (B,) bool, produced EOS
    old_logprobs: torch.Tensor  # (B, T) log π_old(a_t|s_t), temperature-corrected, 0 on padding
    values: torch.Tensor | None  # (B, T) V_old(s_t) from a value head (PPO), 0 on padding; else None

    def __len__(self) -> int:
        return len(self.prompts)


# --------------------------------------------------------------------------------------------------
# Seeds and prompts


def derived_seed(seed: int, step: int, stage: str) -> int:
    """A seed for one stage of one step, independent of everything that ran before it."""
    digest = hashlib.sha256(f"{seed}:{step}:{stage}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class PromptStream:
    """Step ``i`` gets prompts ``i*B .. (i+1)*B-1`` of an endless sequence of seeded epoch permutations."""

    def __init__(self, prompts: list[str], batch_size: int, seed: int) -> None:
        if not prompts:
            raise RlhfkitError("there are no training prompts; check data.source and the length filter.")
        self.prompts, self.batch_size, self.seed = prompts, batch_size, seed
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            g = torch.Generator().manual_seed(derived_seed(self.seed, epoch, "prompt-order"))
            self._orders[epoch] = torch.randperm(len(self.prompts), generator=g).tolist()
        return self._orders[epoch]

    def batch(self, step: int) -> list[str]:
        n = len(self.prompts)
        picks = range(step * self.batch_size, (step + 1) * self.batch_size)
        return [self.prompts[self._order(k // n)[k % n]] for k in picks]


def sample_response_length(low: int, high: int, seed: int, step: int) -> int:
    """Maximum new tokens for this step, drawn uniformly from [max(low, 1), high] (the course lab's sampler)."""
    g = torch.Generator().manual_seed(derived_seed(seed, step, "length"))
    return int(torch.randint(max(low, 1), high + 1, (1,), generator=g))


# --------------------------------------------------------------------------------------------------
# Sampling


def sample_experience(policy: Policy, prompts: list[str], gen: GenerationConfig, max_new_tokens: int, seed: int,
                      recompute: bool, device: torch.device, chunk: int,
                      samples_per_prompt: int = 1) -> Experience:  # fmt: skip
    """Sample ``samples_per_prompt`` responses per prompt with dropout off, with their old log-probs (and values).

    By default these come from the sampling pass itself (its per-step logits and last hidden states), which in
    fp32 agree with a teacher-forced pass to ~1e-6. Under bf16 the cached incremental pass rounds differently
    (~4e-3 per token), so ``recompute`` runs the same teacher-forced pass the reference uses instead, in
    ``chunk``-row pieces: same chunks, same shapes, so before the first update KL(policy‖reference) is exactly
    0. For an encoder-decoder that pass takes the encoder output from the sampling pass (:class:`ChunkedEncoder`).
    The samples of one prompt sit next to each other and share a group id.
    """
    if samples_per_prompt < 1:
        raise RlhfkitError(f"samples_per_prompt must be >= 1, got {samples_per_prompt}.")
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    encoder = ChunkedEncoder(policy.model, chunk) if recompute and policy.is_encoder_decoder else None
    g = generate(policy.model, policy.tokenizer, repeated, gen, policy.is_encoder_decoder, do_sample=True,
                 max_new_tokens=max_new_tokens, seed=seed, collect=not recompute, encode=encoder)  # fmt: skip
    group_ids = torch.arange(len(prompts)).repeat_interleave(samples_per_prompt)
    if recompute:
        logprobs, values = teacher_forced_scores(policy, g.prompt_ids, g.prompt_mask, g.response_ids, g.response_mask,
                                                 gen.temperature, device, chunk, encoder)  # fmt: skip
    else:
        values = None
        if policy.value_head is not None:
            with torch.no_grad():
                values = policy.values_from_hidden(g.last_hidden.to(device)).float().cpu()
        logprobs = g.logprobs
    mask = g.response_mask
    return Experience(prompts=repeated, responses=g.texts, group_ids=group_ids, prompt_ids=g.prompt_ids,
                      prompt_mask=g.prompt_mask, response_ids=g.response_ids, mask=mask, ended=g.ended,
                      old_logprobs=logprobs * mask, values=None if values is None else values * mask)  # fmt: skip


class ChunkedEncoder:
    """The policy's encoder over a rollout's prompts, ``chunk`` rows at a time, each output kept for reuse.

    The teacher-forced pass behind bf16 old log-probs would run the encoder over the prompts again, though
    the sampling pass just did: on the FLAN-T5 shapes the encoder is ~60% of that pass's multiply-adds.
    Its output cannot simply be handed over, because bf16 matrix products round differently by shape (an
    encoder output computed with 7 more padding columns made the step-1 KL to the reference read -2.3e-4 on
    tiny-t5 instead of 0).
    So the sampling pass calls this instead of the encoder: it runs the encoder on exactly the tensors the
    teacher-forced pass would (the same rows, the same all-padding columns trimmed, see :func:`trim_padding`),
    and that pass takes the kept output (:meth:`lookup`), bit for bit what it would have computed itself.
    """

    def __init__(self, model: Any, chunk: int) -> None:
        self.model, self.chunk = model, chunk
        self.kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        """(ids, mask, encoder output) of each chunk, in the order they were encoded."""

    def __call__(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        """(B, P) prompts → (B, P, H) encoder output; columns trimmed from a chunk hold zeros (masked anyway)."""
        encoder = self.model.get_encoder()
        parts = []
        for i in range(0, prompt_ids.shape[0], self.chunk):
            rows = slice(i, i + self.chunk)
            ids, mask, keep = trim_padding(prompt_ids[rows], prompt_mask[rows])
            hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (b, p, H)
            self.kept.append((ids, mask, hidden))
            full = hidden.new_zeros(ids.shape[0], prompt_ids.shape[1], hidden.shape[-1])
            full[:, keep] = hidden
            parts.append(full)
        return torch.cat(parts)

    def lookup(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor | None:
        """The kept output for exactly these (b, p) prompts, or None (e.g. where generation ran in batches that
        do not split into the same chunks). Equal tensors in, equal shapes: the same products, the same bits."""
        for ids, mask, hidden in self.kept:
            if ids.shape == prompt_ids.shape and torch.equal(ids, prompt_ids) and torch.equal(mask, prompt_mask):
                return hidden
        return None


@torch.no_grad()
def teacher_forced_scores(policy: Policy, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                          response_ids: torch.Tensor, mask: torch.Tensor, temperature: float, device: torch.device,
                          chunk: int, encoder: ChunkedEncoder | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """(B, T) log-probs and (B, T) values (None without a value head) from teacher-forced passes, dropout off,
    ``chunk`` rows at a time (the reference's chunks and shapes)."""
    logprobs, values = [], []
    with evaluation_mode(policy):
        for i in range(0, prompt_ids.shape[0], chunk):
            p, pm, r = device_batch(prompt_ids, prompt_mask, response_ids, mask, slice(i, i + chunk), device)
            hidden = encoder.lookup(p, pm) if encoder is not None else None
            out = policy.score(p, pm, r, temperature, encoder_hidden=hidden)
            logprobs.append(out.logprobs.float().cpu())
            if out.values is not None:
                values.append(out.values.float().cpu())
    width = mask.shape[1]
    return cat_padded(logprobs, width), (cat_padded(values, width) if values else None)


# --------------------------------------------------------------------------------------------------
# Scoring and the reference


@dataclass(frozen=True)
class Scores:
    """Reward scores of a batch of responses."""

    values: torch.Tensor  # (B,) float32 scores
    nonfinite: int  # how many were NaN, ±inf or beyond float32's range (the step must then be skipped)


def score_responses(reward: Reward, experience: Experience) -> Scores:
    """The reward's scores (B,) through the reward protocol, as float32, with the unusable ones counted."""
    raw = reward(experience.prompts, experience.responses)
    nonfinite = check_scores(raw, len(experience), getattr(reward, "name", "reward"))  # incl. > float32 max
    return Scores(torch.tensor([float(s) for s in raw], dtype=torch.float32), int(sum(nonfinite)))


def reference_logprobs(policy: Policy, experience: Experience, temperature: float, device: torch.device,
                       chunk: int) -> torch.Tensor:  # fmt: skip
    """(B, T) log-probs of the responses under the frozen reference, ``chunk`` rows at a time, dropout off."""
    parts = []
    for i in range(0, len(experience), chunk):
        p, pm, r = device_batch(experience.prompt_ids, experience.prompt_mask, experience.response_ids,
                                experience.mask, slice(i, i + chunk), device)  # fmt: skip
        parts.append(policy.reference_logprobs(p, pm, r, temperature).float().cpu())
    return cat_padded(parts, experience.mask.shape[1]) * experience.mask


# --------------------------------------------------------------------------------------------------
# Batching helpers


def device_batch(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response_ids: torch.Tensor,
                 mask: torch.Tensor, idx: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Prompt ids/mask and response ids for rows ``idx``, with all-padding columns trimmed away, on ``device``."""
    p_ids, p_mask, _ = trim_padding(prompt_ids[idx], prompt_mask[idx])
    width = max(int(mask[idx].sum(1).max()), 1)
    return p_ids.to(device), p_mask.to(device), response_ids[idx][:, :width].to(device)


def trim_padding(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(b, P) prompts without the columns where no row has a real token, and the (P,) bool columns kept."""
    keep = prompt_mask.sum(0) > 0
    return prompt_ids[:, keep], prompt_mask[:, keep], keep


def cat_padded(parts: list[torch.Tensor], width: int) -> torch.Tensor:
    """Concatenate (b_i, T_i) row blocks, each padded with zeros on the right to ``width`` columns."""
    padded = [torch.cat([p, p.new_zeros(p.shape[0], width - p.shape[1])], 1) if p.shape[1] < width else p for p in parts]
    return torch.cat(padded)

