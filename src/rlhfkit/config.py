"""Configuration: one frozen dataclass per concern, merged and type-checked on loading.

A run's configuration comes from three layers, later ones winning:

1. the defaults written in the dataclasses below,
2. zero or more YAML files (``--config configs/sft-tiny-t5.yaml``),
3. dotted command-line overrides (``--set sft.learning_rate=1e-4``).

:func:`load_config` checks every file and override against the dataclasses (see
:mod:`rlhfkit.config_loading`: one-line messages that name the file or override, the key, the expected
type and the given value, and list the valid keys for an unknown one), then runs the cross-field rules
of :meth:`Config.validate` before any work starts. Each field is followed by a one-line docstring,
which ``rlhfkit config --explain`` prints next to the value.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# rlhfkit.config is where callers import these from; they work on every schema, so they live apart
from rlhfkit.config_files import save_config, to_yaml  # noqa: F401
from rlhfkit.config_loading import explain, field_docs, load_structured, replace  # noqa: F401
from rlhfkit.errors import ConfigError
from rlhfkit.rewards.config import RewardConfig, RewardSpec
from rlhfkit.runconfig import PRECISIONS, RunConfig

# The course lab's prompt: the instruction, the dialogue, then a cue for the summary.
DEFAULT_TEMPLATE = "Summarize the following conversation.\n\n{dialogue}\n\nSummary: "

@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = "preset:tiny-t5"
    """Hub id (google/flan-t5-base), local folder, or preset:NAME (see `rlhfkit presets`)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when name_or_path is a hub id."""
    trust_remote_code: bool = False
    """Allow model code from the hub repository to run (only for models you trust)."""
    pad_token: str | None = None
    """Existing token to pad with when the tokenizer has none (never the EOS token for decoder-only)."""
    fused_activations: bool = True
    """Run the tanh-GELU of FLAN-T5 / GPT-2 ('gelu_new') as PyTorch's one fused kernel (same function to ~2e-7)."""


@dataclass(frozen=True)
class LoraConfig:
    r: int = 32
    """LoRA rank (the course lab uses 32)."""
    alpha: int = 32
    """LoRA scaling numerator: updates are scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the LoRA branch during training (off during rollouts)."""
    target_modules: list[str] | None = None
    """Module names to adapt; null = peft's default for the architecture (T5: q, v; Llama: q_proj, v_proj)."""
    modules_to_save: list[str] | None = None
    """Modules trained in full next to the adapter (e.g. lm_head for randomly initialised presets)."""
    adapter_path: str | None = None
    """An existing adapter folder to continue training instead of a fresh adapter."""


@dataclass(frozen=True)
class SyntheticCorpusConfig:
    size: int = 3000
    """Number of dialogues generated."""
    toxic_fraction: float = 0.3
    """Share of reference summaries that contain an insult from the lexicon."""
    seed: int = 0
    """Seed of the corpus generator (same seed, same corpus)."""


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"
    """'synthetic' (built-in corpus), a hub dataset id (knkarthick/dialogsum), or a .jsonl/.json/.csv/.parquet file."""
    split: str = "train"
    """Split to read from a hub dataset (local files have a single split)."""
    dialogue_column: str = "dialogue"
    """Column holding the dialogue."""
    summary_column: str = "summary"
    """Column holding the reference summary."""
    template: str = DEFAULT_TEMPLATE
    """Prompt template; {dialogue} is replaced by the dialogue."""
    min_chars: int = 200
    """Keep dialogues strictly longer than this many characters (the lab: 200)."""
    max_chars: int = 1000
    """Keep dialogues at most this many characters long (the lab: 1000)."""
    test_size: float = 0.1
    """Fraction of examples held out for evaluation."""
    split_seed: int = 42
    """Seed of the train/test split."""
    max_train_examples: int | None = None
    """Cap on training examples after filtering (null = all)."""
    synthetic: SyntheticCorpusConfig = field(default_factory=SyntheticCorpusConfig)
    """Settings of the built-in corpus (used when source = synthetic)."""


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 48
    """Most tokens generated per response."""
    min_new_tokens: int = 0
    """Fewest tokens generated before EOS is allowed."""
    do_sample: bool = True
    """Sample (True) or decode greedily (False)."""
    temperature: float = 1.0
    """Sampling temperature; log-probs everywhere are computed from logits / temperature."""
    top_k: int = 0
    """Keep only the k most likely tokens when sampling (0 = off)."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 = off)."""
    max_prompt_tokens: int = 512
    """Prompts longer than this many tokens are rejected with an error."""
    batch_size: int = 32
    """Prompts per generation batch."""


@dataclass(frozen=True)
class SFTConfig:
    learning_rate: float = 1e-3
    """Peak AdamW learning rate for the adapter."""
    batch_size: int = 16
    """Examples per optimiser step (before gradient accumulation)."""
    gradient_accumulation_steps: int = 1
    """Micro-batches accumulated per optimiser step."""
    epochs: float = 1.0
    """Passes over the training data (ignored when max_steps > 0)."""
    max_steps: int = 0
    """Stop after this many optimiser steps (0 = use epochs)."""
    warmup_ratio: float = 0.05
    """Fraction of steps with linear learning-rate warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient-norm clipping threshold."""
    max_source_tokens: int = 512
    """Prompts are truncated to this many tokens for training."""
    max_target_tokens: int = 96
    """Summaries are truncated to this many tokens for training."""
    log_every: int = 10
    """Write training metrics every N steps."""
    eval_every: int = 0
    """Evaluate loss and ROUGE every N steps (0 = only at the end)."""
    eval_examples: int = 128
    """Held-out examples used for ROUGE and the toxicity sample."""


@dataclass(frozen=True)
class PPOConfig:
    steps: int = 50
    """PPO steps (each: a batch of rollouts, then ppo_epochs of updates)."""
    batch_size: int = 16
    """Prompts (and responses) per PPO step."""
    mini_batch_size: int = 4
    """Responses per optimiser step; must divide batch_size."""
    micro_batch_size: int = 4
    """Responses per forward/backward pass (gradient accumulation); must divide mini_batch_size."""
    ppo_epochs: int = 1
    """Passes over each batch of rollouts; mini-batches are reshuffled every pass."""
    learning_rate: float = 1.41e-5
    """AdamW learning rate of the adapter and value head (the course lab: 1.41e-5)."""
    lr_schedule: str = "constant"
    """constant, linear (decay to 0) or cosine."""
    warmup_steps: int = 0
    """Optimiser steps of linear warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient-norm clipping threshold."""
    clip_eps: float = 0.2
    """PPO clip range of the probability ratio (Schulman et al. 2017)."""
    value_clip: float = 0.2
    """Clip range of the value update around the rollout's values."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    entropy_coef: float = 0.0
    """Weight of an entropy bonus (0 = none, as in lm-human-preferences)."""
    gamma: float = 1.0
    """Discount of GAE."""
    lam: float = 0.95
    """λ of GAE."""
    kl_estimator: str = "k1"
    """Per-token KL estimator in the reward: k1 (log-ratio), k2 (half squared log-ratio) or k3."""
    kl_coef: float = 0.2
    """β of the KL penalty (the initial β when adaptive_kl is true)."""
    adaptive_kl: bool = False
    """Adapt β towards kl_target (Ziegler et al. 2019)."""
    kl_target: float = 6.0
    """Target KL (summed over a response) of the adaptive controller."""
    kl_horizon: int = 10000
    """Horizon of the adaptive controller, in responses."""
    whiten_rewards: bool = False
    """Whiten per-token rewards over the batch before GAE."""
    no_eos_penalty: float | None = None
    """Subtract this from the score of a response that never produced EOS (null = no penalty)."""
    target_approx_kl: float | None = None
    """Stop the step's remaining updates once approx-KL(old, new) exceeds this (null = never)."""
    update_dropout: bool = False
    """Dropout (the model's and LoRA's) during the update; off as in TRL's PPOTrainer and torchtune's PPO recipe."""
    bf16_frozen_weights: bool = True
    """Under bf16 mixed precision, keep the frozen base model's linear weights in bf16 (half the memory, no per-call cast)."""
    bf16_frozen_embeddings: bool = True
    """With bf16_frozen_weights, store frozen embedding tables in bf16 too (lookups come back fp32; the values round)."""
    sft_adapter: str | None = None
    """SFT adapter folder to start from; it is merged into the base and becomes the reference."""
    rollout_logprobs: str = "auto"
    """Old log-probs/values from the 'generation' pass or a teacher-forced 'recompute'; auto: recompute below fp32."""
    reference: str = "adapter"
    """Reference policy: 'adapter' (same weights, RL adapter disabled) or 'copy' (a frozen deep copy)."""
    min_new_tokens: int | None = None
    """Lower end of the per-step response-length sampler (null = generation.min_new_tokens)."""
    max_new_tokens: int | None = None
    """Upper end of the per-step response-length sampler (null = generation.max_new_tokens)."""
    log_every: int = 1
    """Write step statistics every N steps."""
    sample_every: int = 10
    """Show and save a table of prompts, responses and scores every N steps (0 = never)."""
    save_every: int = 25
    """Checkpoint every N steps (0 = only at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk (older ones are deleted)."""
    tensorboard: bool = True
    """Also log statistics to TensorBoard through Accelerate's tracker."""


TOXICITY_KINDS = ("lexicon", "classifier")


def _lexicon_toxicity() -> RewardSpec:
    return RewardSpec(kind="lexicon", label="hate", output="prob", name="toxicity")


@dataclass(frozen=True)
class EvalConfig:
    policies: list[str] = field(default_factory=list)
    """Policies to compare, as NAME=PATH (adapter folder from sft/ppo, or 'base'); the first is the baseline."""
    reference: str | None = None
    """Name of the policy that KL is measured against (null = the first policy)."""
    prompts: int = 256
    """Held-out prompts to evaluate on (all of the split if it has fewer)."""
    split: str = "test"
    """Which split's prompts: test (held out) or train."""
    seed: int = 1234
    """Sampling seed; prompt i gets its own random stream from (seed, i), the same under every policy."""
    toxicity: RewardSpec = field(default_factory=_lexicon_toxicity)
    """Toxicity measure: kind lexicon (1 if a lexicon insult occurs) or classifier (probability of `label`)."""
    confidence: float = 0.95
    """Level of the bootstrap confidence intervals."""
    bootstrap_resamples: int = 2000
    """Bootstrap resamples per interval."""
    table_rows: int = 20
    """Rows of each before/after table shown in report.html (the CSV files hold every prompt)."""


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

    def validate(self) -> None:
        """Check the rules that involve more than one field; raise ConfigError on the first broken one."""
        problems = _problems(self)
        if problems:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def _problems(cfg: Config) -> list[str]:
    p: list[str] = []
    run, lora, data, gen, sft = cfg.run, cfg.lora, cfg.data, cfg.generation, cfg.sft
    if run.device not in ("auto", "cpu", "cuda") and not run.device.startswith("cuda:"):
        p.append(f"run.device must be 'auto', 'cpu' or 'cuda[:N]', got {run.device!r}")
    if run.precision not in PRECISIONS:
        p.append(f"run.precision must be one of {', '.join(PRECISIONS)}, got {run.precision!r}")
    if run.num_threads < 0:
        p.append("run.num_threads must be >= 0")
    if not cfg.model.name_or_path:
        p.append("model.name_or_path is empty: give a hub id, a folder, or preset:NAME")
    if lora.r <= 0 or lora.alpha <= 0:
        p.append(f"lora.r and lora.alpha must be positive, got r={lora.r}, alpha={lora.alpha}")
    if not 0.0 <= lora.dropout < 1.0:
        p.append(f"lora.dropout must be in [0, 1), got {lora.dropout}")
    if "{dialogue}" not in data.template:
        p.append("data.template must contain the placeholder {dialogue}")
    if data.min_chars < 0 or data.max_chars <= data.min_chars:
        p.append(f"data.min_chars ({data.min_chars}) must be >= 0 and below data.max_chars ({data.max_chars})")
    if not 0.0 < data.test_size < 1.0:
        p.append(f"data.test_size must be a fraction in (0, 1), got {data.test_size}")
    if data.max_train_examples is not None and data.max_train_examples <= 0:
        p.append("data.max_train_examples must be positive or null")
    if data.synthetic.size < 2:
        p.append("data.synthetic.size must be at least 2")
    if not 0.0 <= data.synthetic.toxic_fraction <= 1.0:
        p.append(f"data.synthetic.toxic_fraction must be in [0, 1], got {data.synthetic.toxic_fraction}")
    if gen.max_new_tokens <= 0 or not 0 <= gen.min_new_tokens <= gen.max_new_tokens:
        p.append(
            f"generation needs 0 <= min_new_tokens ({gen.min_new_tokens}) <= max_new_tokens "
            f"({gen.max_new_tokens}) and max_new_tokens > 0"
        )
    if gen.temperature <= 0:
        p.append(f"generation.temperature must be > 0 (use do_sample=false for greedy), got {gen.temperature}")
    if gen.top_k < 0 or not 0.0 < gen.top_p <= 1.0:
        p.append(f"generation.top_k must be >= 0 and top_p in (0, 1], got {gen.top_k}, {gen.top_p}")
    if gen.max_prompt_tokens <= 0 or gen.batch_size <= 0:
        p.append("generation.max_prompt_tokens and generation.batch_size must be positive")
    if sft.learning_rate <= 0:
        p.append(f"sft.learning_rate must be > 0, got {sft.learning_rate}")
    if sft.batch_size <= 0 or sft.gradient_accumulation_steps <= 0:
        p.append("sft.batch_size and sft.gradient_accumulation_steps must be positive")
    elif sft.batch_size % sft.gradient_accumulation_steps:
        p.append(
            f"sft.gradient_accumulation_steps ({sft.gradient_accumulation_steps}) must divide "
            f"sft.batch_size ({sft.batch_size})"
        )
    if sft.max_steps < 0 or (sft.max_steps == 0 and sft.epochs <= 0):
        p.append("set sft.max_steps > 0 or sft.epochs > 0")
    if not 0.0 <= sft.warmup_ratio < 1.0:
        p.append(f"sft.warmup_ratio must be in [0, 1), got {sft.warmup_ratio}")
    if sft.log_every <= 0 or sft.eval_every < 0 or sft.eval_examples <= 0:
        p.append("sft.log_every and sft.eval_examples must be positive, sft.eval_every >= 0")
    p.extend(_ppo_problems(cfg.ppo, gen))
    if cfg.reward.rewards:  # SFT needs no reward; PPO checks that one is given before it starts
        p.extend(cfg.reward.problems("reward.rewards"))
    p.extend(_eval_problems(cfg.eval))
    return p


def parse_policy(entry: str) -> tuple[str, str]:
    """``NAME=PATH`` → (NAME, PATH); a bare path is named after its run folder (runs/ppo/adapter → ppo)."""
    if "=" in entry:
        name, path = entry.split("=", 1)
        return name.strip(), path.strip()
    path = Path(entry.strip())
    if entry.strip() == "base":
        return "base", "base"
    name = path.parent.name if path.name == "adapter" and path.parent.name else path.name
    return name or entry.strip(), entry.strip()


def _eval_problems(ev: EvalConfig) -> list[str]:
    p: list[str] = []
    names = [parse_policy(e)[0] for e in ev.policies]
    if any(not n or not parse_policy(e)[1] for n, e in zip(names, ev.policies)):
        p.append("every eval.policies entry needs a name and a path, like sft=runs/sft/adapter")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        p.append(f"eval.policies names must be unique; {', '.join(duplicates)} appear more than once "
                 "(name them: --policy sft=runs/a/adapter --policy ppo=runs/b/adapter)")  # fmt: skip
    if ev.reference is not None and ev.policies and ev.reference not in names:
        p.append(f"eval.reference {ev.reference!r} is not one of the policies ({', '.join(names)})")
    if ev.prompts <= 0:
        p.append(f"eval.prompts must be positive, got {ev.prompts}")
    if ev.split not in ("train", "test"):
        p.append(f"eval.split must be train or test, got {ev.split!r}")
    if not 0.5 <= ev.confidence < 1.0:
        p.append(f"eval.confidence must be in [0.5, 1), got {ev.confidence}")
    if ev.bootstrap_resamples < 100:
        p.append(f"eval.bootstrap_resamples must be at least 100, got {ev.bootstrap_resamples}")
    if ev.table_rows < 0:
        p.append("eval.table_rows must be >= 0")
    if ev.toxicity.kind not in TOXICITY_KINDS:
        p.append(f"eval.toxicity.kind must be lexicon or classifier, got {ev.toxicity.kind!r}")
    elif ev.toxicity.kind == "classifier":
        p.extend(ev.toxicity.problems("eval.toxicity"))
        if not ev.toxicity.label:
            p.append("eval.toxicity.label must name the toxic class of the classifier (e.g. hate)")
    return p


def _ppo_problems(ppo: PPOConfig, gen: GenerationConfig) -> list[str]:
    p: list[str] = []
    sizes = (ppo.steps, ppo.batch_size, ppo.mini_batch_size, ppo.micro_batch_size, ppo.ppo_epochs)
    if min(sizes) <= 0:
        p.append("ppo.steps, batch_size, mini_batch_size, micro_batch_size and ppo_epochs must be positive")
        return p
    if ppo.batch_size % ppo.mini_batch_size:
        p.append(f"ppo.mini_batch_size ({ppo.mini_batch_size}) must divide ppo.batch_size ({ppo.batch_size})")
    if ppo.mini_batch_size % ppo.micro_batch_size:
        p.append(
            f"ppo.micro_batch_size ({ppo.micro_batch_size}) must divide ppo.mini_batch_size ({ppo.mini_batch_size})"
        )
    if ppo.learning_rate <= 0 or ppo.max_grad_norm <= 0:
        p.append("ppo.learning_rate and ppo.max_grad_norm must be > 0")
    if ppo.lr_schedule not in ("constant", "linear", "cosine"):
        p.append(f"ppo.lr_schedule must be constant, linear or cosine, got {ppo.lr_schedule!r}")
    if not 0 < ppo.clip_eps < 1 or ppo.value_clip <= 0:
        p.append("ppo.clip_eps must be in (0, 1) and ppo.value_clip > 0")
    if ppo.vf_coef < 0 or ppo.entropy_coef < 0:
        p.append("ppo.vf_coef and ppo.entropy_coef must be >= 0")
    if not 0 < ppo.gamma <= 1 or not 0 <= ppo.lam <= 1:
        p.append("ppo.gamma must be in (0, 1] and ppo.lam in [0, 1]")
    if ppo.kl_estimator not in ("k1", "k2", "k3"):
        p.append(f"ppo.kl_estimator must be k1, k2 or k3, got {ppo.kl_estimator!r}")
    if ppo.kl_coef < 0 or ppo.kl_target <= 0 or ppo.kl_horizon <= 0:
        p.append("ppo.kl_coef must be >= 0, ppo.kl_target and ppo.kl_horizon > 0")
    if ppo.target_approx_kl is not None and ppo.target_approx_kl <= 0:
        p.append("ppo.target_approx_kl must be > 0 or null")
    if ppo.rollout_logprobs not in ("auto", "generation", "recompute"):
        p.append(f"ppo.rollout_logprobs must be auto, generation or recompute, got {ppo.rollout_logprobs!r}")
    if ppo.reference not in ("adapter", "copy"):
        p.append(f"ppo.reference must be 'adapter' or 'copy', got {ppo.reference!r}")
    lo = gen.min_new_tokens if ppo.min_new_tokens is None else ppo.min_new_tokens
    hi = gen.max_new_tokens if ppo.max_new_tokens is None else ppo.max_new_tokens
    if not 0 <= lo <= hi or hi <= 0:
        p.append(f"the response-length sampler needs 0 <= min_new_tokens ({lo}) <= max_new_tokens ({hi}), max > 0")
    if ppo.log_every <= 0 or ppo.sample_every < 0 or ppo.save_every < 0 or ppo.keep_checkpoints <= 0:
        p.append("ppo.log_every and keep_checkpoints must be positive; sample_every and save_every >= 0")
    return p


# --------------------------------------------------------------------------------------------------
# Loading (reading, checking, saving and replace() live in rlhfkit.config_loading, for every schema)


def load_config(
    files: str | os.PathLike | Sequence[str | os.PathLike] = (),
    overrides: str | Sequence[str] = (),
    schema: type = Config,
) -> Any:
    """Merge defaults, YAML ``files`` and ``key=value`` ``overrides``; type-check; validate.

    Raises ConfigError with a one-line message naming the file or override and the key (listing the
    valid keys for an unknown one), or with the broken cross-field rules of ``schema.validate()``.
    """
    return load_structured(schema, files, overrides)
