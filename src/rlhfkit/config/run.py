"""The ``run`` section every top-level configuration shares (SFT/PPO, reward-model training, ...)."""

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

    def problems(self) -> list[str]:
        p: list[str] = []
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            p.append(f"run.device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.precision not in PRECISIONS:
            p.append(f"run.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.num_threads < 0:
            p.append("run.num_threads must be >= 0")
        return p
