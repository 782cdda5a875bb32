"""Runs a short PPO job in its own process (so a test can SIGKILL it and resume it).

    python ppo_runner.py OUTPUT_DIR [--resume] [key=value ...]
"""

from __future__ import annotations

import sys

from rlhfkit.algos.ppo.run import run_ppo
from rlhfkit.config import load_config, replace

BASE = [
    "ppo.steps=6", "ppo.batch_size=4", "ppo.mini_batch_size=2", "ppo.micro_batch_size=1", "ppo.ppo_epochs=2",
    "ppo.learning_rate=1e-3", "ppo.save_every=2", "ppo.tensorboard=false", "ppo.sample_every=0",
    "generation.max_new_tokens=8", "ppo.min_new_tokens=4", "data.synthetic.size=120",
]  # fmt: skip


def vowel_share(prompts: list[str], responses: list[str]) -> list[float]:
    """A rule reward: ten times the share of vowels among the response's characters."""
    return [10 * sum(c in "aeiouAEIOU" for c in r) / max(len(r), 1) for r in responses]


def main(argv: list[str]) -> None:
    out, rest = argv[0], argv[1:]
    resume = "--resume" in rest
    overrides = [a for a in rest if a != "--resume"]
    cfg = replace(load_config([], BASE + overrides), **{"run.output_dir": out})
    from rlhfkit.rewards.simple import CallableReward

    run_ppo(cfg, reward=CallableReward(vowel_share), resume=resume, progress=False)


if __name__ == "__main__":
    main(sys.argv[1:])
