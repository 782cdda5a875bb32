"""The ``reward`` section: what PPO optimises, a weighted sum of reward terms (docs/rewards.md).

It is also a configuration of its own: ``rlhfkit reward score --config FILE`` reads a bare
:class:`RewardConfig` through :func:`rlhfkit.config.load_config` (``schema=RewardConfig``), where the keys
have no ``reward.`` prefix and at least one term is required. Each term is a :class:`RewardSpec`; terms
are summed with their weights, e.g. in YAML::

    rewards:
      - kind: classifier
        path: facebook/roberta-hate-speech-dynabench-r4-target
        label: nothate
        output: logit
        input: prompt+response
      - kind: length
        weight: -0.01
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhfkit.config.sections import raise_problems

REWARD_KINDS = ("classifier", "reward_model", "callable", "lexicon", "length")
NORMALIZE_MODES = ("none", "fixed", "running")


@dataclass(frozen=True)
class RewardSpec:
    kind: str = "classifier"
    """classifier | reward_model | callable | lexicon | length."""
    path: str = ""
    """Hub id or folder (classifier), `reward train` output folder (reward_model), package.module:function (callable)."""
    label: str | None = None
    """Class to reward, by name (e.g. nothate); required for a classifier with several classes."""
    output: str = "logit"
    """Classifier score: logit, prob or logprob of the label."""
    input: str = "response"
    """What a classifier reads: response, or prompt+response (a text pair). Reward models use their own."""
    batch_size: int = 32
    """Texts per forward pass of a model-based reward."""
    max_length: int | None = None
    """Most tokens per text (null = the classifier's own limit; reward models use their training length)."""
    device: str = "auto"
    """Where a model-based reward runs: auto, cpu, cuda[:N]."""
    revision: str | None = None
    """Hub revision of a classifier given by hub id."""
    pad_token: str | None = None
    """Existing token to pad with when a classifier's tokenizer has none (Llama-based classifiers)."""
    unit: str = "words"
    """Length reward: count words or characters."""
    weight: float = 1.0
    """Factor of this reward in the sum."""
    normalize: str = "none"
    """none | fixed ((r - offset) / scale) | running (running mean and std of all scores seen)."""
    offset: float = 0.0
    """Fixed normalisation: subtracted (e.g. the mean score of reference samples; see `reward score --stats`)."""
    scale: float = 1.0
    """Fixed normalisation: divided by (e.g. the std of reference samples)."""
    clip_min: float | None = None
    """Lower bound applied after normalisation (null = none)."""
    clip_max: float | None = None
    """Upper bound applied after normalisation (null = none)."""
    name: str | None = None
    """Name in logs and metrics (null = derived from kind, path and label)."""

    def problems(self, where: str) -> list[str]:
        """Every broken rule, keys prefixed by ``where`` (a term sits in several places: reward.rewards[i], eval.toxicity)."""
        p: list[str] = []
        if self.kind not in REWARD_KINDS:
            p.append(f"{where}.kind must be one of {', '.join(REWARD_KINDS)}, got {self.kind!r}")
        if self.kind in ("classifier", "reward_model", "callable") and not self.path:
            what = {"classifier": "a hub id or folder", "reward_model": "the output folder of `rlhfkit reward train`",
                    "callable": "package.module:function"}[self.kind]  # fmt: skip
            p.append(f"{where}.path is empty: a {self.kind} reward needs {what}")
        if self.kind == "callable" and self.path and ":" not in self.path:
            p.append(f"{where}.path must look like package.module:function, got {self.path!r}")
        if self.output not in ("logit", "prob", "logprob"):
            p.append(f"{where}.output must be logit, prob or logprob, got {self.output!r}")
        if self.input not in ("response", "prompt+response"):
            p.append(f"{where}.input must be response or prompt+response, got {self.input!r}")
        if self.unit not in ("words", "characters"):
            p.append(f"{where}.unit must be words or characters, got {self.unit!r}")
        if self.batch_size <= 0 or (self.max_length is not None and self.max_length <= 0):
            p.append(f"{where}.batch_size and {where}.max_length must be positive")
        if self.normalize not in NORMALIZE_MODES:
            p.append(f"{where}.normalize must be one of {', '.join(NORMALIZE_MODES)}, got {self.normalize!r}")
        if self.normalize == "fixed" and self.scale <= 0:
            p.append(f"{where}.scale must be > 0 for fixed normalisation, got {self.scale}")
        if self.clip_min is not None and self.clip_max is not None and self.clip_min >= self.clip_max:
            p.append(f"{where}.clip_min ({self.clip_min}) must be below clip_max ({self.clip_max})")
        return p


@dataclass(frozen=True)
class RewardConfig:
    rewards: list[RewardSpec] = field(default_factory=list)
    """The reward terms; the reward is the sum of each term's (normalised, clipped) score times its weight."""
    clip_min: float | None = None
    """Lower bound on the summed reward (null = none)."""
    clip_max: float | None = None
    """Upper bound on the summed reward (null = none)."""

    def problems(self) -> list[str]:
        """As the ``reward`` section of the main configuration, where it may be empty: SFT needs no reward, and
        PPO checks that one is given before it starts."""
        return self.terms_problems("reward.rewards") if self.rewards else []

    def terms_problems(self, where: str = "rewards") -> list[str]:
        """Every broken rule (no terms is one), with keys prefixed by ``where``."""
        p: list[str] = []
        if not self.rewards:
            p.append(f"{where} is empty: give at least one reward spec (kind: classifier, reward_model, ...)")
        for i, spec in enumerate(self.rewards):
            p.extend(spec.problems(f"{where}[{i}]"))
        if self.clip_min is not None and self.clip_max is not None and self.clip_min >= self.clip_max:
            section = where.rpartition(".")[0]  # "reward" inside the main config, "" on its own
            key = f"{section}." if section else ""
            p.append(f"{key}clip_min ({self.clip_min}) must be below {key}clip_max ({self.clip_max})")
        return p

    def validate(self) -> None:
        """As a configuration of its own (``rlhfkit reward score --config FILE``)."""
        raise_problems(self.terms_problems(), "reward configuration")
