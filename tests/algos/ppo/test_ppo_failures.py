"""PPO under failure: rewards too large for float32, an update that diverges, damaged checkpoints, a full disk.

Each case was a traceback or a silently wrong run before: a reward of 1e39 (finite in Python, inf in float32)
turned every trainable tensor into NaN, the NaN checkpoint was saved, and the next step died with an
IndexError inside F.embedding; a bit-flipped checkpoint resumed without a word.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.algos.ppo.run import run_ppo
from rlhfkit.cli import main
from rlhfkit.config import load_config, replace
from rlhfkit.engine.metrics import read_metrics
from rlhfkit.rewards.simple import CallableReward

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ppo_runner import BASE, vowel_share

FAST = ["ppo.ppo_epochs=1", "ppo.save_every=1", "ppo.keep_checkpoints=5"]


def _cfg(tmp_path, *overrides):
    return replace(load_config([], BASE + FAST + list(overrides)), **{"run.output_dir": str(tmp_path / "run")})


def _huge_on_step(step: int, value: float):
    """vowel_share, except that on call ``step`` (1-based) every score is ``value``."""
    calls = {"n": 0}

    def score(prompts, responses):
        calls["n"] += 1
        return [value] * len(responses) if calls["n"] == step else vowel_share(prompts, responses)

    return CallableReward(score)


@pytest.mark.parametrize("value, reason", [(1e39, "score/nonfinite"), (1e308, "score/nonfinite"),
                                           (3.5e38, "score/nonfinite"), (1e38, "update/nonfinite")])  # fmt: skip
def test_a_reward_too_large_for_training_skips_the_step_and_nothing_turns_nan(tmp_path, value, reason):
    """1e39, 1e308 and 3.5e38 (> float32's 3.4e38) are caught at scoring; 1e38 is a float32 number, but its
    square in the value loss is not: that update is rolled back. Either way the step leaves the weights as they
    were, and no checkpoint holds a NaN."""
    cfg = _cfg(tmp_path, "ppo.steps=2")
    with pytest.warns(UserWarning, match="PPO step 2: .*the step was skipped \\(1 so far\\)"):
        result = run_ppo(cfg, reward=_huge_on_step(2, value), progress=False)
    assert [bool(h.get("skipped")) for h in result.history] == [False, True]
    assert result.history[1].get(reason, 0) >= 1 and result.skipped_steps == 1
    out = Path(cfg.run.output_dir)
    one, two = (load_file(out / f"checkpoints/step-00000{s}/trainable.safetensors") for s in (1, 2))
    assert all(torch.equal(one[k], two[k]) and bool(torch.isfinite(one[k]).all()) for k in one)
    assert [r["skipped_steps"] for r in read_metrics(out / "metrics.jsonl")] == [0, 1]


def _cli(out: Path, *extra: str) -> list[str]:
    sets = [a for o in BASE + FAST + ["reward.rewards=[{kind: callable, path: 'ppo_runner:vowel_share'}]"]
            for a in ("--set", o)]  # fmt: skip
    return ["ppo", "-o", str(out), "--no-progress", *sets, *extra]


@pytest.fixture()
def two_step_run(tmp_path, capsys) -> Path:
    out = tmp_path / "run"
    assert main(_cli(out, "--set", "ppo.steps=2")) == 0
    capsys.readouterr()
    return out


def test_resume_refuses_a_bit_flipped_checkpoint_and_resumes_from_the_one_before_once_it_is_deleted(
    two_step_run, capsys
):
    newest = two_step_run / "checkpoints/step-000002"
    weights = newest / "trainable.safetensors"
    data = bytearray(weights.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header + 16 : header + 16 + 4096] = bytes(b ^ 0xFF for b in data[header + 16 : header + 16 + 4096])
    weights.write_bytes(bytes(data))
    assert main(_cli(two_step_run, "--set", "ppo.steps=3", "--resume")) == 2
    err = capsys.readouterr().err
    assert "step-000002' cannot be read: trainable.safetensors does not match the SHA-256" in err
    assert "Delete it to resume from the one before" in err and "Traceback" not in err
    import shutil

    shutil.rmtree(newest)
    assert main(_cli(two_step_run, "--set", "ppo.steps=3", "--resume")) == 0
    assert [r["step"] for r in read_metrics(two_step_run / "metrics.jsonl")] == [1, 2, 3]


def test_a_full_disk_while_checkpointing_is_a_clear_error_and_the_run_resumes(two_step_run, capsys, monkeypatch):
    def full(*_args, **_kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    assert main(_cli(two_step_run, "--set", "ppo.steps=4", "--resume")) == 2
    err = capsys.readouterr().err
    assert "could not write checkpoint" in err and "no space left on device" in err
    assert "step-000002' is intact" in err and "Traceback" not in err
    monkeypatch.undo()
    assert main(_cli(two_step_run, "--set", "ppo.steps=4", "--resume")) == 0
    assert json.loads((two_step_run / "checkpoints/step-000004/state.json").read_text())["step"] == 4


def test_a_full_disk_anywhere_else_is_a_clear_error(tmp_path, capsys, monkeypatch):
    """Writes outside the checkpoint (metrics, the final adapter) reach the CLI as OSError(ENOSPC)."""
    import errno

    from rlhfkit.engine import metrics

    def full(self, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(metrics.MetricsWriter, "write", full)
    assert main(_cli(tmp_path / "run", "--set", "ppo.steps=1")) == 2
    err = capsys.readouterr().err
    assert "no space left on device while writing" in err and "metrics.jsonl" in err and "Traceback" not in err
