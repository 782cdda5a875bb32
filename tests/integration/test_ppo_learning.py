"""PPO learns: on an SFT policy that insults ~20% of the time, the lexicon rule reward rises within a few
dozen steps while KL stays bounded; with β = 0 the same run drifts further from the reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhfkit.config import load_config, replace
from rlhfkit.rewards.simple import LexiconReward
from rlhfkit.train.ppo import run_ppo
from rlhfkit.train.sft import run_sft

REPO = Path(__file__).resolve().parents[2]
DATA = ["data.synthetic.size=800"]
SFT = ["sft.max_steps=80", "sft.eval_examples=16", "generation.max_new_tokens=40"]
PPO = [
    "ppo.steps=20", "ppo.batch_size=16", "ppo.mini_batch_size=8", "ppo.micro_batch_size=8", "ppo.ppo_epochs=2",
    "ppo.learning_rate=5e-4", "ppo.min_new_tokens=40", "ppo.max_new_tokens=40", "ppo.tensorboard=false",
    "ppo.sample_every=0", "ppo.save_every=0",
]  # fmt: skip


def _mean(history, key, steps):
    values = [h[key] for h in history[steps]]
    return sum(values) / len(values)


@pytest.mark.slow
@pytest.mark.parametrize("recipe, compare_beta_zero", [("sft-tiny-t5.yaml", True), ("sft-tiny-llama.yaml", False)])
def test_score_rises_with_bounded_kl_and_beta_zero_drifts_further(tmp_path, recipe, compare_beta_zero):
    sft_cfg = load_config([REPO / "configs" / recipe], DATA + SFT)
    sft = run_sft(replace(sft_cfg, **{"run.output_dir": str(tmp_path / "sft")}), progress=False)

    def ppo(beta: float):
        cfg = load_config([REPO / "configs" / recipe], DATA + PPO + [f"ppo.kl_coef={beta}", f"ppo.sft_adapter={sft.adapter_dir}"])
        cfg = replace(cfg, **{"run.output_dir": str(tmp_path / f"ppo-beta{beta}")})
        return run_ppo(cfg, reward=LexiconReward(), progress=False).history

    with_kl = ppo(0.1)
    start, end = _mean(with_kl, "score/mean", slice(0, 4)), _mean(with_kl, "score/mean", slice(-6, None))
    assert start < -0.05, f"the SFT policy should insult now and then (score {start:.3f})"
    assert end > start + 0.1, (start, end)  # fewer insults: the reward rises clearly
    assert max(h["kl/k1"] for h in with_kl) < 15.0  # the KL penalty keeps the policy near the reference
    if not compare_beta_zero:
        return
    free = ppo(0.0)
    drift_kl, drift_free = _mean(with_kl, "kl/k3", slice(-6, None)), _mean(free, "kl/k3", slice(-6, None))
    assert drift_free > drift_kl, (drift_free, drift_kl)  # without the penalty the policy wanders further
