"""The training jobs of the multi-process tests, through the real CLI, under `accelerate launch` or in-process.

    accelerate launch --multi_gpu --num_processes 2 distributed_runner.py WORKDIR PAIRS_FILE

runs, in one launch (the start-up of two processes is the slow part on a small CPU), what
`accelerate launch -m rlhfkit ...` would run command by command:

* ``sft``: `rlhfkit sft`, one step;
* ``reward``: `rlhfkit reward train`, one step;
* ``ppo``: `rlhfkit ppo`, one step (its checkpoint is the only one; copied to ``ppo-step1``), then
  `rlhfkit ppo --resume` extends the same run to step 2;
* ``ppo-straight``: two PPO steps without interruption, to compare the resumed run with.

The settings are shared with the test, which runs the same commands on one process for reference.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "algos" / "ppo"))  # the PPO reward below is `ppo_runner:vowel_share`

# Batch sizes are global: 16 per step on one process, 2 × 8 on two. Dropout is off (lora.dropout=0; the tiny
# presets have none and the reward backbone's is switched off), so no random mask differs between the runs.
COMMON = ["run.precision=fp32", "run.device=cpu", "lora.dropout=0", "data.synthetic.size=120"]
SFT = COMMON + [
    "model.name_or_path=preset:tiny-t5", "lora.target_modules=[all-linear]", "sft.batch_size=16",
    "sft.max_steps=1", "sft.log_every=1", "sft.eval_examples=6", "generation.max_new_tokens=6",
    "sft.learning_rate=3e-3",
]  # fmt: skip
# generation.top_k=1: sampling always draws the most likely token, so the responses do not depend on how the
# sampling seeds are split across processes, and both runs update on the same rollout (see the test).
PPO = COMMON + [
    "model.name_or_path=preset:tiny-t5", "lora.target_modules=[all-linear]", "ppo.batch_size=16",
    "ppo.mini_batch_size=16", "ppo.micro_batch_size=4", "ppo.ppo_epochs=1", "ppo.learning_rate=1e-3",
    "ppo.save_every=1", "ppo.keep_checkpoints=3", "ppo.tensorboard=false", "ppo.sample_every=1",
    "generation.top_k=1", "generation.max_new_tokens=6", "ppo.min_new_tokens=6",
    "reward.rewards=[{kind: callable, path: 'ppo_runner:vowel_share'}]",
]  # fmt: skip
REWARD = [
    "run.precision=fp32", "run.device=cpu", "backbone.name_or_path=backbone:tiny-bert", "data.max_length=96",
    "train.batch_size=16", "train.max_steps=1", "train.log_every=1", "train.learning_rate=2e-3",
    "data.test_size=0.2", "normalize.max_samples=40",
]  # fmt: skip


class LinearFirstStepAdamW(torch.optim.AdamW):
    """AdamW with ε = 1 instead of 1e-8, for these comparisons only.

    With the default ε, Adam's first step is lr·g/(|g| + 1e-8) ≈ lr·sign(g): equal parameters after it would
    not show a gradient twice too large, and a gradient entry that nearly cancels to ~1e-8 turns rounding
    noise into differences of up to lr. With ε = 1 (and |g| ≪ 1) the step is ≈ lr·g, so equal parameters
    mean equal gradients. Both runs use it; training code is unchanged.
    """

    def __init__(self, params, **kwargs) -> None:  # noqa: ANN001
        super().__init__(params, **{**kwargs, "eps": 1.0})


def _sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def cli(argv: list[str]) -> None:
    from rlhfkit.cli import main

    code = main(argv)
    if code:
        raise SystemExit(f"rlhfkit {' '.join(argv[:2])} exited with {code}")


def sft(out: Path) -> None:
    cli(["sft", "-o", str(out), "--no-progress", *_sets(SFT)])


def reward(out: Path, pairs: Path) -> None:
    cli(["reward", "train", "--data", str(pairs), "-o", str(out), "--no-progress", *_sets(REWARD)])


def ppo(out: Path, steps: int, resume: bool = False) -> None:
    cli(
        [
            "ppo",
            "-o",
            str(out),
            "--no-progress",
            *(["--resume"] if resume else []),
            *_sets(PPO + [f"ppo.steps={steps}"]),
        ]
    )


def main(work: Path, pairs: Path) -> None:
    from accelerate import PartialState

    torch.optim.AdamW = LinearFirstStepAdamW  # the loops create their optimiser as torch.optim.AdamW(...)
    sft(work / "sft")
    reward(work / "reward", pairs)
    ppo(work / "ppo", steps=1)
    state = PartialState()
    if state.is_main_process:  # the run after one step, before the resumed run adds to it
        shutil.copytree(work / "ppo", work / "ppo-step1")
    state.wait_for_everyone()
    ppo(work / "ppo", steps=2, resume=True)
    ppo(work / "ppo-straight", steps=2)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
