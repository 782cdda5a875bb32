"""A reward model written by `rlhfkit reward train`, loaded as a reward with its normalisation.

The folder is an ordinary ``save_pretrained`` folder of a one-output sequence classifier (LoRA weights
merged in), its tokenizer, and ``rlhfkit_reward.json``: how texts were encoded (input mode, maximum
length) and the offset and scale that make reference responses score mean 0, std 1. Loading applies
the same encoding and ``(logit − offset) / scale``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.errors import RlhfkitError
from rlhfkit.rewards.base import Reward
from rlhfkit.rewards.classifier import ClassifierReward
from rlhfkit.rewards.transforms import Normalized

REWARD_META = "rlhfkit_reward.json"
MODEL_SUBDIR = "reward_model"
REWARD_FORMAT_VERSION = 1


@dataclass(frozen=True)
class RewardModelMeta:
    """What ``rlhfkit_reward.json`` records next to the weights."""

    input: str
    """How texts were encoded in training: 'response' or 'prompt+response'."""
    max_length: int
    """Most tokens per text in training (also used when scoring)."""
    offset: float = 0.0
    """Mean raw score of the reference responses (subtracted)."""
    scale: float = 1.0
    """Standard deviation of the raw scores of the reference responses (divided by)."""
    reference: str = ""
    """What the offset and scale were measured on."""
    backbone: str = ""
    """The backbone the reward model was trained from."""
    format_version: int = REWARD_FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    """Training facts (pairs, held-out accuracy) for the curious reader."""

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / REWARD_META
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: str | Path) -> RewardModelMeta:
        path = Path(folder) / REWARD_META
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise RlhfkitError(f"cannot read {path}: {e}; the reward-model folder is damaged, train it again.") from None
        if raw.get("format_version") != REWARD_FORMAT_VERSION:
            raise RlhfkitError(
                f"{path} has format version {raw.get('format_version')!r}, this rlhfkit reads version "
                f"{REWARD_FORMAT_VERSION}; retrain the reward model with this version."
            )
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)


def find_reward_model_dir(path: str | Path) -> Path:
    """The model folder of a `reward train` output: ``path`` itself or ``path/reward_model``."""
    p = Path(path).expanduser()
    for candidate in (p, p / MODEL_SUBDIR):
        if (candidate / REWARD_META).is_file():
            return candidate
    if not p.exists():
        raise RlhfkitError(f"reward-model folder {str(p)!r} does not exist; give the output folder of `rlhfkit reward train`.")
    raise RlhfkitError(
        f"{str(p)!r} is not a reward model written by `rlhfkit reward train` (no {REWARD_META} in it or in "
        f"{MODEL_SUBDIR}/). To use another classifier checkpoint as a reward, use kind: classifier with a label."
    )


def load_reward_model(
    path: str | Path,
    batch_size: int = 32,
    device: str = "auto",
    normalize: bool = True,
    name: str | None = None,
) -> Reward:
    """The reward of a trained reward model: its logit, normalised with the saved offset and scale."""
    folder = find_reward_model_dir(path)
    meta = RewardModelMeta.read(folder)
    shown = name or f"reward_model:{Path(path).name}"
    raw = ClassifierReward(str(folder), label=None, output="logit", input=meta.input, batch_size=batch_size,
                           max_length=meta.max_length, device=device, name=shown)  # fmt: skip
    if not normalize:
        return raw
    return Normalized(raw, meta.offset, meta.scale, name=shown)
