"""The ``ppo`` section: PPO with a KL penalty against a frozen reference (docs/ppo.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rlhfkit.config.generation import GenerationConfig


class _WithGeneration(Protocol):
    @property
    def generation(self) -> GenerationConfig: ...


@dataclass(frozen=True)
class PPOConfig:
    steps: int = 50
    """PPO steps (each: a batch of rollouts, then ppo_epochs of updates)."""
    batch_size: int = 16
    """Prompts (and responses) per PPO step."""
    mini_batch_size: int = 4
    """Responses per optimiser step; must divide batch_size."""
    micro_batch_size: int = 4
    """Responses per forward/backward pass (gradient accumulation); must divide mini_batch_size."""
    ppo_epochs: int = 1
    """Passes over each batch of rollouts; mini-batches are reshuffled every pass."""
    learning_rate: float = 1.41e-5
    """AdamW learning rate of the adapter and value head (the course lab: 1.41e-5)."""
    lr_schedule: str = "constant"
    """constant, linear (decay to 0) or cosine."""
    warmup_steps: int = 0
    """Optimiser steps of linear warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient-norm clipping threshold."""
    clip_eps: float = 0.2
    """PPO clip range of the probability ratio (Schulman et al. 2017)."""
    value_clip: float = 0.2
    """Clip range of the value update around the rollout's values."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    entropy_coef: float = 0.0
    """Weight of an entropy bonus (0 = none, as in lm-human-preferences)."""
    gamma: float = 1.0
    """Discount of GAE."""
    lam: float = 0.95
    """λ of GAE."""
    kl_estimator: str = "k1"
    """Per-token KL estimator in the reward: k1 (log-ratio), k2 (half squared log-ratio) or k3."""
    kl_coef: float = 0.2
    """β of the KL penalty (the initial β when adaptive_kl is true)."""
    adaptive_kl: bool = False
    """Adapt β towards kl_target (Ziegler et al. 2019)."""
    kl_target: float = 6.0
    """Target KL (summed over a response) of the adaptive controller."""
    kl_horizon: int = 10000
    """Horizon of the adaptive controller, in responses."""
    whiten_rewards: bool = False
    """Whiten per-token rewards over the batch before GAE."""
    no_eos_penalty: float | None = None
    """Subtract this from the score of a response that never produced EOS (null = no penalty)."""
    target_approx_kl: float | None = None
    """Stop the step's remaining updates once approx-KL(old, new) exceeds this (null = never)."""
    update_dropout: bool = False
    """Dropout (the model's and LoRA's) during the update; off as in TRL's PPOTrainer and torchtune's PPO recipe."""
    bf16_frozen_weights: bool = True
    """Under bf16 mixed precision, keep the frozen base model's linear weights in bf16 (half the memory, no per-call cast)."""
    bf16_frozen_embeddings: bool = True
    """With bf16_frozen_weights, store frozen embedding tables in bf16 too (lookups come back fp32; the values round)."""
    sft_adapter: str | None = None
    """SFT adapter folder to start from; it is merged into the base and becomes the reference."""
    rollout_logprobs: str = "auto"
    """Old log-probs/values from the 'generation' pass or a teacher-forced 'recompute'; auto: recompute below fp32."""
    reference: str = "adapter"
    """Reference policy: 'adapter' (same weights, RL adapter disabled) or 'copy' (a frozen deep copy)."""
    min_new_tokens: int | None = None
    """Lower end of the per-step response-length sampler (null = generation.min_new_tokens)."""
    max_new_tokens: int | None = None
    """Upper end of the per-step response-length sampler (null = generation.max_new_tokens)."""
    log_every: int = 1
    """Write step statistics every N steps."""
    sample_every: int = 10
    """Show and save a table of prompts, responses and scores every N steps (0 = never)."""
    save_every: int = 25
    """Checkpoint every N steps (0 = only at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk (older ones are deleted)."""
    tensorboard: bool = True
    """Also log statistics to TensorBoard through Accelerate's tracker."""

    def problems(self) -> list[str]:
        p: list[str] = []
        sizes = (self.steps, self.batch_size, self.mini_batch_size, self.micro_batch_size, self.ppo_epochs)
        if min(sizes) <= 0:
            p.append("ppo.steps, batch_size, mini_batch_size, micro_batch_size and ppo_epochs must be positive")
            return p  # the divisibility rules below would divide by zero
        if self.batch_size % self.mini_batch_size:
            p.append(f"ppo.mini_batch_size ({self.mini_batch_size}) must divide ppo.batch_size ({self.batch_size})")
        if self.mini_batch_size % self.micro_batch_size:
            p.append(f"ppo.micro_batch_size ({self.micro_batch_size}) must divide ppo.mini_batch_size "
                     f"({self.mini_batch_size})")  # fmt: skip
        if self.learning_rate <= 0 or self.max_grad_norm <= 0:
            p.append("ppo.learning_rate and ppo.max_grad_norm must be > 0")
        if self.lr_schedule not in ("constant", "linear", "cosine"):
            p.append(f"ppo.lr_schedule must be constant, linear or cosine, got {self.lr_schedule!r}")
        if not 0 < self.clip_eps < 1 or self.value_clip <= 0:
            p.append("ppo.clip_eps must be in (0, 1) and ppo.value_clip > 0")
        if self.vf_coef < 0 or self.entropy_coef < 0:
            p.append("ppo.vf_coef and ppo.entropy_coef must be >= 0")
        if not 0 < self.gamma <= 1 or not 0 <= self.lam <= 1:
            p.append("ppo.gamma must be in (0, 1] and ppo.lam in [0, 1]")
        if self.kl_estimator not in ("k1", "k2", "k3"):
            p.append(f"ppo.kl_estimator must be k1, k2 or k3, got {self.kl_estimator!r}")
        if self.kl_coef < 0 or self.kl_target <= 0 or self.kl_horizon <= 0:
            p.append("ppo.kl_coef must be >= 0, ppo.kl_target and ppo.kl_horizon > 0")
        if self.target_approx_kl is not None and self.target_approx_kl <= 0:
            p.append("ppo.target_approx_kl must be > 0 or null")
        if self.rollout_logprobs not in ("auto", "generation", "recompute"):
            p.append(f"ppo.rollout_logprobs must be auto, generation or recompute, got {self.rollout_logprobs!r}")
        if self.reference not in ("adapter", "copy"):
            p.append(f"ppo.reference must be 'adapter' or 'copy', got {self.reference!r}")
        if self.log_every <= 0 or self.sample_every < 0 or self.save_every < 0 or self.keep_checkpoints <= 0:
            p.append("ppo.log_every and keep_checkpoints must be positive; sample_every and save_every >= 0")
        return p

    def cross_problems(self, root: _WithGeneration) -> list[str]:
        """The response-length sampler: ppo's bounds, each falling back to the ``generation`` section's."""
        lo = root.generation.min_new_tokens if self.min_new_tokens is None else self.min_new_tokens
        hi = root.generation.max_new_tokens if self.max_new_tokens is None else self.max_new_tokens
        if not 0 <= lo <= hi or hi <= 0:
            return [f"the response-length sampler needs 0 <= min_new_tokens ({lo}) <= max_new_tokens ({hi}), max > 0"]
        return []
