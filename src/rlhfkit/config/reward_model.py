"""The configuration of ``rlhfkit reward train``: a reward model trained on preference pairs (docs/rewards.md).

A top-level configuration of its own, read with :func:`rlhfkit.config.load_config`
(``schema=RewardTrainConfig``). It shares the ``run`` section with the main configuration, and its ``lora``
section is the main one's LoRA settings plus an on/off switch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhfkit.config.model import LoraSettings
from rlhfkit.config.run import RunConfig
from rlhfkit.config.sections import check, problems_of

DATA_FORMATS = ("auto", "trl", "trl-unpaired", "hh-rlhf", "summarize", "rlhfkit")
TIE_MODES = ("drop", "half")


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

    def problems(self) -> list[str]:
        if not self.name_or_path:
            return ["backbone.name_or_path is empty: give a hub id, a folder, or backbone:NAME"]
        return []


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

    def problems(self) -> list[str]:
        p: list[str] = []
        if not self.train_files:
            p.append("data.train_files is empty: give preference files, e.g. --set 'data.train_files=[pairs.jsonl]' "
                     "(`rlhfkit reward make-pairs` writes synthetic ones)")  # fmt: skip
        if self.format not in DATA_FORMATS:
            p.append(f"data.format must be one of {', '.join(DATA_FORMATS)}, got {self.format!r}")
        if self.input not in ("response", "prompt+response"):
            p.append(f"data.input must be response or prompt+response, got {self.input!r}")
        if self.max_length < 8:
            p.append(f"data.max_length must be at least 8 tokens, got {self.max_length}")
        if self.ties not in TIE_MODES:
            p.append(f"data.ties must be drop or half, got {self.ties!r}")
        if not self.eval_files and not 0.0 < self.test_size < 1.0:
            p.append(f"data.test_size must be in (0, 1) when no data.eval_files are given, got {self.test_size}")
        if self.max_pairs is not None and self.max_pairs <= 0:
            p.append("data.max_pairs must be positive or null")
        return p


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

    def problems(self) -> list[str]:
        p: list[str] = []
        if self.learning_rate <= 0:
            p.append(f"train.learning_rate must be > 0, got {self.learning_rate}")
        if self.batch_size <= 0 or self.eval_batch_size <= 0:
            p.append("train.batch_size and train.eval_batch_size must be positive")
        if self.max_steps < 0 or (self.max_steps == 0 and self.epochs <= 0):
            p.append("set train.max_steps > 0 or train.epochs > 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            p.append(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.center_coefficient < 0 or self.weight_decay < 0 or self.max_grad_norm <= 0:
            p.append("train.center_coefficient and train.weight_decay must be >= 0, train.max_grad_norm > 0")
        if self.log_every <= 0 or self.eval_every < 0:
            p.append("train.log_every must be positive and train.eval_every >= 0")
        return p


@dataclass(frozen=True)
class RewardLoraConfig(LoraSettings):
    """The LoRA section of the main configuration (rank, scale, dropout, targets and their rules), off by default."""

    r: int = 16
    """LoRA rank of the reward model's adapters."""
    enabled: bool = False
    """Train LoRA adapters (merged into the weights when saved) instead of the full backbone."""

    def problems(self) -> list[str]:
        return super().problems() if self.enabled else []


@dataclass(frozen=True)
class NormalizeConfig:
    enabled: bool = True
    """After training, shift and scale the reward so that reference responses score mean 0, std 1."""
    reference: str = "all"
    """all (chosen and rejected responses), chosen, or a JSONL file of prompt + response (e.g. SFT samples)."""
    max_samples: int = 1000
    """Most reference responses scored."""

    def problems(self) -> list[str]:
        return ["normalize.max_samples must be at least 2"] if self.max_samples < 2 else []


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

    def problems(self) -> list[str]:
        """Every broken rule of every section."""
        return problems_of(self, RewardTrainConfig)

    def validate(self) -> None:
        check(self, RewardTrainConfig, "reward-training configuration")
