"""Held-out evaluation of a reward model: pairwise accuracy with a 95 % interval, by margin bucket.

Accuracy is the share of held-out pairs whose chosen response scores higher (an exact tie of scores
counts half). Pairs labelled as ties carry no direction and are left out of accuracy (they still
count in the loss). The accuracy by bucket shows whether the model is most reliable where the label
is strongest: buckets follow the labels' margins when the data has them, otherwise the size of the
model's own predicted gap |r_c − r_r| (a calibration view: large gaps should be nearly always right).
"""

from __future__ import annotations

from typing import Any

import torch

from rlhfkit.rewards.losses import bradley_terry_loss, pairwise_correct, wilson_interval


def accuracy_summary(correct: torch.Tensor) -> dict[str, Any]:
    """n, accuracy and its Wilson 95 % interval from a (N,) tensor of 0 / ½ / 1."""
    n = int(correct.numel())
    hits = float(correct.sum()) if n else 0.0
    low, high = wilson_interval(hits, n)
    return {"n": n, "accuracy": hits / n if n else None, "ci_low": low, "ci_high": high}


def _buckets(correct: torch.Tensor, key: torch.Tensor, label: str, max_distinct: int = 6) -> list[dict[str, Any]]:
    """Accuracy per value of ``key`` (few distinct values) or per quartile of it."""
    if correct.numel() == 0:
        return []
    values = torch.unique(key)
    out = []
    if values.numel() <= max_distinct:
        for v in values.tolist():
            sel = key == v
            out.append({"bucket": f"{label} = {v:g}", **accuracy_summary(correct[sel])})
        return out
    edges = torch.quantile(key, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    for q in range(4):
        lo, hi = float(edges[q]), float(edges[q + 1])
        sel = (key >= lo) & ((key <= hi) if q == 3 else (key < hi))
        out.append({"bucket": f"{label} in [{lo:.3g}, {hi:.3g}{']' if q == 3 else ')'}", **accuracy_summary(correct[sel])})
    return out


def pairwise_report(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor,
                    target: torch.Tensor) -> dict[str, Any]:  # fmt: skip
    """Accuracy (ties excluded), mean loss, mean gap and accuracy by bucket, from (N,) tensors."""
    loss = bradley_terry_loss(r_chosen, r_rejected, margin, target)
    directed = target == 1.0
    correct = pairwise_correct(r_chosen[directed], r_rejected[directed])
    gap = (r_chosen - r_rejected)[directed]
    m = margin[directed]
    if bool((m != 0).any()):
        buckets = _buckets(correct, m, "label margin")
    else:
        buckets = _buckets(correct, gap.abs(), "predicted |gap|")
    return {
        **accuracy_summary(correct),
        "ties": int((~directed).sum()),
        "loss": float(loss.mean()) if loss.numel() else None,
        "mean_gap": float(gap.mean()) if gap.numel() else None,
        "by_bucket": buckets,
    }


def label_report(rewards: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Accuracy of sign(reward) against unpaired good (1) / bad (0) labels, from (N,) tensors."""
    correct = ((rewards > 0).float() == labels).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(rewards, labels) if rewards.numel() else None
    return {**accuracy_summary(correct), "loss": float(loss) if loss is not None else None}
