"""The reward sections moved to the configuration package, a foundation every layer may import:
:mod:`rlhfkit.config.rewards` (``RewardSpec``, ``RewardConfig``) and :mod:`rlhfkit.config.reward_model`
(``RewardTrainConfig``, the configuration of ``rlhfkit reward train``). These names stay importable from here
for callers not yet switched to ``from rlhfkit.config import ...``; new code imports them from there.
"""

from __future__ import annotations

from rlhfkit.config.reward_model import RewardTrainConfig
from rlhfkit.config.rewards import RewardConfig, RewardSpec

__all__ = ["RewardConfig", "RewardSpec", "RewardTrainConfig"]
