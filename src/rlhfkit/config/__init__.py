"""Configuration: one frozen dataclass per section, merged, type-checked and validated on loading.

A run's configuration comes from three layers, later ones winning:

1. the defaults written in the dataclasses,
2. zero or more YAML files (``--config configs/sft-tiny-t5.yaml``),
3. dotted command-line overrides (``--set sft.learning_rate=1e-4``).

:func:`load_config` checks every file and override against the dataclasses (see :mod:`rlhfkit.config.loading`:
one-line messages that name the file or override, the key, the expected type and the given value, and list the
valid keys for an unknown one), then the rules of every section (:meth:`Config.validate`) before any work starts.

Each section is a module of this package: ``run``, ``model`` (with the LoRA sections), ``data``, ``generation``,
``sft``, ``ppo``, ``rewards`` (the ``reward`` section), ``evaluation`` (the ``eval`` section). A section holds
its fields, each followed by a one-line docstring that ``rlhfkit config --explain`` prints, and its own
``problems()`` (:mod:`rlhfkit.config.sections` says what a section is). :class:`Config` below lists the sections
of a training run; ``rlhfkit reward train`` has a configuration of its own in :mod:`rlhfkit.config.reward_model`.
Adding an algorithm means adding one section module and one field of :class:`Config` (docs/config.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rlhfkit.config.data import DEFAULT_TEMPLATE, DataConfig, SyntheticCorpusConfig
from rlhfkit.config.evaluation import EvalConfig, parse_policy
from rlhfkit.config.files import save_config, to_yaml
from rlhfkit.config.generation import GenerationConfig
from rlhfkit.config.loading import explain, field_docs, load_structured, replace
from rlhfkit.config.model import LoraConfig, LoraSettings, ModelConfig
from rlhfkit.config.ppo import PPOConfig
from rlhfkit.config.reward_model import RewardTrainConfig
from rlhfkit.config.rewards import RewardConfig, RewardSpec
from rlhfkit.config.run import PRECISIONS, RunConfig
from rlhfkit.config.sections import check, problems_of
from rlhfkit.config.sft import SFTConfig

__all__ = [
    "DEFAULT_TEMPLATE", "PRECISIONS", "Config", "DataConfig", "EvalConfig", "GenerationConfig", "LoraConfig",
    "LoraSettings", "ModelConfig", "PPOConfig", "RewardConfig", "RewardSpec", "RewardTrainConfig", "RunConfig",
    "SFTConfig", "SyntheticCorpusConfig", "explain", "field_docs", "load_config", "parse_policy", "replace",
    "save_config", "to_yaml",
]  # fmt: skip


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    """Where outputs go, seeds, device and precision."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The base model."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """The LoRA adapter."""
    data: DataConfig = field(default_factory=DataConfig)
    """Prompts and reference summaries."""
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    """Sampling settings for evaluation and rollouts."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """Supervised fine-tuning."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO with a KL penalty against a frozen reference."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """What PPO optimises: a weighted sum of reward terms (classifier, reward model, callable, lexicon, ...)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """`rlhfkit eval`: which policies, prompts and scorers, and the statistics."""

    def problems(self) -> list[str]:
        """Every broken rule of every section, in section order."""
        return problems_of(self, Config)

    def validate(self) -> None:
        """Raise one ConfigError listing every broken rule of every section."""
        check(self, Config)


def load_config(
    files: str | os.PathLike | Sequence[str | os.PathLike] = (),
    overrides: str | Sequence[str] = (),
    schema: type = Config,
) -> Any:
    """Merge defaults, YAML ``files`` and ``key=value`` ``overrides``; type-check; validate.

    Raises ConfigError with a one-line message naming the file or override and the key (listing the
    valid keys for an unknown one), or with the broken rules of ``schema.validate()``.
    """
    return load_structured(schema, files, overrides)
