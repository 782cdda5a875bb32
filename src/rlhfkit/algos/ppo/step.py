"""One PPO step as a pipeline of named stages, each a short function that returns what it computed:

    sample → score → reference → rewards → advantages → update → statistics

* sample: responses with dropout off; the sampling pass also yields the old log-probs and the values
  (no second policy forward over the responses) — :func:`rlhfkit.rollout.experience.sample_experience`.
* score: the reward protocol, texts in, one float per response; NaN, inf or a number beyond float32's range
  skip the step, which is counted.
* reference: log-probs under the frozen reference (RL adapter disabled, or a frozen copy).
* rewards: −β·KL on every response token, the score on the last real token (docs/ppo.md, detail 3).
* advantages: GAE, returns = advantages + values, advantages whitened over valid tokens (detail 6).
* update: ppo_epochs over reshuffled mini-batches, micro-batches accumulated, clipped policy and value
  losses, gradient clipping, optional early stop on approx-KL (detail 7). An update that leaves a weight or
  the gradient norm non-finite is rolled back and the step skipped and counted (rlhfkit.engine.guard).

Under `accelerate launch` with N processes, the batch sizes stay global: each process samples, scores and
trains on its contiguous share of the step's prompts (batch_size / N, sampled with seed + rank); advantage
(and reward) whitening use the statistics of the whole batch; the losses are token sums over the global
token count of the mini-batch, so the all-reduced gradient equals one process's on the same rollout;
statistics are computed on the gathered batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from rlhfkit.algos.ppo.advantages import gae_advantages, no_eos_penalty, per_token_rewards
from rlhfkit.algos.ppo.losses import clipped_policy_loss, clipped_value_loss
from rlhfkit.config import GenerationConfig, PPOConfig
from rlhfkit.core.kl import approx_kl_k3, kl_estimate, sequence_kl
from rlhfkit.core.kl_control import KLController
from rlhfkit.core.masked import explained_variance, masked_mean, masked_whiten
from rlhfkit.engine.distributed import (
    all_reduce_sum,
    clip_gradients,
    full_parameters,
    gather_rows,
    is_sharded,
    shard_bounds,
)
from rlhfkit.engine.guard import UpdateSnapshot, update_diverged
from rlhfkit.engine.timing import StageTimer
from rlhfkit.models.forward import at_least_float32, evaluation_mode
from rlhfkit.models.policy import Policy
from rlhfkit.rewards.base import Reward
from rlhfkit.rollout.experience import (
    Experience,
    PromptStream,
    derived_seed,
    device_batch,
    reference_logprobs,
    sample_experience,
    sample_response_length,
    score_responses,
)

if TYPE_CHECKING:
    from accelerate import Accelerator

ReduceSum = Callable[[Any], torch.Tensor]
"""A sum over processes (all-reduce), so whitening uses the statistics of the whole batch."""


@dataclass(frozen=True)
class PPOBatch:
    """A rollout with everything PPO computes from it. B = responses, T = response tokens."""

    experience: Experience
    scores: torch.Tensor  # (B,) reward-model scores, after the no-EOS penalty
    ref_logprobs: torch.Tensor  # (B, T) log π_ref(a_t|s_t)
    kl: torch.Tensor  # (B, T) per-token KL estimate used in the reward
    rewards: torch.Tensor  # (B, T) per-token rewards
    advantages: torch.Tensor  # (B, T) whitened GAE advantages
    returns: torch.Tensor  # (B, T) advantages (before whitening) + values

    @property
    def mask(self) -> torch.Tensor:  # (B, T)
        return self.experience.mask


# --------------------------------------------------------------------------------------------------
# The stages


def kl_rewards(experience: Experience, ref_logprobs: torch.Tensor, scores: torch.Tensor, ppo: PPOConfig,
               beta: float, reduce_sum: ReduceSum | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(B, T) per-token KL estimate and (B, T) rewards = −β·KL on every token + the score on the last token.

    ``reduce_sum`` (sum over processes) makes reward whitening use the whole batch's statistics.
    """
    mask = experience.mask
    kl = kl_estimate(experience.old_logprobs, ref_logprobs, ppo.kl_estimator) * mask
    rewards = per_token_rewards(scores, kl, mask, beta)
    if ppo.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False, reduce_sum=reduce_sum)
    return kl, rewards


def advantages_and_returns(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, ppo: PPOConfig,
                           reduce_sum: ReduceSum | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(B, T) GAE advantages whitened over the valid tokens of the whole batch, and (B, T) returns."""
    advantages, returns = gae_advantages(rewards, values, mask, ppo.gamma, ppo.lam)
    return masked_whiten(advantages, mask, reduce_sum=reduce_sum), returns


def update_policy(model: torch.nn.Module, optimizer: Optimizer, scheduler: LRScheduler, accelerator: Accelerator,
                  batch: PPOBatch, ppo: PPOConfig, temperature: float, seed: int) -> dict[str, float]:  # fmt: skip
    """ppo_epochs over reshuffled mini-batches with micro-batch accumulation; returns statistics.

    ``batch`` holds this process's rows; each mini-batch takes mini_batch_size / N of them on each of the
    N processes, and micro-batches of micro_batch_size / N are accumulated through Accelerate. The loss is
    a token sum divided by the mini-batch's token count over all processes (a token mean of the whole
    mini-batch), so neither the micro-batch size nor the number of processes changes the gradient.
    """
    device, P = accelerator.device, accelerator.num_processes
    mini_size, micro_size = ppo.mini_batch_size // P, ppo.micro_batch_size // P
    accumulation = ppo.mini_batch_size // ppo.micro_batch_size  # micro-batches per optimiser step
    B = len(batch.experience)
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
            tokens = float(all_reduce_sum(accelerator, [float(batch.mask[mini].sum())])[0])
            # accelerator.backward divides by the accumulation count and DDP averages over P processes
            scale = accumulation * P / max(tokens, 1.0)
            token_sums: dict[str, float] = {}  # statistic × tokens, summed over this process's micro-batches
            for m in range(0, len(mini), micro_size):
                idx = mini[m : m + micro_size]
                with accelerator.accumulate(model):
                    stats, n_tokens = micro_step(model, accelerator, batch, idx, ppo, temperature, device, scale)
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
            if ppo.target_approx_kl is not None and mini_stats["policy/approx_kl"] > ppo.target_approx_kl:
                stopped_early = True  # the policy moved too far from the rollout policy: stop this step's updates
                break
        epochs_done += 1
        if stopped_early:
            break
    out = {k: sums[k] / counts[k] for k in sums}  # means over the mini-batches: already the same everywhere
    out["ppo/epochs"] = float(epochs_done)
    out["ppo/early_stopped"] = float(stopped_early)
    return out


def micro_step(model: torch.nn.Module, accelerator: Accelerator, batch: PPOBatch, idx: torch.Tensor,
               ppo: PPOConfig, temperature: float, device: torch.device,
               scale: float) -> tuple[dict[str, float], float]:  # fmt: skip
    """Forward + backward of one micro-batch through the (possibly DDP-wrapped) policy ``model``.

    The loss is the micro-batch's token mean times its token count times ``scale``: its share of the
    mini-batch's global token mean. Returns the statistics (token means over the micro-batch) and its token count.
    """
    exp = batch.experience
    prompt_ids, prompt_mask, response_ids = device_batch(exp.prompt_ids, exp.prompt_mask, exp.response_ids, exp.mask,
                                                         idx, device)  # fmt: skip
    width = response_ids.shape[1]
    mask = exp.mask[idx][:, :width].to(device)
    old_logprobs = exp.old_logprobs[idx][:, :width].to(device)
    old_values = exp.values[idx][:, :width].to(device)
    advantages = batch.advantages[idx][:, :width].to(device)
    returns = batch.returns[idx][:, :width].to(device)
    with accelerator.autocast():
        # the entropy needs a gradient only for an entropy bonus; otherwise it is a statistic
        out = model(prompt_ids, prompt_mask, response_ids, temperature, with_entropy=True,
                    entropy_grad=ppo.entropy_coef > 0)  # fmt: skip
    logprobs, values = at_least_float32(out.logprobs), at_least_float32(out.values)
    pg_loss, pg_clip = clipped_policy_loss(logprobs, old_logprobs, advantages, mask, ppo.clip_eps)
    vf_loss, vf_clip = clipped_value_loss(values, old_values, returns, mask, ppo.value_clip)
    entropy = masked_mean(at_least_float32(out.entropy), mask)
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


def batch_statistics(batch: PPOBatch, beta: float) -> dict[str, float]:
    """Statistics that describe the batch of experience itself (before the update)."""
    exp, mask = batch.experience, batch.mask
    k1 = sequence_kl(kl_estimate(exp.old_logprobs, batch.ref_logprobs, "k1") * mask, mask)
    k3 = sequence_kl(kl_estimate(exp.old_logprobs, batch.ref_logprobs, "k3") * mask, mask)
    lengths = mask.sum(1)
    return {
        "score/mean": float(batch.scores.mean()),
        "score/std": float(batch.scores.std()) if len(batch.scores) > 1 else 0.0,
        "kl/k1": float(k1.mean()),
        "kl/k3": float(k3.mean()),
        "kl/beta": beta,
        "reward/total_mean": float((batch.rewards * mask).sum(1).mean()),
        "value/explained_variance": float(explained_variance(exp.values, batch.returns, mask)),
        "value/mean": float(masked_mean(exp.values, mask)),
        "response/length_mean": float(lengths.mean()),
        "response/ended_fraction": float(exp.ended.float().mean()),
    }


def gathered(accelerator: Accelerator, batch: PPOBatch) -> PPOBatch:
    """The step's whole batch (every process's rows, in process order) for statistics; texts are left out."""
    if accelerator.num_processes == 1:
        return batch

    def rows(t: torch.Tensor) -> torch.Tensor:
        return gather_rows(accelerator, t)

    exp = batch.experience
    whole = Experience(prompts=[], responses=[], group_ids=exp.group_ids[:0], prompt_ids=exp.prompt_ids[:0],
                       prompt_mask=exp.prompt_mask[:0], response_ids=exp.response_ids[:0], mask=rows(exp.mask),
                       ended=rows(exp.ended.long()).bool(), old_logprobs=rows(exp.old_logprobs),
                       values=rows(exp.values))  # fmt: skip
    return PPOBatch(whole, scores=rows(batch.scores), ref_logprobs=rows(batch.ref_logprobs), kl=batch.kl[:0],
                    rewards=rows(batch.rewards), advantages=batch.advantages[:0], returns=rows(batch.returns))  # fmt: skip


# --------------------------------------------------------------------------------------------------
# The step


@dataclass
class Trainer:
    """What a PPO step works on; built once by :func:`rlhfkit.algos.ppo.run.run_ppo`."""

    policy: Policy  # with a value head
    model: torch.nn.Module  # the policy as Accelerate prepared it (DDP / DeepSpeed / FSDP wrapper, or the policy)
    optimizer: Optimizer  # as Accelerate prepared it (an AcceleratedOptimizer is one)
    scheduler: LRScheduler
    accelerator: Accelerator
    controller: KLController
    reward: Reward
    stream: PromptStream


def ppo_step(t: Trainer, ppo: PPOConfig, gen: GenerationConfig, seed: int, step: int) -> dict[str, Any]:
    """One PPO step: sample → score → reference → rewards → advantages → update; returns its statistics."""
    accelerator = t.accelerator
    P, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    rank_seed = seed + rank  # each process samples and shuffles with its own stream (docs/ppo.md, detail 9)
    reduce_sum = (lambda x: all_reduce_sum(accelerator, x)) if P > 1 else None
    timer = StageTimer(device)
    everyone = t.stream.batch(step)
    lo, hi = shard_bounds(len(everyone), rank, P)
    prompts = everyone[lo:hi]  # this process's contiguous share of the step's global batch
    low = gen.min_new_tokens if ppo.min_new_tokens is None else ppo.min_new_tokens
    high = gen.max_new_tokens if ppo.max_new_tokens is None else ppo.max_new_tokens
    max_new = sample_response_length(low, high, seed, step)  # the same on every process
    recompute = ppo.rollout_logprobs == "recompute" or (
        ppo.rollout_logprobs == "auto" and accelerator.mixed_precision != "no"
    )
    chunk = ppo.mini_batch_size // P  # a process's share of a mini-batch

    with timer("generate"), accelerator.autocast(), full_parameters(accelerator, t.model):
        experience = sample_experience(t.policy, prompts, gen, max_new, derived_seed(rank_seed, step, "generate"),
                                       recompute, device, chunk)  # fmt: skip
    with timer("score"):
        scored = score_responses(t.reward, experience)
        scores = scored.values
        if ppo.no_eos_penalty is not None:
            scores = no_eos_penalty(scores, experience.ended, ppo.no_eos_penalty)
    nonfinite = int(all_reduce_sum(accelerator, [scored.nonfinite])[0])  # every process skips, or none does
    beta = float(t.controller.value)
    if nonfinite:
        return {"step": step + 1, "skipped": True, "score/nonfinite": float(nonfinite), "kl/beta": beta,
                **timer.seconds}  # fmt: skip
    with timer("reference"), accelerator.autocast(), evaluation_mode(t.policy), full_parameters(accelerator, t.model):
        ref_logprobs = reference_logprobs(t.policy, experience, gen.temperature, device, chunk)
    with timer("advantages"):
        kl, rewards = kl_rewards(experience, ref_logprobs, scores, ppo, beta, reduce_sum)
        advantages, returns = advantages_and_returns(rewards, experience.values, experience.mask, ppo, reduce_sum)
    batch = PPOBatch(experience, scores, ref_logprobs, kl, rewards, advantages, returns)

    trainable = [p for p in t.model.parameters() if p.requires_grad]
    # sharded parameters cannot be copied whole on one process; the checkpoint's own check still applies there
    snapshot = None if is_sharded(accelerator) else UpdateSnapshot.capture(trainable, t.optimizer, t.scheduler)
    with timer("update"):
        update = update_policy(t.model, t.optimizer, t.scheduler, accelerator, batch, ppo, gen.temperature,
                               derived_seed(rank_seed, step, "update"))  # fmt: skip
    if snapshot is not None and update_diverged(trainable, [update.get("policy/grad_norm", 0.0)], reduce_sum):
        snapshot.restore(t.optimizer, t.scheduler)  # as if the update had never run; β is not adapted either
        return {"step": step + 1, "skipped": True, "score/nonfinite": 0.0, "update/nonfinite": 1.0, "kl/beta": beta,
                **timer.seconds}  # fmt: skip

    # statistics of the whole batch (every process's rows), so every process logs and adapts β alike
    stats = {"step": step + 1, **batch_statistics(gathered(accelerator, batch), beta), **update,
             "lr": t.scheduler.get_last_lr()[0], "score/nonfinite": 0.0, **timer.seconds}  # fmt: skip
    stats["time/step"] = timer.total
    t.controller.update(stats["kl/k1"], n_steps=len(everyone))
    stats["samples"] = [{"prompt": p, "response": r, "score": float(s)}
                        for p, r, s in zip(experience.prompts[:4], experience.responses[:4], scores[:4])]  # fmt: skip
    return stats
