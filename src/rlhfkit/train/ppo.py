"""PPO with a KL penalty against a frozen reference (`rlhfkit ppo`).

One step is a pipeline of short, named stages (lm-human-preferences / OpenRLHF style):

    generate → score → reference log-probs → per-token rewards → advantages → update

* generate: sample responses with dropout off; the generation pass also yields the old log-probs and
  the value estimates (no second policy forward over the responses).
* score: the reward protocol, texts in, one float per response; NaN/inf (or beyond float32) skip the step
  and are counted.
* reference: log-probs under the frozen reference (RL adapter disabled, or a frozen copy).
* rewards: −β·KL on every response token, the score on the last real token (DESIGN detail 3).
* advantages: GAE, returns = advantages + values, advantages whitened over valid tokens (detail 6).
* update: ppo_epochs over reshuffled mini-batches, micro-batches accumulated, clipped policy and value
  losses, gradient clipping, optional early stop on approx-KL (detail 7). An update that leaves a weight or
  the gradient norm non-finite is rolled back and the step skipped and counted (rlhfkit.train.guard).

Randomness is derived from (seed, step, stage), so a resumed run draws exactly what an uninterrupted
run would have drawn; checkpoints add the trainable tensors, optimiser, scheduler and KL controller.

Under `accelerate launch` with N processes, the batch sizes stay global: each process generates, scores
and trains on its contiguous share of the step's prompts (batch_size / N, sampled with seed + rank);
advantage (and reward) whitening use the statistics of the whole batch; the losses are token sums over
the global token count of the mini-batch, so the all-reduced gradient equals one process's on the same
rollout; statistics are computed on the gathered batch; only the main process writes files.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhfkit.config import Config, PPOConfig, load_config, save_config
from rlhfkit.data.loading import load_dialogues
from rlhfkit.errors import RlhfkitError
from rlhfkit.io import write_json_atomic, write_text_atomic
from rlhfkit.models.lora import save_adapter
from rlhfkit.models.policy import PolicyWithValueHead, build_policy, evaluation_mode
from rlhfkit.ppo import (
    AdaptiveKLController,
    FixedKLController,
    approx_kl_k3,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae_advantages,
    kl_estimate,
    masked_mean,
    masked_whiten,
    no_eos_penalty,
    per_token_rewards,
    sequence_kl,
)
from rlhfkit.rewards.base import check_scores
from rlhfkit.rollout.generation import check_prompts, generate
from rlhfkit.train.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from rlhfkit.train.distributed import (
    all_reduce_sum,
    check_split,
    clip_gradients,
    full_parameters,
    gather_objects,
    gather_rows,
    is_sharded,
    set_deepspeed_micro_batch,
    shard_bounds,
)
from rlhfkit.train.guard import UpdateSnapshot, update_diverged
from rlhfkit.train.metrics import MetricsWriter, read_metrics
from rlhfkit.train.progress import StepProgress
from rlhfkit.train.runtime import make_accelerator, quiet_libraries

# Settings that may change between a run and its resumption without changing what was computed so far.
RESUMABLE_CHANGES = {"ppo.steps", "ppo.save_every", "ppo.keep_checkpoints", "ppo.sample_every", "ppo.tensorboard"}


@dataclass
class Rollout:
    """One batch of experience. B = responses, P = prompt tokens, T = response tokens."""

    prompts: list[str]
    responses: list[str]
    prompt_ids: torch.Tensor  # (B, P) left-padded for decoder-only, right-padded for encoder-decoders
    prompt_mask: torch.Tensor  # (B, P) 1 for real prompt tokens
    response_ids: torch.Tensor  # (B, T) pad after the first EOS
    mask: torch.Tensor  # (B, T) 1.0 up to and including the first EOS
    ended: torch.Tensor  # (B,) bool, produced EOS
    old_logprobs: torch.Tensor  # (B, T) log π_old(a_t|s_t), temperature-corrected
    values: torch.Tensor  # (B, T) V_old(s_t)
    ref_logprobs: torch.Tensor | None = None  # (B, T) log π_ref(a_t|s_t)
    scores: torch.Tensor | None = None  # (B,) reward-model scores (after the no-EOS penalty)
    kl: torch.Tensor | None = None  # (B, T) per-token KL estimate used in the reward
    rewards: torch.Tensor | None = None  # (B, T) per-token rewards
    advantages: torch.Tensor | None = None  # (B, T) whitened GAE advantages
    returns: torch.Tensor | None = None  # (B, T) advantages (before whitening) + values


@dataclass
class PPOResult:
    output_dir: Path
    adapter_dir: Path
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    """The statistics of every step run in this call."""
    skipped_steps: int = 0


def derived_seed(seed: int, step: int, stage: str) -> int:
    """A seed for one stage of one step, independent of everything that ran before it."""
    digest = hashlib.sha256(f"{seed}:{step}:{stage}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# --------------------------------------------------------------------------------------------------
# Prompts: a reshuffled pass over the training prompts per epoch, addressable by step


class PromptStream:
    """Step ``i`` gets prompts ``i*B .. (i+1)*B-1`` of an endless sequence of seeded epoch permutations."""

    def __init__(self, prompts: list[str], batch_size: int, seed: int) -> None:
        if not prompts:
            raise RlhfkitError("there are no training prompts for PPO; check data.source and the length filter.")
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


# --------------------------------------------------------------------------------------------------
# The stages


def sample_response_length(ppo: PPOConfig, cfg: Config, seed: int, step: int) -> int:
    """Maximum new tokens for this step, drawn uniformly from [min_new_tokens, max_new_tokens] (the lab's sampler)."""
    lo = cfg.generation.min_new_tokens if ppo.min_new_tokens is None else ppo.min_new_tokens
    hi = cfg.generation.max_new_tokens if ppo.max_new_tokens is None else ppo.max_new_tokens
    lo = max(lo, 1)
    g = torch.Generator().manual_seed(derived_seed(seed, step, "length"))
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def generate_rollout(policy: PolicyWithValueHead, prompts: list[str], cfg: Config, max_new_tokens: int, seed: int,
                     recompute: bool, device: torch.device) -> Rollout:  # fmt: skip
    """Stage 1: sample responses with dropout off, with their old log-probs and values.

    By default these come from the sampling pass itself (its per-step logits and last hidden states), which
    in fp32 agree with a teacher-forced pass to ~1e-6. Under bf16 the cached incremental pass rounds
    differently (~4e-3 per token), so ``recompute`` runs the same teacher-forced pass the reference uses
    instead: same chunks, same shapes, so before the first update KL(policy‖reference) is exactly 0. For an
    encoder-decoder that pass takes the encoder output from the sampling pass (see :class:`ChunkedEncoder`).
    """
    chunk = max(cfg.ppo.mini_batch_size * len(prompts) // cfg.ppo.batch_size, 1)  # a process's share of a mini-batch
    encoder = ChunkedEncoder(policy.model, chunk) if recompute and policy.is_encoder_decoder else None
    g = generate(policy.model, policy.tokenizer, prompts, cfg.generation, policy.is_encoder_decoder,
                 do_sample=True, max_new_tokens=max_new_tokens, seed=seed, collect=not recompute,
                 encode=encoder)  # fmt: skip
    rollout = Rollout(prompts=list(prompts), responses=g.texts, prompt_ids=g.prompt_ids, prompt_mask=g.prompt_mask,
                      response_ids=g.response_ids, mask=g.response_mask, ended=g.ended,
                      old_logprobs=torch.zeros_like(g.response_mask), values=torch.zeros_like(g.response_mask))  # fmt: skip
    if recompute:
        logprobs, values = _teacher_forced_old(policy, rollout, cfg.generation.temperature, device, chunk, encoder)
    else:
        with torch.no_grad():
            values = policy.values_from_hidden(g.last_hidden.to(device)).float().cpu()
        logprobs = g.logprobs
    rollout.old_logprobs, rollout.values = logprobs * rollout.mask, values * rollout.mask
    return rollout


class ChunkedEncoder:
    """The policy's encoder over a rollout's prompts, ``chunk`` rows at a time, each output kept for reuse.

    The teacher-forced pass behind bf16 old log-probs would run the encoder over the prompts again, though
    the sampling pass just did: on the FLAN-T5 shapes the encoder is ~60% of that pass's multiply-adds.
    Its output cannot simply be handed over, because bf16 matrix products round differently by shape (an
    encoder output computed with 7 more padding columns made the step-1 KL to the reference read -2.3e-4 on
    tiny-t5 instead of 0).
    So the sampling pass calls this instead of the encoder: it runs the encoder on exactly the tensors the
    teacher-forced pass would (the same rows, the same all-padding columns trimmed, see :func:`_trim_padding`),
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
            ids, mask, keep = _trim_padding(prompt_ids[rows], prompt_mask[rows])
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
def _teacher_forced_old(policy: PolicyWithValueHead, rollout: Rollout, temperature: float, device: torch.device,
                        chunk: int, encoder: ChunkedEncoder | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    logprobs, values = [], []
    with evaluation_mode(policy):
        for i in range(0, len(rollout.prompts), chunk):
            p, pm, r = _device_batch(rollout, slice(i, i + chunk), device)
            hidden = encoder.lookup(p, pm) if encoder is not None else None
            out = policy.score(p, pm, r, temperature, encoder_hidden=hidden)
            logprobs.append(out.logprobs.float().cpu())
            values.append(out.values.float().cpu())
    width = rollout.mask.shape[1]
    return _cat_padded(logprobs, width), _cat_padded(values, width)


def score_rollout(reward: Any, rollout: Rollout, ppo: PPOConfig) -> int:
    """Stage 2: reward scores (B,), the no-EOS penalty applied; returns the number of non-finite scores."""
    raw = reward(rollout.prompts, rollout.responses)
    nonfinite = check_scores(raw, len(rollout.responses), getattr(reward, "name", "reward"))  # incl. > float32 max
    scores = torch.tensor([float(s) for s in raw], dtype=torch.float32)
    if ppo.no_eos_penalty is not None:
        scores = no_eos_penalty(scores, rollout.ended, ppo.no_eos_penalty)
    rollout.scores = scores
    return int(sum(nonfinite))


def add_reference_logprobs(policy: PolicyWithValueHead, rollout: Rollout, temperature: float, device: torch.device,
                           chunk: int) -> None:  # fmt: skip
    """Stage 3: log-probs of the responses under the frozen reference, in chunks, dropout off."""
    parts = []
    for i in range(0, len(rollout.prompts), chunk):
        p, pm, r = _device_batch(rollout, slice(i, i + chunk), device)
        parts.append(policy.reference_logprobs(p, pm, r, temperature).float().cpu())
    rollout.ref_logprobs = _cat_padded(parts, rollout.mask.shape[1]) * rollout.mask


def add_rewards(rollout: Rollout, ppo: PPOConfig, beta: float, reduce_sum: Callable | None = None) -> None:
    """Stage 4: per-token rewards = −β·KL(policy‖reference) on every token + score on the last token.

    ``reduce_sum`` (sum over processes) makes reward whitening use the whole batch's statistics.
    """
    rollout.kl = kl_estimate(rollout.old_logprobs, rollout.ref_logprobs, ppo.kl_estimator) * rollout.mask
    rewards = per_token_rewards(rollout.scores, rollout.kl, rollout.mask, beta)
    if ppo.whiten_rewards:
        rewards = masked_whiten(rewards, rollout.mask, shift_mean=False, reduce_sum=reduce_sum)
    rollout.rewards = rewards


def add_advantages(rollout: Rollout, ppo: PPOConfig, reduce_sum: Callable | None = None) -> None:
    """Stage 5: GAE advantages and returns; advantages whitened over the valid tokens of the whole batch."""
    advantages, returns = gae_advantages(rollout.rewards, rollout.values, rollout.mask, ppo.gamma, ppo.lam)
    rollout.returns = returns
    rollout.advantages = masked_whiten(advantages, rollout.mask, reduce_sum=reduce_sum)


def update_policy(policy: PolicyWithValueHead, model: Any, optimizer: Any, scheduler: Any, accelerator: Any,
                  rollout: Rollout, cfg: Config, seed: int) -> dict[str, float]:  # fmt: skip
    """Stage 6: ppo_epochs over reshuffled mini-batches with micro-batch accumulation; returns statistics.

    ``rollout`` holds this process's rows; each mini-batch takes mini_batch_size / N of them on each of the
    N processes, and micro-batches of micro_batch_size / N are accumulated through Accelerate. The loss is
    a token sum divided by the mini-batch's token count over all processes (a token mean of the whole
    mini-batch), so neither the micro-batch size nor the number of processes changes the gradient.
    """
    ppo, temperature, device = cfg.ppo, cfg.generation.temperature, accelerator.device
    P = accelerator.num_processes
    mini_size, micro_size = ppo.mini_batch_size // P, ppo.micro_batch_size // P
    accumulation = ppo.mini_batch_size // ppo.micro_batch_size  # micro-batches per optimiser step
    B = len(rollout.prompts)
    shuffle = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # LoRA dropout during the update draws from the global stream
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}

    def add(name: str, value: float) -> None:
        sums[name] = sums.get(name, 0.0) + value
        counts[name] = counts.get(name, 0) + 1

    trainable = [p for p in model.parameters() if p.requires_grad]
    epochs_done, stopped_early = 0, False
    # Dropout off by default (TRL's PPOTrainer and torchtune's PPO recipe disable it too): the first
    # mini-batch then sees exactly the rollout's policy (ratio 1), and no dropout masks are drawn.
    model.train(ppo.update_dropout)
    for _ in range(ppo.ppo_epochs):
        order = torch.randperm(B, generator=shuffle)
        for start in range(0, B, mini_size):
            mini = order[start : start + mini_size]
            tokens = float(all_reduce_sum(accelerator, [float(rollout.mask[mini].sum())])[0])
            # accelerator.backward divides by the accumulation count and DDP averages over P processes
            scale = accumulation * P / max(tokens, 1.0)
            token_sums: dict[str, float] = {}  # statistic × tokens, summed over this process's micro-batches
            for m in range(0, len(mini), micro_size):
                idx = mini[m : m + micro_size]
                with accelerator.accumulate(model):
                    stats, n_tokens = _micro_step(model, accelerator, rollout, idx, ppo, temperature, device, scale)
                    if accelerator.sync_gradients:  # the mini-batch's last micro-batch: gradients are complete
                        add("policy/grad_norm", clip_gradients(accelerator, trainable, ppo.max_grad_norm))
                    optimizer.step()  # Accelerate skips it until the gradients are complete
                    optimizer.zero_grad(set_to_none=True)
                for k, v in stats.items():
                    token_sums[k] = token_sums.get(k, 0.0) + v * n_tokens
            scheduler.step()
            # token means over the whole mini-batch, like the loss: the same on every process, and the same
            # however the mini-batch is cut into micro-batches or shared between processes
            names = sorted(token_sums)
            summed = all_reduce_sum(accelerator, [token_sums[k] for k in names]).tolist()
            mini_stats = {k: v / max(tokens, 1.0) for k, v in zip(names, summed)}
            for k, v in mini_stats.items():
                add(k, v)
            # the same decision on every process (they must run the same number of updates)
            mb_kl = mini_stats["policy/approx_kl"]
            if ppo.target_approx_kl is not None and mb_kl > ppo.target_approx_kl:
                stopped_early = True  # the policy moved too far from the rollout policy: stop this step's updates
                break
        epochs_done += 1
        if stopped_early:
            break
    out = {k: sums[k] / counts[k] for k in sums}  # means over the mini-batches: already the same everywhere
    out["ppo/epochs"] = float(epochs_done)
    out["ppo/early_stopped"] = float(stopped_early)
    return out


def _micro_step(model: Any, accelerator: Any, rollout: Rollout, idx: torch.Tensor, ppo: PPOConfig,
                temperature: float, device: torch.device, scale: float) -> tuple[dict[str, float], float]:  # fmt: skip
    """Forward + backward of one micro-batch through the (possibly DDP-wrapped) policy ``model``.

    The loss is the micro-batch's token mean times its token count times ``scale``: its share of the
    mini-batch's global token mean. Returns the statistics (token means over the micro-batch) and its token count.
    """
    prompt_ids, prompt_mask, response_ids = _device_batch(rollout, idx, device)
    width = response_ids.shape[1]
    mask = rollout.mask[idx][:, :width].to(device)
    old_logprobs = rollout.old_logprobs[idx][:, :width].to(device)
    old_values = rollout.values[idx][:, :width].to(device)
    advantages = rollout.advantages[idx][:, :width].to(device)
    returns = rollout.returns[idx][:, :width].to(device)
    with accelerator.autocast():
        # the entropy needs a gradient only for an entropy bonus; otherwise it is a statistic
        out = model(prompt_ids, prompt_mask, response_ids, temperature, with_entropy=True,
                    entropy_grad=ppo.entropy_coef > 0)  # fmt: skip
    logprobs, values = out.logprobs.float(), out.values.float()
    pg_loss, pg_clip = clipped_policy_loss(logprobs, old_logprobs, advantages, mask, ppo.clip_eps)
    vf_loss, vf_clip = clipped_value_loss(values, old_values, returns, mask, ppo.value_clip)
    entropy = masked_mean(out.entropy.float(), mask)
    loss = pg_loss + ppo.vf_coef * vf_loss - ppo.entropy_coef * entropy
    n_tokens = float(mask.sum())
    accelerator.backward(loss * (n_tokens * scale))
    stats = {
        "policy/loss": float(pg_loss.detach()),
        "policy/clipfrac": float(pg_clip),
        "policy/approx_kl": float(approx_kl_k3(logprobs.detach(), old_logprobs, mask)),
        "policy/entropy": float(entropy.detach()),
        "value/loss": float(vf_loss.detach()),
        "value/clipfrac": float(vf_clip),
    }
    return stats, n_tokens


def _device_batch(rollout: Rollout, idx: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompt ids/mask and response ids for rows ``idx``, with all-padding columns trimmed away."""
    prompt_ids, prompt_mask, _ = _trim_padding(rollout.prompt_ids[idx], rollout.prompt_mask[idx])
    width = max(int(rollout.mask[idx].sum(1).max()), 1)
    response_ids = rollout.response_ids[idx][:, :width]
    return prompt_ids.to(device), prompt_mask.to(device), response_ids.to(device)


def _trim_padding(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(b, P) prompts without the columns where no row has a real token, and the (P,) bool columns kept."""
    keep = prompt_mask.sum(0) > 0
    return prompt_ids[:, keep], prompt_mask[:, keep], keep


def _cat_padded(parts: list[torch.Tensor], width: int) -> torch.Tensor:
    padded = [torch.cat([p, p.new_zeros(p.shape[0], width - p.shape[1])], 1) if p.shape[1] < width else p for p in parts]
    return torch.cat(padded)


def gathered(accelerator: Any, rollout: Rollout) -> Rollout:
    """The step's whole batch (every process's rows, in process order) for statistics; texts are left out."""
    if accelerator.num_processes == 1:
        return rollout

    def rows(t: torch.Tensor) -> torch.Tensor:
        return gather_rows(accelerator, t)

    return Rollout(prompts=[], responses=[], prompt_ids=rollout.prompt_ids[:0], prompt_mask=rollout.prompt_mask[:0],
                   response_ids=rollout.response_ids[:0], mask=rows(rollout.mask),
                   ended=gather_rows(accelerator, rollout.ended.long()).bool(), old_logprobs=rows(rollout.old_logprobs),
                   values=rows(rollout.values), ref_logprobs=rows(rollout.ref_logprobs), scores=rows(rollout.scores),
                   rewards=rows(rollout.rewards), returns=rows(rollout.returns))  # fmt: skip


def rollout_statistics(rollout: Rollout, beta: float) -> dict[str, float]:
    """Statistics that describe the batch of experience itself (before the update)."""
    mask = rollout.mask
    k1 = sequence_kl(kl_estimate(rollout.old_logprobs, rollout.ref_logprobs, "k1") * mask, mask)
    k3 = sequence_kl(kl_estimate(rollout.old_logprobs, rollout.ref_logprobs, "k3") * mask, mask)
    lengths = mask.sum(1)
    return {
        "score/mean": float(rollout.scores.mean()),
        "score/std": float(rollout.scores.std()) if len(rollout.scores) > 1 else 0.0,
        "kl/k1": float(k1.mean()),
        "kl/k3": float(k3.mean()),
        "kl/beta": beta,
        "reward/total_mean": float((rollout.rewards * mask).sum(1).mean()),
        "value/explained_variance": float(explained_variance(rollout.values, rollout.returns, mask)),
        "value/mean": float(masked_mean(rollout.values, mask)),
        "response/length_mean": float(lengths.mean()),
        "response/ended_fraction": float(rollout.ended.float().mean()),
    }


# --------------------------------------------------------------------------------------------------
# The run


def _make_controller(ppo: PPOConfig) -> FixedKLController | AdaptiveKLController:
    if ppo.adaptive_kl:
        return AdaptiveKLController(ppo.kl_coef, ppo.kl_target, ppo.kl_horizon)
    return FixedKLController(ppo.kl_coef)


def _check_resumable(cfg: Config, out: Path) -> None:
    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        raise RlhfkitError(f"cannot resume: {str(out)!r} has no config.yaml, so it is not a PPO run folder.")
    saved = load_config([saved_path])
    diffs = _differences(saved, cfg) - RESUMABLE_CHANGES - {"run.output_dir"}
    if diffs:
        raise RlhfkitError(
            f"cannot resume {str(out)!r}: the configuration differs from the run's in {sorted(diffs)}. Resume with "
            f"the same settings (only {sorted(RESUMABLE_CHANGES)} may change), or start a new run in another folder."
        )


def _differences(a: Any, b: Any, prefix: str = "") -> set[str]:
    import dataclasses

    if dataclasses.is_dataclass(a):
        out: set[str] = set()
        for f in dataclasses.fields(a):
            out |= _differences(getattr(a, f.name), getattr(b, f.name), f"{prefix}{f.name}.")
        return out
    return set() if a == b else {prefix.rstrip(".")}


def _build_reward(cfg: Config) -> Any:
    from rlhfkit.rewards.factory import build_reward

    if not cfg.reward.rewards:
        raise RlhfkitError(
            "PPO needs a reward: add a reward.rewards list to the config, e.g. "
            "reward: {rewards: [{kind: reward_model, path: runs/rm}]} or {kind: classifier, path: ..., label: nothate}, "
            "or pass a reward object to run_ppo() from Python."
        )
    return build_reward(cfg.reward)


def run_ppo(cfg: Config, reward: Any = None, resume: bool = False, progress: bool = True,
            on_step: Callable[[dict[str, Any]], None] | None = None) -> PPOResult:  # fmt: skip
    """Run PPO as configured; ``reward`` overrides the configured one (any callable of the reward protocol)."""
    quiet_libraries()
    ppo = cfg.ppo
    out = Path(cfg.run.output_dir)
    if resume:
        _check_resumable(cfg, out)
    elif list_checkpoints(out):
        raise RlhfkitError(f"{str(out)!r} already holds a PPO run with checkpoints; pass --resume to continue it, "
                           "or choose another output folder.")  # fmt: skip
    accelerator = make_accelerator(cfg.run, ppo.mini_batch_size // ppo.micro_batch_size,
                                   log_with="tensorboard" if ppo.tensorboard else None, project_dir=out)  # fmt: skip
    main, P = accelerator.is_main_process, accelerator.num_processes
    check_split(P, {"ppo.batch_size": ppo.batch_size, "ppo.mini_batch_size": ppo.mini_batch_size,
                    "ppo.micro_batch_size": ppo.micro_batch_size},
                hint=" (ppo.batch_size, mini_batch_size and micro_batch_size are all global.)")  # fmt: skip
    if is_sharded(accelerator) and (ppo.save_every or resume):
        raise RlhfkitError(
            "PPO checkpoints and --resume are not supported under DeepSpeed or FSDP yet (their optimiser states are "
            "split across processes); set ppo.save_every=0 and run without --resume, or use data parallelism "
            "(configs/accelerate/multi-gpu.yaml), which LoRA-sized trainable weights fit easily."
        )
    # the first process of each machine loads first: it builds a missing preset into the shared cache, which
    # several processes building at once would race on
    with accelerator.local_main_process_first():
        reward = reward if reward is not None else _build_reward(cfg)
        data = load_dialogues(cfg.data)
        policy = build_policy(cfg.model, cfg.lora, reference=ppo.reference, sft_adapter=ppo.sft_adapter)
    prompts = list(data.train["prompt"])
    check_prompts(policy.tokenizer, prompts, cfg.generation.max_prompt_tokens)
    policy.to(accelerator.device)
    if ppo.bf16_frozen_weights and accelerator.mixed_precision == "bf16" and P == 1 and not is_sharded(accelerator):
        # one process only: DDP broadcasts every parameter at start-up, and gloo's bf16 support is not tested here
        policy.store_frozen_weights_in(torch.bfloat16, embeddings=ppo.bf16_frozen_embeddings)
    set_deepspeed_micro_batch(accelerator, ppo.micro_batch_size // P)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=ppo.learning_rate, weight_decay=ppo.weight_decay)
    updates_per_step = ppo.ppo_epochs * (ppo.batch_size // ppo.mini_batch_size)
    from transformers import get_scheduler

    scheduler = get_scheduler(ppo.lr_schedule, optimizer, num_warmup_steps=ppo.warmup_steps,
                              num_training_steps=ppo.steps * updates_per_step)  # fmt: skip
    model, optimizer = accelerator.prepare(policy, optimizer)
    controller = _make_controller(ppo)
    stream = PromptStream(prompts, ppo.batch_size, cfg.run.seed)
    start_step, skipped = 0, 0
    metrics = MetricsWriter(out / "metrics.jsonl", enabled=main)
    if resume:
        start_step, skipped = _restore(out, policy, optimizer, scheduler, controller, metrics, reward, accelerator)
    elif main:
        save_config(cfg, out)
        metrics.path.unlink(missing_ok=True)
    if ppo.tensorboard and main:
        accelerator.init_trackers("tensorboard")
    history: list[dict[str, Any]] = []
    bar = StepProgress("ppo", ppo.steps, enabled=progress and main)
    bar_started = start_step
    with bar:
        bar.advance(bar_started)
        for step in range(start_step, ppo.steps):
            stats = ppo_step(policy, model, optimizer, scheduler, accelerator, controller, reward, stream, cfg, step)
            if stats.get("skipped"):
                skipped += 1
                why = (f"{stats['score/nonfinite']:.0f} reward score(s) NaN, inf or beyond float32's range"
                       if stats["score/nonfinite"] else "the update made the weights or gradient norm NaN or inf, "
                       "so it was rolled back")  # fmt: skip
                warnings.warn(f"PPO step {step + 1}: {why}; the step was skipped ({skipped} so far).", stacklevel=1)
            stats["skipped_steps"] = skipped
            history.append(stats)
            if main and ((step + 1) % ppo.log_every == 0 or step + 1 == ppo.steps):
                metrics.write({k: v for k, v in stats.items() if k != "samples"})
                if ppo.tensorboard:
                    accelerator.log({k: v for k, v in stats.items() if isinstance(v, (int, float))}, step=step + 1)
            if main and ppo.sample_every and (step + 1) % ppo.sample_every == 0 and "samples" in stats:
                _show_samples(stats["samples"], step + 1, out, progress)
            if on_step:
                on_step(stats)
            bar.advance(score=stats.get("score/mean", float("nan")), kl=stats.get("kl/k1", float("nan")))
            if ppo.save_every and (step + 1) % ppo.save_every == 0 and step + 1 < ppo.steps:
                _save(out, step + 1, policy, optimizer, scheduler, controller, skipped, ppo.keep_checkpoints, reward,
                      accelerator)  # fmt: skip
    if not is_sharded(accelerator):
        _save(out, ppo.steps, policy, optimizer, scheduler, controller, skipped, ppo.keep_checkpoints, reward,
              accelerator)  # fmt: skip
    # a collective call: under ZeRO-3 / FSDP it gathers the sharded weights (every process must make it)
    full_state = accelerator.get_state_dict(model) if is_sharded(accelerator) else None
    if main:
        _save_final(out, policy, ppo.sft_adapter, full_state)
    if ppo.tensorboard and main:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return PPOResult(out, out / "adapter", ppo.steps, history, skipped)


def ppo_step(policy: PolicyWithValueHead, model: Any, optimizer: Any, scheduler: Any, accelerator: Any,
             controller: Any, reward: Any, stream: PromptStream, cfg: Config, step: int) -> dict[str, Any]:  # fmt: skip
    """One PPO step: generate → score → reference → rewards → advantages → update."""
    ppo, seed = cfg.ppo, cfg.run.seed
    P, rank = accelerator.num_processes, accelerator.process_index
    rank_seed = seed + rank  # each process samples and shuffles with its own stream (DESIGN, PPO detail 9)
    reduce_sum = (lambda t: all_reduce_sum(accelerator, t)) if P > 1 else None
    timings: dict[str, float] = {}

    sync = torch.cuda.synchronize if accelerator.device.type == "cuda" else (lambda: None)

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        result = fn()
        sync()  # CUDA kernels run asynchronously: without this a stage's time would land on the next one
        timings[f"time/{name}"] = time.perf_counter() - t0
        return result

    everyone = stream.batch(step)
    lo, hi = shard_bounds(len(everyone), rank, P)
    prompts = everyone[lo:hi]  # this process's contiguous share of the step's global batch
    max_new = sample_response_length(ppo, cfg, seed, step)  # the same on every process
    recompute = ppo.rollout_logprobs == "recompute" or (
        ppo.rollout_logprobs == "auto" and accelerator.mixed_precision != "no"
    )
    chunk = ppo.mini_batch_size // P
    with accelerator.autocast(), full_parameters(accelerator, model):
        generate_seed = derived_seed(rank_seed, step, "generate")
        rollout = timed("generate", lambda: generate_rollout(policy, prompts, cfg, max_new, generate_seed, recompute,
                                                             accelerator.device))  # fmt: skip
    nonfinite = timed("score", lambda: score_rollout(reward, rollout, ppo))
    nonfinite = int(all_reduce_sum(accelerator, [nonfinite])[0])  # every process skips, or none does
    beta = float(controller.value)
    if nonfinite:
        return {"step": step + 1, "skipped": True, "score/nonfinite": float(nonfinite), "kl/beta": beta, **timings}
    with accelerator.autocast(), evaluation_mode(policy), full_parameters(accelerator, model):
        timed("reference", lambda: add_reference_logprobs(policy, rollout, cfg.generation.temperature,
                                                          accelerator.device, chunk))  # fmt: skip

    def rewards_and_advantages() -> None:
        add_rewards(rollout, ppo, beta, reduce_sum)
        add_advantages(rollout, ppo, reduce_sum)

    timed("advantages", rewards_and_advantages)
    trainable = [p for p in model.parameters() if p.requires_grad]
    # sharded parameters cannot be copied whole on one process; the checkpoint's own check still applies there
    snapshot = None if is_sharded(accelerator) else UpdateSnapshot.capture(trainable, optimizer, scheduler)
    update = timed("update", lambda: update_policy(policy, model, optimizer, scheduler, accelerator, rollout, cfg,
                                                   derived_seed(rank_seed, step, "update")))  # fmt: skip
    if snapshot is not None and update_diverged(trainable, [update.get("policy/grad_norm", 0.0)], reduce_sum):
        snapshot.restore(optimizer, scheduler)  # as if the update had never run; β is not adapted either
        return {"step": step + 1, "skipped": True, "score/nonfinite": 0.0, "update/nonfinite": 1.0, "kl/beta": beta,
                **timings}  # fmt: skip
    # statistics of the whole batch (every process's rows), so every process logs and adapts β alike
    stats = {"step": step + 1, **rollout_statistics(gathered(accelerator, rollout), beta), **update,
             "lr": scheduler.get_last_lr()[0], "score/nonfinite": 0.0, **timings}  # fmt: skip
    stats["time/step"] = sum(timings.values())
    controller.update(stats["kl/k1"], n_steps=len(everyone))
    stats["samples"] = [
        {"prompt": p, "response": r, "score": float(s)}
        for p, r, s in zip(rollout.prompts[:4], rollout.responses[:4], rollout.scores[:4])
    ]
    return stats


# --------------------------------------------------------------------------------------------------
# Saving and restoring


def _save(out: Path, step: int, policy: PolicyWithValueHead, optimizer: Any, scheduler: Any, controller: Any,
          skipped: int, keep: int, reward: Any, accelerator: Any) -> None:  # fmt: skip
    """Checkpoint ``step``. Every process calls it (it gathers each one's RNG and reward state); the main one writes."""
    from rlhfkit.rewards.transforms import running_normalizers

    # a reward normalised by running statistics carries state too; without it a resume would score differently.
    # Each process keeps its own (it sees its share of the scores), so each process's state is saved.
    own = {"rng": rng_state(), "reward_normalizers": [n.state_dict() for n in running_normalizers(reward)]}
    per_process = gather_objects(accelerator, [own])
    if accelerator.is_main_process:
        state = {"skipped_steps": skipped, "controller": controller.state_dict(), "processes": len(per_process),
                 "reward_normalizers": own["reward_normalizers"]}  # fmt: skip
        save_checkpoint(out, step, policy.trainable_state(), optimizer, scheduler, state, keep, per_process)
    accelerator.wait_for_everyone()


def _restore(out: Path, policy: PolicyWithValueHead, optimizer: Any, scheduler: Any, controller: Any,
             metrics: MetricsWriter, reward: Any, accelerator: Any) -> tuple[int, int]:  # fmt: skip
    from rlhfkit.rewards.transforms import running_normalizers

    found = list_checkpoints(out)
    if not found:
        raise RlhfkitError(f"cannot resume: {str(out)!r} has no finished checkpoint yet; start the run again "
                           "without --resume.")  # fmt: skip
    trainable, training, state = load_checkpoint(found[-1])
    policy.load_trainable_state(trainable)
    optimizer.load_state_dict(training["optimizer"])
    scheduler.load_state_dict(training["scheduler"])
    controller.load_state_dict(state["controller"])
    rank, P = accelerator.process_index, accelerator.num_processes
    # a checkpoint of one process (or one written before multi-process runs) has no per-process list
    per_process = training.get("per_process") or [
        {"rng": training["rng"], "reward_normalizers": state.get("reward_normalizers", [])}
    ]
    if len(per_process) != P:
        warnings.warn(f"the checkpoint was written by {len(per_process)} process(es) and the run resumes with {P}: "
                      "training continues from it, but the steps after it will not repeat the uninterrupted run "
                      "exactly (each process's share of the prompts and random streams change).", stacklevel=2)  # fmt: skip
    own = per_process[rank] if rank < len(per_process) else None
    normalizers, saved = running_normalizers(reward), (own or per_process[0])["reward_normalizers"]
    if len(normalizers) != len(saved):
        raise RlhfkitError(f"cannot resume: the checkpoint holds {len(saved)} running reward normaliser(s), the "
                           f"configured reward has {len(normalizers)}; resume with the run's reward.")  # fmt: skip
    for normalizer, normalizer_state in zip(normalizers, saved):
        normalizer.load_state_dict(normalizer_state)
    if own is not None:
        set_rng_state(own["rng"])
    step = int(state["step"])
    if metrics.enabled and metrics.path.is_file():  # the steps after the checkpoint are run again: drop their lines
        kept = [r for r in read_metrics(metrics.path) if r.get("step", 0) <= step]
        write_text_atomic(metrics.path, "".join(json.dumps(r) + "\n" for r in kept))
    accelerator.wait_for_everyone()  # no process runs ahead while the main one rewrites the metrics
    return step, int(state.get("skipped_steps", 0))


def _save_final(out: Path, policy: PolicyWithValueHead, sft_adapter: str | None,
                full_state: dict[str, torch.Tensor] | None = None) -> None:  # fmt: skip
    """The adapter and value head; ``full_state`` is the policy's gathered state dict under ZeRO-3 / FSDP."""
    from safetensors.torch import save_file

    # the RL adapter sits on the SFT adapter merged into the base: record it, so loaders rebuild that stack
    meta = {"trained_by": "rlhfkit ppo", "sft_adapter": str(Path(sft_adapter).resolve()) if sft_adapter else None}
    model_state = value_state = None
    if full_state is not None:
        model_state = {k[len("model.") :]: v for k, v in full_state.items() if k.startswith("model.")}
        value_state = {k[len("value_head.") :]: v for k, v in full_state.items() if k.startswith("value_head.")}
    save_adapter(policy.model, policy.tokenizer, out / "adapter", policy.source, meta, state_dict=model_state)
    value_state = value_state if value_state is not None else policy.value_head.state_dict()
    save_file({k: v.contiguous() for k, v in value_state.items()}, str(out / "value_head.safetensors"))
    write_json_atomic(out / "final.json", {"adapter": str(out / "adapter"), "value_head": str(out / "value_head.safetensors")})


def _show_samples(samples: list[dict[str, Any]], step: int, out: Path, progress: bool) -> None:
    with open(out / "samples.jsonl", "a", encoding="utf-8") as f:
        f.writelines(json.dumps({"step": step, **s}) + "\n" for s in samples)
    if not progress:
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"samples at step {step}", show_lines=True)
    table.add_column("prompt (end)", ratio=2)
    table.add_column("response", ratio=2)
    table.add_column("score", justify="right")
    for s in samples:
        table.add_row("…" + s["prompt"][-120:], s["response"], f"{s['score']:.3f}")
    Console(stderr=True).print(table)

