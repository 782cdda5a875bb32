"""Runs a short PPO job in its own process (so a test can SIGKILL it and resume it).

    python ppo_runner.py OUTPUT_DIR [--resume] [--hang-at-step N] [key=value ...]

--hang-at-step N: when step N asks for its rewards, write OUTPUT_DIR/hanging and wait there until killed, so a test
kills the run at a known point however fast or slow the machine is.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

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


def hanging_at_call(n: int, marker: Path):
    """vowel_share (same name, same scores) that, on its n-th call, writes ``marker`` and never returns."""
    calls = {"n": 0}

    @functools.wraps(vowel_share)
    def reward(prompts: list[str], responses: list[str]) -> list[float]:
        calls["n"] += 1
        if calls["n"] == n:
            marker.write_text(f"step {n} is waiting for its rewards\n")
            while True:
                time.sleep(60)
        return vowel_share(prompts, responses)

    return reward


def main(argv: list[str]) -> None:
    out, rest = argv[0], argv[1:]
    resume = "--resume" in rest
    hang_at = int(rest[rest.index("--hang-at-step") + 1]) if "--hang-at-step" in rest else None
    flags = {"--resume"} | ({"--hang-at-step", str(hang_at)} if hang_at is not None else set())
    overrides = [a for a in rest if a not in flags]
    cfg = replace(load_config([], BASE + overrides), **{"run.output_dir": out})
    from rlhfkit.rewards.simple import CallableReward

    # the reward is asked once per step, so its n-th call is step n's
    score = vowel_share if hang_at is None else hanging_at_call(hang_at, Path(out) / "hanging")
    run_ppo(cfg, reward=CallableReward(score), resume=resume, progress=False)


if __name__ == "__main__":
    main(sys.argv[1:])
