"""SFT, reward-model training and PPO on 2 CPU processes (gloo) through `accelerate launch`, against 1 process.

What "the same" means, and the tolerance: batch sizes are global, so 2 processes × 8 examples see exactly the
data of 1 process × 16, and the losses are sums divided by the *global* example / token count, so the
all-reduced gradient is the gradient of the same mean. The two runs still round differently: each process
pads its own 8 rows (other matrix shapes, so other summation orders inside the kernels), sums its own
tokens, and gloo adds the two partial sums. In fp32 (24-bit mantissa, ~6e-8 per operation) these reorderings
leave relative differences of ~1e-7..1e-6 in losses and gradient norms (measured here: at most ~3e-7), so
1e-5 relative is ten times the worst seen while still far below what a real mistake costs: averaging two
per-process token means instead of one global mean is off by ~1e-2 (the shards' token counts differ by
several percent), a gradient counted twice or not all-reduced by 2× or more.

AdamW's first step moves every weight by about lr·sign(g) whatever |g| is, so equal parameters after it would
not catch a gradient of the wrong size, and it turns rounding noise in gradient entries that cancel to ~1e-8
into differences of up to lr. Both runs therefore use AdamW with ε = 1 (``LinearFirstStepAdamW`` in the
runner; the training code is unchanged): the first step is then ≈ lr·g, and equal parameters mean equal
gradients. The gradient norm before clipping and the logged losses are compared as well.

PPO samples with seed + rank on each process, so two processes would draw other responses than one process
for the same prompts. The comparison therefore uses ``generation.top_k=1``: sampling still runs, but always
draws the most likely token, so both runs see identical rollouts (asserted on the samples) and the test
checks what scaling out must not change — global advantage whitening, the token-weighted loss across
processes and micro-batches, reduced statistics — on the same experience.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.engine.metrics import read_metrics

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import distributed_runner as runner  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6


def _free_port() -> int:
    # another test run on the same machine may hold accelerate's default port 29500
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """`accelerate launch` with 2 CPU processes (configs/accelerate/multi-cpu.yaml), one thread each."""
    # CPU processes and gloo on any machine: visible GPUs would turn the launch into NCCL on cuda:0 and cuda:1
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "configs" / "accelerate" / "multi-cpu.yaml"), "--main_process_port", str(_free_port()),
               *args]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=str(HERE))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_t5_dir):
    """(one process, two processes) work folders, each with sft/, reward/, ppo-step1/ (and ppo/, ppo-straight/)."""
    from rlhfkit.rewards.synthetic_pairs import make_synthetic_pairs
    from rlhfkit.rewards.tiny_backbones import ensure_backbone

    ensure_backbone("tiny-bert")
    work = tmp_path_factory.mktemp("distributed")
    pairs = work / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in make_synthetic_pairs(size=60, seed=0)))
    two = work / "two"
    started = time.perf_counter()
    done = _launch([str(HERE / "distributed_runner.py"), str(two), str(pairs)])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    launched_s = time.perf_counter() - started
    one = work / "one"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim, "AdamW", runner.LinearFirstStepAdamW)  # as in the launched run
        runner.sft(one / "sft")
        runner.reward(one / "reward", pairs)
        runner.ppo(one / "ppo-step1", steps=1)
    print(f"2-process launch {launched_s:.1f} s")
    return one, two, done.stdout


def _assert_tensors_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=RTOL, atol=ATOL, msg=lambda m: f"{name}: {m}")


def _assert_stats_close(a: dict, b: dict) -> None:
    keys = {k for k in a if not k.startswith("time/")}
    assert keys == {k for k in b if not k.startswith("time/")}
    for k in sorted(keys):
        if isinstance(a[k], float) and isinstance(b[k], float):
            assert math.isclose(a[k], b[k], rel_tol=RTOL, abs_tol=ATOL), (k, a[k], b[k])
        else:
            assert a[k] == b[k], (k, a[k], b[k])


def _assert_train_records_close(a: Path, b: Path, keys: tuple[str, ...]) -> None:
    """Each run logged exactly one training record, and the two agree on ``keys``."""
    (ta,), (tb,) = ([r for r in read_metrics(d / "metrics.jsonl") if r["event"] == "train"] for d in (a, b))
    for key in keys:
        assert math.isclose(ta[key], tb[key], rel_tol=RTOL), (key, ta[key], tb[key])


def _events(folder: Path) -> list[str]:
    return [r.get("event", "step") for r in read_metrics(folder / "metrics.jsonl")]


@pytest.mark.slow
def test_sft_on_two_processes_matches_one_process(runs):
    one, two, stdout = runs
    _assert_tensors_close(load_file(one / "sft/adapter/adapter_model.safetensors"),
                          load_file(two / "sft/adapter/adapter_model.safetensors"))  # fmt: skip
    _assert_train_records_close(one / "sft", two / "sft", ("loss", "grad_norm", "lr"))
    # one log, written once, by one process; one summary printed
    assert _events(two / "sft") == ["start", "train", "eval"]
    assert read_metrics(two / "sft/metrics.jsonl")[0]["processes"] == 2
    assert stdout.count("ROUGE-1/2/L") == 1  # one summary, printed by the main process only
    # held-out loss over all 6 examples, split 3 + 3 across the processes and reduced
    eval1, eval2 = (json.loads((d / "sft/final_metrics.json").read_text()) for d in (one, two))
    assert math.isclose(eval1["eval_loss"], eval2["eval_loss"], rel_tol=RTOL)


@pytest.mark.slow
def test_reward_training_on_two_processes_matches_one_process(runs):
    one, two, _ = runs
    _assert_tensors_close(load_file(one / "reward/reward_model/model.safetensors"),
                          load_file(two / "reward/reward_model/model.safetensors"))  # fmt: skip
    _assert_train_records_close(one / "reward", two / "reward", ("loss", "grad_norm", "examples"))
    assert _events(two / "reward") == ["start", "train", "eval"]
    r1, r2 = (json.loads((d / "reward/report.json").read_text()) for d in (one, two))
    assert r1["heldout"]["accuracy"] == r2["heldout"]["accuracy"]


@pytest.mark.slow
def test_ppo_on_two_processes_matches_one_process_after_the_first_update(runs):
    one, two, _ = runs
    run1, run2 = one / "ppo-step1", two / "ppo-step1"
    # exactly one checkpoint and one log line, written by one process
    assert [p.name for p in (run2 / "checkpoints").iterdir()] == ["step-000001"]
    assert sorted(p.name for p in (run2 / "checkpoints/step-000001").iterdir()) == [
        "manifest.json", "state.json", "trainable.safetensors", "training_state.pt"]  # fmt: skip
    (s1,), (s2,) = read_metrics(run1 / "metrics.jsonl"), read_metrics(run2 / "metrics.jsonl")
    # the same rollout: the first 4 prompts and responses (from rank 0's share) and the batch's statistics
    samples1, samples2 = (
        [json.loads(x) for x in (d / "samples.jsonl").read_text().splitlines()] for d in (run1, run2)
    )
    assert [(s["prompt"], s["response"]) for s in samples1] == [
        (s["prompt"], s["response"]) for s in samples2
    ]
    assert len(samples2) == 4
    _assert_stats_close(
        s1, s2
    )  # scores, KL, whitened advantages' effect: losses, grad norm, explained variance
    _assert_tensors_close(load_file(run1 / "checkpoints/step-000001/trainable.safetensors"),
                          load_file(run2 / "checkpoints/step-000001/trainable.safetensors"))  # fmt: skip
    state = torch.load(run2 / "checkpoints/step-000001/training_state.pt", weights_only=True)
    assert len(state["per_process"]) == 2  # each process's RNG states, for resume
    assert json.loads((run2 / "checkpoints/step-000001/state.json").read_text())["processes"] == 2


@pytest.mark.slow
def test_ppo_resumed_on_two_processes_repeats_the_uninterrupted_run(runs):
    _, two, _ = runs
    resumed, straight = (
        read_metrics(two / "ppo/metrics.jsonl"),
        read_metrics(two / "ppo-straight/metrics.jsonl"),
    )
    assert [r["step"] for r in resumed] == [1, 2] == [r["step"] for r in straight]

    def comparable(records):
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]

    assert comparable(resumed) == comparable(straight)  # identical, as on one process
    a = load_file(two / "ppo/checkpoints/step-000002/trainable.safetensors")
    b = load_file(two / "ppo-straight/checkpoints/step-000002/trainable.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------------
# Bad input: refused before any model is loaded


@pytest.mark.slow
def test_launch_with_a_batch_that_does_not_divide_is_refused_before_any_work(tmp_path):
    out = tmp_path / "run"
    sets = [a for o in runner.PPO + ["ppo.batch_size=3", "ppo.mini_batch_size=3", "ppo.micro_batch_size=3"]
            for a in ("--set", o)]  # fmt: skip
    done = _launch(["-m", "rlhfkit", "ppo", "-o", str(out), "--no-progress", *sets], timeout=120)
    assert done.returncode != 0
    assert "rlhfkit ppo: error: ppo.batch_size=3 does not divide across 2 processes" in done.stderr
    assert "Use a multiple of 2 (e.g. 2 or 4)" in done.stderr
    assert not (out / "config.yaml").exists()  # nothing was written, no model was loaded


def test_more_processes_than_prompts_and_indivisible_sizes_are_named():
    from rlhfkit.engine.distributed import check_split
    from rlhfkit.errors import RlhfkitError

    check_split(1, {"ppo.batch_size": 3})  # one process takes any size
    check_split(4, {"ppo.batch_size": 16, "ppo.mini_batch_size": 4})
    with pytest.raises(RlhfkitError, match=r"ppo.batch_size=2 is smaller than the 4 processes launched.*"
                       r"--num_processes 2"):  # fmt: skip
        check_split(4, {"ppo.batch_size": 2})
    with pytest.raises(
        RlhfkitError, match=r"ppo.mini_batch_size=6 does not divide across 4 processes.*e.g. 4 or 8"
    ):
        check_split(4, {"ppo.batch_size": 16, "ppo.mini_batch_size": 6})


def test_sft_batch_must_divide_by_accumulation_times_processes(monkeypatch, tmp_path):
    """The split is checked with the process count the Accelerator reports, before the data or model is read."""
    from rlhfkit.algos import sft
    from rlhfkit.config import load_config, replace
    from rlhfkit.errors import RlhfkitError

    real = sft.make_accelerator

    def two_processes(*args, **kwargs):
        accelerator = real(*args, **kwargs)
        monkeypatch.setattr(type(accelerator), "num_processes", property(lambda self: 2))
        return accelerator

    monkeypatch.setattr(sft, "make_accelerator", two_processes)
    cfg = replace(load_config([], ["sft.batch_size=6", "sft.gradient_accumulation_steps=2"]),
                  **{"run.output_dir": str(tmp_path / "run")})  # fmt: skip
    with pytest.raises(RlhfkitError, match=r"sft.batch_size / sft.gradient_accumulation_steps=3 does not divide "
                       r"across 2 processes"):  # fmt: skip
        sft.run_sft(cfg, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("deepspeed") is not None, reason="deepspeed is installed"
)
def test_deepspeed_launch_without_deepspeed_is_a_clear_error(monkeypatch, tmp_path, capsys):
    from rlhfkit.cli import main

    monkeypatch.setenv(
        "ACCELERATE_USE_DEEPSPEED", "true"
    )  # what accelerate launch sets for a DeepSpeed config
    out = tmp_path / "run"
    assert main(["sft", "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the deepspeed package is not installed" in err and "pip install deepspeed" in err
    assert "configs/accelerate/multi-gpu.yaml" in err and not out.exists()


def test_launcher_gradient_accumulation_that_disagrees_is_refused(monkeypatch, tmp_path):
    from rlhfkit.algos.sft import run_sft
    from rlhfkit.config import load_config, replace
    from rlhfkit.errors import RlhfkitError

    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4")
    cfg = replace(load_config([], []), **{"run.output_dir": str(tmp_path / "run")})
    with pytest.raises(
        RlhfkitError, match="sets gradient_accumulation_steps=4.*sft.gradient_accumulation_steps"
    ):
        run_sft(cfg, progress=False)


def test_accelerate_config_files_load_and_say_what_they_are():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    expected = {
        "single-gpu.yaml": DistributedType.NO, "multi-gpu.yaml": DistributedType.MULTI_GPU,
        "multi-cpu.yaml": DistributedType.MULTI_GPU, "multi-node.yaml": DistributedType.MULTI_GPU,
        "deepspeed-zero2.yaml": DistributedType.DEEPSPEED, "deepspeed-zero3.yaml": DistributedType.DEEPSPEED,
        "fsdp.yaml": DistributedType.FSDP,
    }  # fmt: skip
    folder = REPO / "configs" / "accelerate"
    assert sorted(p.name for p in folder.glob("*.yaml")) == sorted(expected)
    for name, kind in expected.items():
        cfg = load_config_from_file(str(folder / name))
        assert cfg.distributed_type == kind, name
        text = (folder / name).read_text()
        assert "accelerate launch --config_file configs/accelerate/" + name in text, name  # the exact command
        settings = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        # rlhfkit takes gradient accumulation from its own config (a launcher value would be refused)
        assert not any("gradient_accumulation_steps" in line for line in settings), name
    assert load_config_from_file(str(folder / "deepspeed-zero2.yaml")).deepspeed_config["zero_stage"] == 2
    assert load_config_from_file(str(folder / "deepspeed-zero3.yaml")).deepspeed_config["zero_stage"] == 3
    assert load_config_from_file(str(folder / "multi-node.yaml")).num_machines == 2
