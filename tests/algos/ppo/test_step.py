"""The PPO step's stages on toy tensors and a toy policy: rewards and advantages on a hand-built rollout, and the
update's independence from how a mini-batch is cut into micro-batches."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rlhfkit.algos.ppo.step import PPOBatch, advantages_and_returns, kl_rewards, update_policy
from rlhfkit.config import PPOConfig, RunConfig
from rlhfkit.engine.runtime import make_accelerator
from rlhfkit.models.policy import TokenScores
from rlhfkit.rollout.experience import Experience


def _experience(old_logprobs, mask, values=None, prompt_width=2, vocab=5) -> Experience:
    B, T = old_logprobs.shape
    g = torch.Generator().manual_seed(0)
    return Experience(prompts=["p"] * B, responses=["r"] * B, group_ids=torch.arange(B),
                      prompt_ids=torch.randint(0, vocab, (B, prompt_width), generator=g),
                      prompt_mask=torch.ones(B, prompt_width, dtype=torch.long),
                      response_ids=torch.randint(0, vocab, (B, T), generator=g), mask=mask,
                      ended=mask[:, -1] == 0, old_logprobs=old_logprobs * mask,
                      values=torch.zeros_like(mask) if values is None else values * mask)  # fmt: skip


def test_rewards_and_advantages_of_a_hand_built_rollout():
    # one response of 2 valid tokens (a third is padding): log π = (−1, −2), log π_ref = (−1.5, −1.0)
    # k1 = log π − log π_ref = (+0.5, −1.0); β = 0.1 → −β·k1 = (−0.05, +0.1); the score 2.0 lands on token 1
    exp = _experience(torch.tensor([[-1.0, -2.0, -9.0]]), torch.tensor([[1.0, 1.0, 0.0]]),
                      values=torch.tensor([[0.5, 0.25, 7.0]]))  # fmt: skip
    ppo = PPOConfig(kl_estimator="k1", gamma=1.0, lam=0.5)
    kl, rewards = kl_rewards(exp, torch.tensor([[-1.5, -1.0, 3.0]]), torch.tensor([2.0]), ppo, beta=0.1)
    assert torch.allclose(kl, torch.tensor([[0.5, -1.0, 0.0]]))
    assert torch.allclose(rewards, torch.tensor([[-0.05, 2.1, 0.0]]))
    # GAE (γ = 1, λ = 0.5), V = (0.5, 0.25), V after the last token = 0:
    #   δ1 = 2.1 + 0 − 0.25 = 1.85;          A1 = 1.85
    #   δ0 = −0.05 + 0.25 − 0.5 = −0.3;      A0 = −0.3 + 0.5·1.85 = 0.625
    # returns = A + V = (1.125, 2.1); the two advantages whitened: mean 1.2375, unbiased std 0.866 → ∓0.7071
    advantages, returns = advantages_and_returns(rewards, exp.values, exp.mask, ppo)
    assert torch.allclose(returns[:, :2], torch.tensor([[1.125, 2.1]]))
    assert torch.allclose(advantages[:, :2], torch.tensor([[-1.0, 1.0]]) / math.sqrt(2), atol=1e-6)
    assert advantages[0, 2] == 0 and returns[0, 2] == 0


class ToyPolicy(nn.Module):
    """Logits and values from a table per response position: small enough to update in float64."""

    def __init__(self, vocab: int = 5, width: int = 3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.logits = nn.Parameter(torch.randn(width, vocab, generator=g, dtype=torch.float64))
        self.token_bias = nn.Parameter(torch.randn(vocab, vocab, generator=g, dtype=torch.float64) * 0.1)
        self.values = nn.Parameter(torch.randn(width, generator=g, dtype=torch.float64))

    def forward(self, prompt_ids, prompt_mask, response_ids, temperature, with_entropy=False, entropy_grad=False):
        T = response_ids.shape[1]
        logits = (self.logits[:T] + self.token_bias[prompt_ids[:, :1]]) / temperature  # (B, T, V)
        logp = torch.log_softmax(logits, -1)
        chosen = logp.gather(-1, response_ids[..., None]).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        return TokenScores(chosen, self.values[:T].expand(len(response_ids), T), entropy)


def _batch(B: int = 4, T: int = 3) -> PPOBatch:
    g = torch.Generator().manual_seed(2)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    exp = _experience(-torch.rand(B, T, generator=g, dtype=torch.float64) - 1, mask.double())
    advantages = torch.randn(B, T, generator=g, dtype=torch.float64) * mask
    returns = torch.randn(B, T, generator=g, dtype=torch.float64) * mask
    zeros = torch.zeros(B, T, dtype=torch.float64)
    return PPOBatch(exp, torch.zeros(B), zeros, zeros, zeros, advantages, returns)


def _update(micro: int) -> dict[str, torch.Tensor]:
    ppo = PPOConfig(batch_size=4, mini_batch_size=4, micro_batch_size=micro, ppo_epochs=1, max_grad_norm=1e9)
    accelerator = make_accelerator(RunConfig(device="cpu", precision="fp32"), ppo.mini_batch_size // micro)
    model = ToyPolicy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    stats = update_policy(model, optimizer, scheduler, accelerator, _batch(), ppo, temperature=0.7, seed=3)
    assert stats["ppo/epochs"] == 1.0 and math.isfinite(stats["policy/loss"])
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("micro", [1, 2])
def test_the_update_does_not_depend_on_the_micro_batch_size(micro):
    """One mini-batch of 4 responses (9 valid tokens), whole or in micro-batches of 1 or 2: the loss is a token
    mean of the whole mini-batch either way, so one SGD step moves every parameter alike. In float64 the only
    difference is the order of a few dozen additions: |Δ| ≤ 64 · eps64 · |largest term| ≈ 1e-14, far below
    the 1e-3 by which a micro-batch-mean loss (the bug this guards against) would move them."""
    whole, cut = _update(4), _update(micro)
    before = {name: p.detach() for name, p in ToyPolicy().named_parameters()}
    for name in whole:
        assert (whole[name] - before[name]).abs().max() > 1e-3  # the step moved it
        assert torch.allclose(whole[name], cut[name], rtol=0, atol=64 * torch.finfo(torch.float64).eps * 10)


def test_an_early_stop_on_approx_kl_ends_the_step_after_one_mini_batch():
    ppo = PPOConfig(batch_size=4, mini_batch_size=2, micro_batch_size=2, ppo_epochs=3, target_approx_kl=1e-12)
    accelerator = make_accelerator(RunConfig(device="cpu", precision="fp32"), 1)
    model = ToyPolicy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    batch = _batch()
    # the old log-probs are not the toy policy's: its first mini-batch already differs from them
    stats = update_policy(model, optimizer, scheduler, accelerator, batch, ppo, temperature=0.7, seed=3)
    assert stats["ppo/early_stopped"] == 1.0 and stats["ppo/epochs"] == 1.0
