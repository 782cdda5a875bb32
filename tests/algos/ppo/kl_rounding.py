"""How far a KL that is 0 in exact arithmetic may read from 0 in float32: a bound for the end-to-end tests.

A policy measured against itself (PPO's first step, `rlhfkit eval`'s reference policy) compares log-probs from the
sampling pass (KV cache, its own batch shapes) with those of a teacher-forced pass. Each pair agrees up to float32
rounding relative to the largest tempered logit of its position: within ULPS = 64 ulps of max|z/T|, the budget that
tests/rollout/test_decoding.py argues and measures (up to 6 ulps seen). A sequence KL sums at most ``max_tokens`` such
differences, and a mean over sequences is no larger than its largest term, so

    |mean sequence KL| <= max_tokens · ULPS · EPS32 · L,   L >= max|z/T| at every position.

L comes from the weights, so the bound holds for any response: the output layer reads the final RMS norm's output
h = γ ⊙ x / rms(x), whose L2 norm is at most max|γ|·sqrt(d), so |z_v| = |W_v · h| <= ‖W_v‖ · max|γ| · sqrt(d)
(Cauchy–Schwarz). On the presets that is 13.6 (tiny-t5) and 3.0 (tiny-llama), 2.8x and 3.2x the largest logits seen.
A real mismatch is far outside: a temperature off by 0.1 % alone moves tiny-t5's log-probs by 3.4e-3 per token.

Imported by the tests beside it (their folder is put on sys.path, as for ppo_runner).
"""

from __future__ import annotations

import torch

ULPS = 64
EPS32 = torch.finfo(torch.float32).eps


def largest_tempered_logit(model_cfg, adapter: str | None, temperature: float) -> float:
    """An upper bound on |z_v|/T at every position of ``model_cfg`` with ``adapter`` (and the adapters it was trained
    on) applied; an adapter that trains the output layer (modules_to_save) is accounted for by merging it first."""
    from rlhfkit.models.inference import load_policy

    model = load_policy(model_cfg, adapter).model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    weight = model.get_output_embeddings().weight.detach()
    decoder = model.get_decoder()
    norm = decoder.final_layer_norm if hasattr(decoder, "final_layer_norm") else decoder.norm
    gamma = float(norm.weight.detach().abs().max())
    return float(weight.norm(dim=1).max()) * gamma * weight.shape[1] ** 0.5 / temperature


def self_kl_tolerance(model_cfg, adapter: str | None, temperature: float, max_tokens: int) -> float:
    """How far from 0 float32 rounding alone can move a mean sequence KL of this policy to itself (module docstring)."""
    return max_tokens * ULPS * EPS32 * largest_tempered_logit(model_cfg, adapter, temperature)
