"""Rolling back an update that made the weights or the gradient norm non-finite (rlhfkit.engine.guard)."""

from __future__ import annotations

import math

import torch

from rlhfkit.engine.guard import UpdateSnapshot, update_diverged


def _objects():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5**s)
    return layer, optimizer, scheduler


def _update(layer, optimizer, scheduler, x):
    layer(x).pow(2).sum().backward()
    norm = float(torch.nn.utils.clip_grad_norm_(layer.parameters(), 1.0))
    optimizer.step()
    optimizer.zero_grad()
    scheduler.step()
    return norm


def test_a_diverged_update_is_undone_exactly():
    layer, optimizer, scheduler = _objects()
    _update(layer, optimizer, scheduler, torch.ones(3, 4))  # some optimiser state and a scheduler step to keep
    params = [p.detach().clone() for p in layer.parameters()]
    moments = {k: v.clone() for k, v in optimizer.state[layer.weight].items()}
    lr = scheduler.get_last_lr()

    snapshot = UpdateSnapshot.capture(list(layer.parameters()), optimizer, scheduler)
    norm = _update(layer, optimizer, scheduler, torch.full((3, 4), 1e38))  # squares overflow: inf loss, NaN grads
    assert update_diverged(list(layer.parameters()), [norm])
    snapshot.restore(optimizer, scheduler)

    assert all(torch.equal(p, q) for p, q in zip(layer.parameters(), params))
    assert all(torch.equal(optimizer.state[layer.weight][k], v) for k, v in moments.items())
    assert scheduler.get_last_lr() == lr and all(p.grad is None for p in layer.parameters())
    # training goes on from there as if the bad update had never happened
    twin, twin_opt, twin_sched = _objects()
    _update(twin, twin_opt, twin_sched, torch.ones(3, 4))
    _update(layer, optimizer, scheduler, torch.ones(3, 4))
    _update(twin, twin_opt, twin_sched, torch.ones(3, 4))
    assert all(torch.equal(p, q) for p, q in zip(layer.parameters(), twin.parameters()))


def test_divergence_is_a_non_finite_weight_or_gradient_norm_and_every_process_agrees():
    weights = [torch.ones(3), torch.zeros(2)]
    assert not update_diverged(weights, [0.5, 2.0])
    assert update_diverged(weights, [0.5, math.inf])  # clipping an infinite norm zeroes the gradient, but still
    assert update_diverged(weights, [math.nan])
    assert update_diverged([torch.ones(3), torch.tensor([0.0, math.inf])], [1.0])
    # another process saw a bad update: this one rolls back too (its weights would drift apart otherwise)
    assert update_diverged(weights, [1.0], reduce_sum=lambda flags: torch.tensor(flags) + 1)
    assert not update_diverged(weights, [1.0], reduce_sum=lambda flags: torch.tensor(flags))
