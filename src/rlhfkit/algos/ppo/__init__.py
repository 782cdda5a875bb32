"""PPO with a KL penalty against a frozen reference (docs/ppo.md).

The math is small pure tensor functions (torch only): the per-token KL reward and GAE in
:mod:`~rlhfkit.algos.ppo.advantages`, the clipped policy and value losses in :mod:`~rlhfkit.algos.ppo.losses`;
the shared pieces (log-probs, KL estimators and controllers, masked statistics) come from :mod:`rlhfkit.core`.
One PPO step, in the order these are used (old_* come from the rollout, new_* from the model being trained
on a mini-batch)::

    old_logprobs = logprobs_from_logits(policy_logits, tokens, temperature)   # (B, T)
    ref_logprobs = logprobs_from_logits(ref_logits, tokens, temperature)      # (B, T)
    kl = kl_estimate(old_logprobs, ref_logprobs, "k1")                        # (B, T)
    rewards = per_token_rewards(scores, kl, mask, beta=controller.value)      # (B, T)
    advantages, returns = gae_advantages(rewards, old_values, mask, gamma, lam)
    advantages = masked_whiten(advantages, mask)
    pg_loss, clip_frac = clipped_policy_loss(new_logprobs, old_logprobs, advantages, mask, 0.2)
    vf_loss, vf_clip_frac = clipped_value_loss(new_values, old_values, returns, mask, 0.2)
    controller.update(sequence_kl(kl, mask).mean().item(), n_steps=B)

The step itself is :mod:`~rlhfkit.algos.ppo.step`, the run (set-up, checkpoints, resume) :mod:`~rlhfkit.algos.ppo.run`.
"""

from rlhfkit.algos.ppo.advantages import gae_advantages, last_valid_index, no_eos_penalty, per_token_rewards
from rlhfkit.algos.ppo.losses import clipped_policy_loss, clipped_value_loss

__all__ = [
    "clipped_policy_loss",
    "clipped_value_loss",
    "gae_advantages",
    "last_valid_index",
    "no_eos_penalty",
    "per_token_rewards",
]
