"""Reward-model losses and the statistics of pairwise accuracy: small pure functions, tensors only.

Bradley–Terry (Bradley & Terry, 1952, "Rank analysis of incomplete block designs") models the chance
that a labeler prefers response a over b as σ(r(a) − r(b)); training maximises the likelihood of the
labels, i.e. minimises −log σ(r_chosen − r_rejected) (Stiennon et al. 2020, "Learning to summarize from
human feedback"; Ouyang et al. 2022, eq. 1). Llama 2 (Touvron et al. 2023, sec. 3.2.2) subtracts a
margin m(r) that grows with the stated strength of the preference: −log σ(r_c − r_r − m), so a
"much better" label asks for a larger gap than a "slightly better" one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Z_95 = 1.959963984540054  # the 97.5 % quantile of the standard normal: a two-sided 95 % interval


def bradley_terry_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pair Bradley–Terry loss.

    Args:
        r_chosen: (B,) rewards of the preferred responses.
        r_rejected: (B,) rewards of the other responses.
        margin: (B,) required reward gap, or None for 0.
        target: (B,) probability that ``chosen`` wins: 1 for a preference, 0.5 for a tie counted as half a
            win; None means all 1.

    Returns:
        (B,) losses −[t · log σ(d) + (1 − t) · log σ(−d)] with d = r_chosen − r_rejected − margin. With t = 1
        this is −log σ(d). ``logsigmoid`` keeps it finite for large |d|.
    """
    d = r_chosen - r_rejected
    if margin is not None:
        d = d - margin
    if target is None:
        return -F.logsigmoid(d)
    return -(target * F.logsigmoid(d) + (1.0 - target) * F.logsigmoid(-d))


def centering_penalty(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Mean of (r_chosen + r_rejected)² over the batch: a scalar.

    The Bradley–Terry loss sees only differences, so a constant can drift into every reward. Eisenstein et
    al. 2023 ("Helping or Herding? Reward model ensembles mitigate but do not eliminate reward hacking",
    eq. 2) add this term, times a small coefficient (0.01), to keep rewards centred on zero.

    Args:
        r_chosen, r_rejected: (B,) rewards.
    """
    return ((r_chosen + r_rejected) ** 2).mean()


def binary_reward_loss(rewards: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example logistic loss for unpaired good/bad labels (a reward > 0 means "good").

    Args:
        rewards: (B,) reward logits.
        labels: (B,) 1.0 for a good completion, 0.0 for a bad one.

    Returns:
        (B,) −[y · log σ(r) + (1 − y) · log σ(−r)].
    """
    return F.binary_cross_entropy_with_logits(rewards, labels.to(rewards.dtype), reduction="none")


def pairwise_correct(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """(B,) 1 where the chosen response scores higher, 0 where lower, ½ for an exact tie of scores.

    A tie scores half so that a constant reward model gets exactly 50 %, not 0 % or 100 %.
    """
    return (r_chosen > r_rejected).float() + 0.5 * (r_chosen == r_rejected).float()


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion (Wilson, 1927); (0, 1) when n is 0.

    Preferred over the normal approximation p ± z·√(p(1−p)/n), which gives a zero-width interval at
    p = 1 and can leave [0, 1] — exactly the regime of a reward model near 100 % accuracy.
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
