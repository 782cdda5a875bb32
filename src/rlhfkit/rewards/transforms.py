"""Rewards built from rewards: weighted sums, normalisation (fixed or running) and clipping.

Each wrapper is itself a :class:`~rlhfkit.rewards.base.Reward`, so they nest:
``Clipped(Normalized(classifier, offset, scale), -5, 5)``. Non-finite scores pass through unchanged (as
NaN) and are left out of running statistics, so the caller's :func:`check_scores` still sees them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rlhfkit.errors import RlhfkitError
from rlhfkit.rewards.base import Reward, check_scores, reward_stats, usable_score


def _finite(x: float) -> bool:
    return math.isfinite(x)


class WeightedSum:
    """Σ_i w_i · r_i(prompts, responses), e.g. ``WeightedSum([(not_hate, 1.0), (length, -0.01)])``."""

    def __init__(self, terms: Sequence[tuple[Reward, float]], name: str | None = None) -> None:
        if not terms:
            raise RlhfkitError("a weighted sum of rewards needs at least one (reward, weight) term.")
        for reward, weight in terms:
            if not callable(reward):
                raise RlhfkitError(f"{reward!r} in a weighted sum is not a reward (it cannot be called).")
            if not _finite(float(weight)):
                raise RlhfkitError(f"the weight of reward {getattr(reward, 'name', reward)!r} is {weight}; use a finite number.")
        self.terms = [(reward, float(weight)) for reward, weight in terms]
        self.name = name or " + ".join(f"{w:g}*{getattr(r, 'name', type(r).__name__)}" for r, w in self.terms)
        self.last_components: dict[str, list[float]] = {}
        """The unweighted scores of each term from the latest call (for logging each part of the sum)."""

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        total = [0.0] * len(responses)
        self.last_components = {}
        for index, (reward, weight) in enumerate(self.terms):
            name = getattr(reward, "name", f"term{index}")
            scores = [float(s) for s in reward(prompts, responses)]
            check_scores(scores, len(responses), name)
            key = name if name not in self.last_components else f"{name}#{index}"
            self.last_components[key] = scores
            total = [t + weight * s for t, s in zip(total, scores)]
        return total

    def stats(self) -> dict[str, float]:
        merged: dict[str, float] = {}
        for index, (reward, _) in enumerate(self.terms):
            name = getattr(reward, "name", f"term{index}")
            merged.update({f"{name}/{k}": v for k, v in reward_stats(reward).items()})
        return merged


class Normalized:
    """(r − offset) / scale with a fixed offset and scale, measured once on reference samples.

    Ouyang et al. 2022 (sec. C.2): "At the end of training, we normalize the RM using a bias so that the
    labeler demonstrations achieve a mean score of 0 before doing RL"; dividing by the std as well makes a
    KL coefficient β mean the same thing for every reward model.
    """

    def __init__(self, reward: Reward, offset: float, scale: float, name: str | None = None) -> None:
        if not (_finite(offset) and _finite(scale)) or scale <= 0:
            raise RlhfkitError(
                f"reward normalisation needs a finite offset and a scale > 0, got offset={offset}, scale={scale}."
            )
        self.reward, self.offset, self.scale = reward, float(offset), float(scale)
        self.name = name or getattr(reward, "name", "reward")

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        scores = [float(s) for s in self.reward(prompts, responses)]
        check_scores(scores, len(responses), self.name)
        return [(s - self.offset) / self.scale for s in scores]

    def stats(self) -> dict[str, float]:
        return reward_stats(self.reward)


def measure_offset_scale(
    reward: Reward, prompts: list[str], responses: list[str], min_scale: float = 1e-6
) -> tuple[float, float]:
    """Mean and standard deviation of ``reward`` on reference samples, for :class:`Normalized`.

    Non-finite scores are left out; at least two finite scores are needed. A spread below ``min_scale``
    (every reference scores the same) cannot be divided by and gives an error.
    """
    scores = [float(s) for s in reward(prompts, responses)]
    check_scores(scores, len(responses), getattr(reward, "name", "reward"))
    return offset_scale(scores, min_scale, getattr(reward, "name", "reward"))


def offset_scale(scores: Sequence[float], min_scale: float = 1e-6, name: str = "reward") -> tuple[float, float]:
    """(mean, population std) of the finite ``scores``; raises RlhfkitError when it cannot normalise."""
    finite = [s for s in scores if usable_score(s)]
    if len(finite) < 2:
        raise RlhfkitError(
            f"cannot measure a normalisation for {name!r}: only {len(finite)} finite scores among "
            f"{len(scores)} reference samples; give at least two samples that score a finite number."
        )
    mean = sum(finite) / len(finite)
    std = math.sqrt(sum((s - mean) ** 2 for s in finite) / len(finite))
    if std < min_scale:
        raise RlhfkitError(
            f"every reference sample scores {mean:.6g} under {name!r}, so there is no spread to normalise by; "
            "use more varied reference samples, or normalize with a fixed offset only (scale 1)."
        )
    return mean, std


class RunningNormalized:
    """(r − mean) / std with the mean and std of every score seen so far, this batch included.

    The statistics are merged batch by batch with the parallel formula of Chan, Golub & LeVeque (1979),
    which stays exact where the naive Σx² − (Σx)²/n cancels catastrophically. Until two scores have been
    seen the std is undefined and 1 is used. ``state_dict`` / ``load_state_dict`` carry the statistics
    across a resumed run.
    """

    def __init__(self, reward: Reward, eps: float = 1e-8, name: str | None = None) -> None:
        self.reward, self.eps = reward, eps
        self.name = name or getattr(reward, "name", "reward")
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count >= 2 else 1.0

    def update(self, scores: Sequence[float]) -> None:
        """Merge the finite values of ``scores`` into the running mean and variance."""
        batch = [s for s in scores if usable_score(s)]  # 1e39 would swamp the running statistics for good
        if not batch:
            return
        n_b = len(batch)
        mean_b = sum(batch) / n_b
        m2_b = sum((s - mean_b) ** 2 for s in batch)
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.count * n_b / n
        self.count = n

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        scores = [float(s) for s in self.reward(prompts, responses)]
        check_scores(scores, len(responses), self.name)
        self.update(scores)
        return [(s - self.mean) / (self.std + self.eps) for s in scores]

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])

    def stats(self) -> dict[str, float]:
        return {**reward_stats(self.reward), "running_mean": self.mean, "running_std": self.std}


class Clipped:
    """min(max(r, low), high); either bound may be None (unbounded on that side)."""

    def __init__(self, reward: Reward, low: float | None = None, high: float | None = None,
                 name: str | None = None) -> None:  # fmt: skip
        if low is not None and high is not None and low >= high:
            raise RlhfkitError(f"reward clipping needs low < high, got low={low}, high={high}.")
        self.reward, self.low, self.high = reward, low, high
        self.name = name or getattr(reward, "name", "reward")
        self.clipped = 0
        """How many scores were clipped so far (a reward that is clipped often is badly scaled)."""

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        scores = [float(s) for s in self.reward(prompts, responses)]
        check_scores(scores, len(responses), self.name)
        out = []
        for s in scores:
            c = s
            if _finite(s):  # NaN stays NaN: clipping must not turn a broken score into a bound
                if self.low is not None and s < self.low:
                    c = self.low
                if self.high is not None and s > self.high:
                    c = self.high
            self.clipped += _finite(s) and c != s
            out.append(c)
        return out

    def stats(self) -> dict[str, float]:
        return {**reward_stats(self.reward), "clipped": float(self.clipped)}


def running_normalizers(reward: Any) -> list[RunningNormalized]:
    """Every :class:`RunningNormalized` inside ``reward`` (through sums and wrappers), in a fixed order.

    A resumed PPO run saves ``[n.state_dict() for n in running_normalizers(reward)]`` with its checkpoint
    and loads the states back in the same order, so the normalisation continues where it stopped.
    """
    found: list[RunningNormalized] = []
    if isinstance(reward, RunningNormalized):
        found.append(reward)
    if isinstance(reward, WeightedSum):
        for term, _ in reward.terms:
            found.extend(running_normalizers(term))
    inner = getattr(reward, "reward", None)
    if inner is not None:
        found.extend(running_normalizers(inner))
    return found
