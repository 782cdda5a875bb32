"""The ``sft`` section: supervised fine-tuning of the LoRA adapter (docs/sft.md)."""

from __future__ import annotations

from dataclasses import dataclass


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

    def problems(self) -> list[str]:
        p: list[str] = []
        if self.learning_rate <= 0:
            p.append(f"sft.learning_rate must be > 0, got {self.learning_rate}")
        if self.batch_size <= 0 or self.gradient_accumulation_steps <= 0:
            p.append("sft.batch_size and sft.gradient_accumulation_steps must be positive")
        elif self.batch_size % self.gradient_accumulation_steps:
            p.append(
                f"sft.gradient_accumulation_steps ({self.gradient_accumulation_steps}) must divide "
                f"sft.batch_size ({self.batch_size})"
            )
        if self.max_steps < 0 or (self.max_steps == 0 and self.epochs <= 0):
            p.append("set sft.max_steps > 0 or sft.epochs > 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            p.append(f"sft.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.log_every <= 0 or self.eval_every < 0 or self.eval_examples <= 0:
            p.append("sft.log_every and sft.eval_examples must be positive, sft.eval_every >= 0")
        return p
