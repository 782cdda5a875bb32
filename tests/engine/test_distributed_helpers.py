"""The pieces of multi-process training that need no processes: shares of a batch, whitening with a reducer."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.core.masked import masked_whiten
from rlhfkit.engine.distributed import check_backend, padded_shard, shard_bounds
from rlhfkit.errors import RlhfkitError
from rlhfkit.rewards.batching import LabelBatch, PairBatch, shard_label_batch, shard_pair_batch


def test_shard_bounds_cover_every_row_once_in_order():
    for total in range(0, 12):
        for n in range(1, 5):
            bounds = [shard_bounds(total, r, n) for r in range(n)]
            assert [i for a, b in bounds for i in range(a, b)] == list(range(total))
    assert shard_bounds(16, 1, 2) == (8, 16)  # 2 × 8: the second process takes rows 8..15


def test_padded_shards_have_equal_length_and_say_how_many_rows_are_real():
    shards = [padded_shard(5, r, 2) for r in range(2)]
    assert shards == [([0, 1, 2], 3), ([3, 4, 4], 2)]  # the last index is repeated, not counted
    assert padded_shard(1, 1, 2) == ([0], 0)  # nothing of its own: one filler, no real row


def test_a_pair_batch_is_shared_contiguously_and_reindexed():
    # texts 10, 11, 12, 13; pairs (10>11), (10>12), (13>11)
    batch = PairBatch(texts=[10, 11, 12, 13], chosen=torch.tensor([0, 0, 3]), rejected=torch.tensor([1, 2, 1]),
                      margin=torch.tensor([0.0, 1.0, 2.0]), target=torch.ones(3))  # fmt: skip
    first, w0 = shard_pair_batch(batch, 0, 2)
    second, w1 = shard_pair_batch(batch, 1, 2)
    assert first.texts == [10, 11, 12] and first.chosen.tolist() == [0, 0] and first.rejected.tolist() == [1, 2]
    assert second.texts == [11, 13] and second.chosen.tolist() == [1] and second.rejected.tolist() == [0]
    assert second.margin.tolist() == [2.0] and w0.tolist() == [1.0, 1.0] and w1.tolist() == [1.0]


def test_a_process_without_pairs_scores_a_filler_with_weight_zero():
    batch = PairBatch(texts=[4, 5], chosen=torch.tensor([0]), rejected=torch.tensor([1]), margin=torch.zeros(1),
                      target=torch.ones(1))  # fmt: skip
    shard, weight = shard_pair_batch(batch, 1, 2)
    assert shard.pairs == 1 and weight.tolist() == [0.0]
    labels, weight = shard_label_batch(LabelBatch([7], torch.ones(1)), 1, 2)
    assert labels.texts == [7] and weight.tolist() == [0.0]


def test_whitening_with_a_reducer_matches_whitening_the_whole_batch():
    torch.manual_seed(0)
    x = torch.randn(6, 5)
    mask = (torch.rand(6, 5) > 0.3).float()
    mask[:, 0] = 1
    whole = masked_whiten(x, mask)
    tolerance = _whitening_tolerance(x, mask, whole)
    # one process: the reducer is the identity, and the two-pass statistics equal the direct ones
    assert (masked_whiten(x, mask, reduce_sum=lambda t: t.double()) - whole).abs().max() <= tolerance

    # two processes, simulated: each reduction adds the other half's contribution, computed the same way
    halves = [(x[:3], mask[:3]), (x[3:], mask[3:])]

    def whiten_half(i: int) -> torch.Tensor:
        calls = {"n": 0}

        def reduce_sum(t: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            other_x, other_mask = halves[1 - i]
            valid = other_mask.bool()
            if calls["n"] == 1:  # first pass: [sum, count]
                other = torch.stack([other_x[valid].sum(), valid.sum().float()])
            else:  # second pass: squared deviations from the global mean
                mean = (x[mask.bool()]).sum() / mask.sum()
                other = ((other_x[valid] - mean) ** 2).sum().reshape(1)
            return (t + other).double()

        return masked_whiten(halves[i][0], halves[i][1], reduce_sum=reduce_sum)

    assert (torch.cat([whiten_half(0), whiten_half(1)]) - whole).abs().max() <= tolerance


def _whitening_tolerance(x: torch.Tensor, mask: torch.Tensor, whitened: torch.Tensor) -> float:
    """How far two float32 whitenings of the same n valid values may differ when they sum in another order.

    A float32 sum of n terms is off by at most n·u·Σ|x_i| ≤ n²·u·max|x| (u = EPS32/2), so the mean by n·u·max|x|,
    which moves every w = (x − mean)/s by n·u·max|x|/s; the variance is off by at most a relative n·u, which moves w
    by n·u·|w|/2; the final subtract, rsqrt and multiply add ~3u·|w|. Two computations that each stay within that
    differ by at most twice it, which EPS32·n·(max|x|/s + max|w|) covers (for n ≥ 6). Here n = 23: 1.3e-5, while
    the measured difference is 6e-8 (float32 rounding of the second pass's mean) and a biased variance in one of
    them would be off by 0.055.
    """
    valid = x[mask.bool()]
    n = valid.numel()
    return n * torch.finfo(torch.float32).eps * float(valid.abs().max() / valid.std() + whitened.abs().max())


def test_more_local_processes_than_gpus_is_refused_with_what_to_do(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # what torchrun sets for 2 processes on this machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(RlhfkitError, match=r"2 processes were launched on this machine but only 1 GPU\(s\)"):
        check_backend(cpu=False)
    with pytest.raises(RlhfkitError, match="CUDA_VISIBLE_DEVICES= accelerate launch"):
        check_backend(cpu=True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_backend(cpu=False)  # one process per GPU is fine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_backend(cpu=True)  # CPU processes on a machine without visible GPUs are fine (what CI launches)
