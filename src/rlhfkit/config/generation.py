"""The ``generation`` section: how responses are sampled, for evaluation and for rollouts."""

from __future__ import annotations

from dataclasses import dataclass


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

    def problems(self) -> list[str]:
        p: list[str] = []
        if self.max_new_tokens <= 0 or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            p.append(
                f"generation needs 0 <= min_new_tokens ({self.min_new_tokens}) <= max_new_tokens "
                f"({self.max_new_tokens}) and max_new_tokens > 0"
            )
        if self.temperature <= 0:
            p.append(f"generation.temperature must be > 0 (use do_sample=false for greedy), got {self.temperature}")
        if self.top_k < 0 or not 0.0 < self.top_p <= 1.0:
            p.append(f"generation.top_k must be >= 0 and top_p in (0, 1], got {self.top_k}, {self.top_p}")
        if self.max_prompt_tokens <= 0 or self.batch_size <= 0:
            p.append("generation.max_prompt_tokens and generation.batch_size must be positive")
        return p
