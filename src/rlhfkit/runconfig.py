"""The `run` section every top-level configuration shares (SFT/PPO, reward-model training, ...).

Kept apart from :mod:`rlhfkit.config` so that other configuration modules (rewards, feedback) can use it
without importing the main configuration, which in turn includes theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class RunConfig:
    output_dir: str = "runs/sft"
    """Folder for everything the run writes: resolved config, metrics, adapter, samples."""
    seed: int = 0
    """Seed for model initialisation, data order and sampling (each process adds its rank)."""
    device: str = "auto"
    """'auto' (CUDA when available, else CPU), 'cpu' or 'cuda'."""
    precision: str = "auto"
    """auto (bf16 where the CPU/GPU supports it, else fp32), fp32, bf16 (autocast, fp32 master weights) or fp16."""
    num_threads: int = 0
    """CPU threads for torch (0 = torch's default)."""
