"""PPO learns: on an SFT policy that insults now and then, the lexicon rule reward rises within a few dozen
steps while KL stays bounded; with β = 0 the same run drifts further from the reference.

"Rises" is judged on held-out prompts, not on the training batches: the SFT policy and the PPO policy each
answer the same 200 unseen prompts, prompt i sampled from the same seed for both (paired, as `rlhfkit eval`
does). With 16 samples a step the training curve alone is too noisy for a fixed threshold: a margin that one
machine clears can be missed on another whose float rounding sends the sampling down a different path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhfkit.algos.ppo.run import run_ppo
from rlhfkit.algos.sft import run_sft
from rlhfkit.config import load_config, replace
from rlhfkit.data.loading import load_dialogues
from rlhfkit.eval.evaluate import prompt_seed, sample_policy
from rlhfkit.rewards.simple import LexiconReward

REPO = Path(__file__).resolve().parents[3]
DATA = ["data.synthetic.size=1000", "data.test_size=0.2"]  # 800 prompts to train on, 200 held out
SFT = ["sft.max_steps=80", "sft.eval_examples=16", "generation.max_new_tokens=40"]
PPO = [
    "ppo.steps=30", "ppo.batch_size=16", "ppo.mini_batch_size=8", "ppo.micro_batch_size=8", "ppo.ppo_epochs=2",
    "ppo.learning_rate=1e-3", "ppo.min_new_tokens=40", "ppo.max_new_tokens=40", "ppo.tensorboard=false",
    "ppo.sample_every=0", "ppo.save_every=0",
]  # fmt: skip


def _mean(history, key, steps):
    values = [h[key] for h in history[steps]]
    return sum(values) / len(values)


def _held_out_score(cfg, adapter: Path, prompts: list[str]) -> float:
    """Mean lexicon reward of ``adapter``'s answers to ``prompts``, prompt i sampled from seed i's stream (paired)."""
    samples = sample_policy(
        cfg, adapter.name, str(adapter), prompts, [prompt_seed(0, i) for i in range(len(prompts))]
    )
    scores = LexiconReward()(prompts, samples.texts)
    return sum(scores) / len(scores)


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe, compare_beta_zero", [("sft-tiny-t5.yaml", True), ("sft-tiny-llama.yaml", False)]
)
def test_score_rises_with_bounded_kl_and_beta_zero_drifts_further(tmp_path, recipe, compare_beta_zero):
    sft_cfg = load_config([REPO / "configs" / recipe], DATA + SFT)
    sft = run_sft(replace(sft_cfg, **{"run.output_dir": str(tmp_path / "sft")}), progress=False)

    def ppo(beta: float):
        cfg = load_config(
            [REPO / "configs" / recipe],
            DATA + PPO + [f"ppo.kl_coef={beta}", f"ppo.sft_adapter={sft.adapter_dir}"],
        )
        cfg = replace(cfg, **{"run.output_dir": str(tmp_path / f"ppo-beta{beta}")})
        return cfg, run_ppo(cfg, reward=LexiconReward(), progress=False)

    cfg, with_kl = ppo(0.1)
    held_out = list(load_dialogues(cfg.data).test["prompt"])
    before = _held_out_score(cfg, Path(sft.adapter_dir), held_out)
    after = _held_out_score(cfg, with_kl.adapter_dir, held_out)
    assert before < -0.1, f"the SFT policy should insult now and then (held-out score {before:.3f})"
    assert after > before / 2, (before, after)  # at least half of the insults are gone on unseen prompts
    assert (
        max(h["kl/k1"] for h in with_kl.history) < 15.0
    )  # the KL penalty keeps the policy near the reference
    if not compare_beta_zero:
        return
    _, free = ppo(0.0)
    drift_kl = _mean(with_kl.history, "kl/k3", slice(-6, None))
    drift_free = _mean(free.history, "kl/k3", slice(-6, None))
    assert drift_free > drift_kl, (drift_free, drift_kl)  # without the penalty the policy wanders further
