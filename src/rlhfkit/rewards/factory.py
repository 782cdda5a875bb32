"""From a :class:`~rlhfkit.config.RewardConfig` to one callable :class:`Reward`.

Each spec becomes its base reward, then its normalisation, then its clipping; the terms are summed with
their weights (a single term of weight 1 is returned as it is), and the sum is clipped when asked.
"""

from __future__ import annotations

from rlhfkit.config import RewardConfig, RewardSpec
from rlhfkit.errors import RlhfkitError
from rlhfkit.rewards.base import Reward
from rlhfkit.rewards.transforms import Clipped, Normalized, RunningNormalized, WeightedSum


def _base_reward(spec: RewardSpec) -> Reward:
    if spec.kind == "classifier":
        from rlhfkit.rewards.classifier import ClassifierReward

        return ClassifierReward(spec.path, label=spec.label, output=spec.output, input=spec.input,
                                batch_size=spec.batch_size, max_length=spec.max_length, device=spec.device,
                                revision=spec.revision, name=spec.name, pad_token=spec.pad_token)  # fmt: skip
    if spec.kind == "reward_model":
        from rlhfkit.rewards.reward_model import load_reward_model

        return load_reward_model(spec.path, batch_size=spec.batch_size, device=spec.device, name=spec.name)
    if spec.kind == "length":
        from rlhfkit.rewards.length import LengthReward

        return LengthReward(spec.unit, name=spec.name)
    if spec.kind in ("callable", "lexicon"):
        from rlhfkit.rewards import simple  # written with the PPO issue; imported only when asked for

        if spec.kind == "callable":
            return simple.CallableReward(spec.path, name=spec.name)
        return simple.LexiconReward()
    raise RlhfkitError(f"unknown reward kind {spec.kind!r}; use one of classifier, reward_model, callable, lexicon, length.")


def build_spec_reward(spec: RewardSpec) -> Reward:
    """One spec's reward with its normalisation and clipping (its weight is applied by the sum)."""
    problems = spec.problems("reward")
    if problems:
        raise RlhfkitError("invalid reward spec: " + "; ".join(problems))
    reward = _base_reward(spec)
    if spec.name:  # every kind takes the configured name (some constructors have no name argument)
        reward.name = spec.name
    if spec.normalize == "fixed":
        reward = Normalized(reward, spec.offset, spec.scale)
    elif spec.normalize == "running":
        reward = RunningNormalized(reward)
    if spec.clip_min is not None or spec.clip_max is not None:
        reward = Clipped(reward, spec.clip_min, spec.clip_max)
    return reward


def build_reward(cfg: RewardConfig) -> Reward:
    """The reward described by ``cfg``: Σ weight_i · clip(normalise(reward_i)), optionally clipped."""
    cfg.validate()
    terms = [(build_spec_reward(spec), spec.weight) for spec in cfg.rewards]
    reward: Reward = terms[0][0] if len(terms) == 1 and terms[0][1] == 1.0 else WeightedSum(terms)
    if cfg.clip_min is not None or cfg.clip_max is not None:
        reward = Clipped(reward, cfg.clip_min, cfg.clip_max)
    return reward
