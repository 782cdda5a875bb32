"""PPO math as small pure tensor functions: KL estimators and controllers, rewards, GAE, losses.

This package imports torch only (never transformers or peft), so it is tested without any model.
Shapes: B = batch (responses), T = response tokens, V = vocabulary; ``mask`` is (B, T) with
1.0 / True on valid response tokens (everything after EOS is padding).

One PPO step, in the order these are used (old_* come from the rollout, new_* from the model
being trained on a mini-batch)::

    old_logprobs = logprobs_from_logits(policy_logits, tokens, temperature)   # (B, T)
    ref_logprobs = logprobs_from_logits(ref_logits, tokens, temperature)      # (B, T)
    kl = kl_estimate(old_logprobs, ref_logprobs, "k1")                        # (B, T)
    rewards = per_token_rewards(scores, kl, mask, beta=controller.value)      # (B, T)
    advantages, returns = gae_advantages(rewards, old_values, mask, gamma, lam)
    advantages = masked_whiten(advantages, mask)
    pg_loss, clip_frac = clipped_policy_loss(new_logprobs, old_logprobs, advantages, mask, 0.2)
    vf_loss, vf_clip_frac = clipped_value_loss(new_values, old_values, returns, mask, 0.2)
    controller.update(sequence_kl(kl, mask).mean().item(), n_steps=B)
"""

from rlhfkit.ppo.advantages import gae_advantages, last_valid_index, no_eos_penalty, per_token_rewards
from rlhfkit.ppo.kl import (
    KL_KINDS,
    MAX_LOG_RATIO,
    AdaptiveKLController,
    FixedKLController,
    KLController,
    KLKind,
    kl_estimate,
    kl_k1,
    kl_k2,
    kl_k3,
    sequence_kl,
)
from rlhfkit.ppo.losses import (
    approx_kl,
    approx_kl_k3,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    logprobs_from_logits,
)
from rlhfkit.ppo.stats import explained_variance, masked_mean, masked_sum, masked_var, masked_whiten

__all__ = [
    "KL_KINDS",
    "MAX_LOG_RATIO",
    "AdaptiveKLController",
    "FixedKLController",
    "KLController",
    "KLKind",
    "approx_kl",
    "approx_kl_k3",
    "clipped_policy_loss",
    "clipped_value_loss",
    "entropy_from_logits",
    "explained_variance",
    "gae_advantages",
    "kl_estimate",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "last_valid_index",
    "logprobs_from_logits",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "no_eos_penalty",
    "per_token_rewards",
    "sequence_kl",
]
