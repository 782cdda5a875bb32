"""The ``model`` section (the base model) and the LoRA sections (the policy's, and the base of the reward model's)."""

from __future__ import annotations

from dataclasses import dataclass


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

    def problems(self) -> list[str]:
        if not self.name_or_path:
            return ["model.name_or_path is empty: give a hub id, a folder, or preset:NAME"]
        return []


@dataclass(frozen=True)
class LoraSettings:
    """What every LoRA adapter is (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"), and its
    rules; the policy's ``lora`` section and the reward model's (``rlhfkit reward train``) extend it."""

    r: int = 32
    """LoRA rank (the course lab uses 32)."""
    alpha: int = 32
    """LoRA scaling numerator: updates are scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the LoRA branch during training (off while sampling and scoring)."""
    target_modules: list[str] | None = None
    """Module names to adapt; null = peft's default for the architecture (T5: q, v; Llama: q_proj, v_proj)."""

    def problems(self) -> list[str]:
        p: list[str] = []
        if self.r <= 0 or self.alpha <= 0:
            p.append(f"lora.r and lora.alpha must be positive, got r={self.r}, alpha={self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            p.append(f"lora.dropout must be in [0, 1), got {self.dropout}")
        return p


@dataclass(frozen=True)
class LoraConfig(LoraSettings):
    modules_to_save: list[str] | None = None
    """Modules trained in full next to the adapter (e.g. lm_head for randomly initialised presets)."""
    adapter_path: str | None = None
    """An existing adapter folder to continue training instead of a fresh adapter."""
