"""Configuration of rewards (what PPO, eval and `reward score` use) and of reward-model training.

Frozen dataclasses with a one-line docstring per field, merged and type-checked by OmegaConf through
:func:`rlhfkit.config.load_config` (``schema=RewardConfig`` or ``schema=RewardTrainConfig``); each
top-level schema has a ``validate()`` that reports every broken rule at once.

A reward is a list of specs whose scores are summed with their weights, e.g. in YAML::

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

from rlhfkit.errors import ConfigError
from rlhfkit.runconfig import PRECISIONS, RunConfig

REWARD_KINDS = ("classifier", "reward_model", "callable", "lexicon", "length")
NORMALIZE_MODES = ("none", "fixed", "running")
DATA_FORMATS = ("auto", "trl", "trl-unpaired", "hh-rlhf", "summarize", "rlhfkit")
TIE_MODES = ("drop", "half")


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

    def problems(self, where: str = "rewards") -> list[str]:
        """Every broken rule, with keys prefixed by ``where`` (for embedding in a larger config)."""
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
        problems = self.problems()
        if problems:
            raise ConfigError("invalid reward configuration:\n  - " + "\n  - ".join(problems))


# --------------------------------------------------------------------------------------------------
# Training a reward model from preferences (`rlhfkit reward train`)


@dataclass(frozen=True)
class BackboneConfig:
    name_or_path: str = "backbone:tiny-bert"
    """Hub id, folder, or backbone:NAME (tiny-bert, tiny-roberta, roberta-base-shape, minilm)."""
    revision: str | None = None
    """Hub revision when name_or_path is a hub id."""
    trust_remote_code: bool = False
    """Allow model code from the hub repository to run (only for models you trust)."""
    pad_token: str | None = None
    """Existing token to pad with when the tokenizer has none (decoder-only backbones)."""


@dataclass(frozen=True)
class PreferenceDataConfig:
    train_files: list[str] = field(default_factory=list)
    """Preference files (.jsonl, .jsonl.gz, .json, .parquet) or hub dataset ids; all are read."""
    eval_files: list[str] = field(default_factory=list)
    """Held-out files; empty = hold out test_size of the training prompts."""
    format: str = "auto"
    """auto | trl | trl-unpaired | hh-rlhf | summarize | rlhfkit (the feedback store's export)."""
    hub_split: str = "train"
    """Split read from a hub dataset."""
    input: str = "prompt+response"
    """What the reward model reads: prompt+response (a text pair) or response."""
    max_length: int = 512
    """Most tokens per (prompt, response); longer ones are cut (prompt end first) and counted."""
    ties: str = "drop"
    """Ties: drop them, or count them as half a win for each side (half)."""
    test_size: float = 0.1
    """Fraction of prompts held out (all pairs of a prompt go to the same side)."""
    split_seed: int = 42
    """Seed of the held-out split."""
    max_pairs: int | None = None
    """Use at most this many training examples (null = all)."""


@dataclass(frozen=True)
class RewardTrainingConfig:
    learning_rate: float = 5e-5
    """Peak AdamW learning rate; it decays linearly to 0 by the last step."""
    batch_size: int = 32
    """Preference pairs per optimiser step (all pairs of a prompt stay in one batch, so a step may hold more)."""
    epochs: float = 1.0
    """Passes over the training pairs (one is usual: reward models overfit after one epoch)."""
    max_steps: int = 0
    """Stop after this many steps (0 = use epochs)."""
    warmup_ratio: float = 0.0
    """Fraction of steps with linear learning-rate warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient-norm clipping threshold."""
    use_margin: bool = True
    """Subtract each pair's margin inside the loss: -log sigmoid(r_c - r_r - margin)."""
    center_coefficient: float = 0.0
    """Weight of the reward-centering term mean((r_c + r_r)^2) (Eisenstein et al. 2023; 0.01 is usual)."""
    disable_dropout: bool = True
    """Train with dropout off, so chosen and rejected are scored by the same network."""
    length_sorted: bool = True
    """Batch prompts of similar length together (less padding; pairs only); batch order is still shuffled."""
    eval_batch_size: int = 64
    """Texts per forward pass when evaluating and normalising."""
    log_every: int = 10
    """Write the training loss every N steps."""
    eval_every: int = 0
    """Evaluate held-out accuracy every N steps (0 = only at the end)."""


@dataclass(frozen=True)
class RewardLoraConfig:
    enabled: bool = False
    """Train LoRA adapters (merged into the weights when saved) instead of the full backbone."""
    r: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA scaling numerator: updates are scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the LoRA branch during training."""
    target_modules: list[str] | None = None
    """Module names to adapt; null = peft's default for the architecture."""


@dataclass(frozen=True)
class NormalizeConfig:
    enabled: bool = True
    """After training, shift and scale the reward so that reference responses score mean 0, std 1."""
    reference: str = "all"
    """all (chosen and rejected responses), chosen, or a JSONL file of prompt + response (e.g. SFT samples)."""
    max_samples: int = 1000
    """Most reference responses scored."""


@dataclass(frozen=True)
class RewardTrainConfig:
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/reward"))
    """Where outputs go, seeds, device and precision."""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    """The sequence classifier trained as the reward model (one output)."""
    data: PreferenceDataConfig = field(default_factory=PreferenceDataConfig)
    """Preference data and its encoding."""
    train: RewardTrainingConfig = field(default_factory=RewardTrainingConfig)
    """Optimisation and the loss."""
    lora: RewardLoraConfig = field(default_factory=RewardLoraConfig)
    """Optional LoRA instead of full training."""
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    """The post-training normalisation saved with the model."""

    def validate(self) -> None:
        problems = _train_problems(self)
        if problems:
            raise ConfigError("invalid reward-training configuration:\n  - " + "\n  - ".join(problems))


def _train_problems(cfg: RewardTrainConfig) -> list[str]:
    p: list[str] = []
    run, d, t, lora, norm = cfg.run, cfg.data, cfg.train, cfg.lora, cfg.normalize
    if run.device not in ("auto", "cpu", "cuda") and not run.device.startswith("cuda:"):
        p.append(f"run.device must be 'auto', 'cpu' or 'cuda[:N]', got {run.device!r}")
    if run.precision not in PRECISIONS:
        p.append(f"run.precision must be one of {', '.join(PRECISIONS)}, got {run.precision!r}")
    if not cfg.backbone.name_or_path:
        p.append("backbone.name_or_path is empty: give a hub id, a folder, or backbone:NAME")
    if not d.train_files:
        p.append("data.train_files is empty: give preference files, e.g. --set 'data.train_files=[pairs.jsonl]' "
                 "(`rlhfkit reward make-pairs` writes synthetic ones)")  # fmt: skip
    if d.format not in DATA_FORMATS:
        p.append(f"data.format must be one of {', '.join(DATA_FORMATS)}, got {d.format!r}")
    if d.input not in ("response", "prompt+response"):
        p.append(f"data.input must be response or prompt+response, got {d.input!r}")
    if d.max_length < 8:
        p.append(f"data.max_length must be at least 8 tokens, got {d.max_length}")
    if d.ties not in TIE_MODES:
        p.append(f"data.ties must be drop or half, got {d.ties!r}")
    if not d.eval_files and not 0.0 < d.test_size < 1.0:
        p.append(f"data.test_size must be in (0, 1) when no data.eval_files are given, got {d.test_size}")
    if d.max_pairs is not None and d.max_pairs <= 0:
        p.append("data.max_pairs must be positive or null")
    if t.learning_rate <= 0:
        p.append(f"train.learning_rate must be > 0, got {t.learning_rate}")
    if t.batch_size <= 0 or t.eval_batch_size <= 0:
        p.append("train.batch_size and train.eval_batch_size must be positive")
    if t.max_steps < 0 or (t.max_steps == 0 and t.epochs <= 0):
        p.append("set train.max_steps > 0 or train.epochs > 0")
    if not 0.0 <= t.warmup_ratio < 1.0:
        p.append(f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    if t.center_coefficient < 0 or t.weight_decay < 0 or t.max_grad_norm <= 0:
        p.append("train.center_coefficient and train.weight_decay must be >= 0, train.max_grad_norm > 0")
    if t.log_every <= 0 or t.eval_every < 0:
        p.append("train.log_every must be positive and train.eval_every >= 0")
    if lora.enabled and (lora.r <= 0 or lora.alpha <= 0 or not 0.0 <= lora.dropout < 1.0):
        p.append("lora.r and lora.alpha must be positive and lora.dropout in [0, 1)")
    if norm.max_samples < 2:
        p.append("normalize.max_samples must be at least 2")
    return p
