"""Direct preference optimisation losses on pairs of sequence log-probabilities.

Every function takes, per preference pair, the summed log-probability of the chosen and of the rejected
response under the policy being trained and under the frozen reference (the SFT model), as (B,) tensors,
and returns a (B,) tensor of per-pair losses (the caller averages). How the log-probabilities are summed
(over response tokens, with the EOS token counted, exactly as PPO scores a response) is the caller's; a
length-normalised variant divides each sum by its response length first (:func:`log_ratios`).

The log-ratio margin of a pair is h = (log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r)), and
DPO's implicit reward of a response is β·(log π(y) − log π_ref(y)) (Rafailov et al. 2023).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "ImplicitRewards",
    "conservative_dpo_loss",
    "dpo_loss",
    "implicit_rewards",
    "ipo_loss",
    "log_ratios",
    "robust_dpo_loss",
    "tie_loss",
]


def _same_shape(*tensors: torch.Tensor) -> None:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"expected (B,) tensors of one shape, got shapes {[tuple(t.shape) for t in tensors]}")


def log_ratios(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """h, the (B,) log-ratio margin of each pair; with lengths, of the per-token mean log-probs instead.

    Length normalisation (dividing each sequence's log-ratio by its number of response tokens) removes
    the sum's pull towards longer responses, one of the ways DPO is known to reward length (Park et al.
    2024, "Disentangling Length from Quality in Direct Preference Optimization"; Meng et al. 2024, SimPO).

    Args:
        policy_chosen, policy_rejected: (B,) summed log π of each response (carry the gradient).
        reference_chosen, reference_rejected: (B,) summed log π_ref (no gradient needed).
        chosen_lengths, rejected_lengths: optional (B,) response token counts (> 0), both or neither.
    """
    _same_shape(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    chosen = policy_chosen - reference_chosen
    rejected = policy_rejected - reference_rejected
    if (chosen_lengths is None) != (rejected_lengths is None):
        raise ValueError("give both chosen_lengths and rejected_lengths, or neither")
    if chosen_lengths is not None and rejected_lengths is not None:
        _same_shape(chosen, chosen_lengths, rejected_lengths)
        if bool((chosen_lengths <= 0).any()) or bool((rejected_lengths <= 0).any()):
            raise ValueError("response lengths must be positive token counts")
        chosen = chosen / chosen_lengths
        rejected = rejected / rejected_lengths
    return chosen - rejected


def dpo_loss(h: torch.Tensor, beta: float, margin: torch.Tensor | float = 0.0,
             length_penalty: torch.Tensor | float = 0.0) -> torch.Tensor:  # fmt: skip
    """DPO's sigmoid loss −log σ(β·h − margin − length_penalty), per pair (Rafailov et al. 2023, eq. 7).

    ``margin`` (≥ 0, per pair or one number) asks the chosen response to win by at least that much: the
    labeled strength of a preference (slightly / clearly / much) as an offset, as in ODPO (Amini et al.
    2024, "Direct Preference Optimization with an Offset"). ``length_penalty`` is R-DPO's α·(|y_c| − |y_r|)
    (Park et al. 2024): a chosen response longer than the rejected one must win by more.
    """
    _check_beta(beta)
    return -F.logsigmoid(beta * h - margin - length_penalty)


def conservative_dpo_loss(h: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    """cDPO: DPO with label smoothing ε, for labels that are wrong with probability ε (Mitchell 2023, "A note
    on DPO with noisy preferences & relationship to IPO"): −(1 − ε)·log σ(β·h) − ε·log σ(−β·h).

    Its minimum is at a finite margin (σ(β·h) = 1 − ε), so a pair cannot be pushed apart without bound.
    """
    _check_beta(beta)
    _check_smoothing(label_smoothing, upper=0.5, closed=True)
    z = beta * h
    return -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)


def robust_dpo_loss(h: torch.Tensor, beta: float, flip_rate: float) -> torch.Tensor:
    """rDPO: the unbiased estimate of the clean-label DPO loss when each label is flipped with probability
    ε < 1/2 (Chowdhury et al. 2024, "Provably Robust DPO"):
    [(1 − ε)·(−log σ(β·h)) − ε·(−log σ(−β·h))] / (1 − 2ε).

    Unlike cDPO its expectation over the label noise equals the loss on clean labels; a single pair's value
    can be negative.
    """
    _check_beta(beta)
    _check_smoothing(flip_rate, upper=0.5, closed=False)
    z = beta * h
    return ((1 - flip_rate) * -F.logsigmoid(z) - flip_rate * -F.logsigmoid(-z)) / (1 - 2 * flip_rate)


def ipo_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    """IPO: (h − 1/(2β))², a squared loss that pulls each margin to a finite target instead of pushing it
    to infinity when a preference is deterministic (Azar et al. 2024, "A General Theoretical Paradigm to
    Understand Learning from Human Preferences", eq. 17; β is their τ)."""
    _check_beta(beta)
    return (h - 1 / (2 * beta)) ** 2


def tie_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    """A tie used as a half win for each side: ½·(−log σ(β·h)) + ½·(−log σ(−β·h)), least at h = 0 (the two
    responses equally likely relative to the reference). This is cDPO with ε = ½."""
    return conservative_dpo_loss(h, beta, 0.5)


@dataclass(frozen=True)
class ImplicitRewards:
    """DPO's implicit rewards of a batch of pairs (detached), for the statistics of every step."""

    chosen: torch.Tensor
    """(B,) β·(log π(y_c) − log π_ref(y_c))."""
    rejected: torch.Tensor
    """(B,) β·(log π(y_r) − log π_ref(y_r))."""

    @property
    def margins(self) -> torch.Tensor:
        """(B,) chosen − rejected."""
        return self.chosen - self.rejected

    @property
    def accuracy(self) -> float:
        """Share of pairs whose chosen response has the higher implicit reward (a tie counts as wrong)."""
        return float((self.margins > 0).float().mean())


def implicit_rewards(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
                     reference_rejected: torch.Tensor, beta: float) -> ImplicitRewards:  # fmt: skip
    """The implicit rewards of each pair's two responses (all (B,) summed log-probs; detached)."""
    _same_shape(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    _check_beta(beta)
    return ImplicitRewards(beta * (policy_chosen - reference_chosen).detach(),
                           beta * (policy_rejected - reference_rejected).detach())  # fmt: skip


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def _check_smoothing(value: float, upper: float, closed: bool) -> None:
    if not (0 <= value <= upper if closed else 0 <= value < upper):
        bracket = "]" if closed else ")"
        raise ValueError(f"the label-noise rate must be in [0, {upper}{bracket}, got {value}")
