"""What every training loop sets up the same way: threads, seeds, the Accelerator, quiet libraries."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from rlhfkit.config import RunConfig
from rlhfkit.errors import RlhfkitError

_PRECISION_TO_ACCELERATE = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def quiet_libraries() -> None:
    """Silence per-call progress bars and advisory warnings of datasets/transformers (we show our own)."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # peft calls a transformers method that transformers 5 renamed; the warning is theirs, not the user's
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, cpu: bool) -> str:
    """'auto' → bf16 where the hardware runs it natively (on a CPU: AVX512-BF16/AMX; a GPU: Ampere or newer), else fp32."""
    if precision != "auto":
        return precision
    if cpu:
        return "bf16" if cpu_supports_bf16() else "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp32"


def make_accelerator(run: RunConfig, gradient_accumulation_steps: int = 1, log_with: str | None = None,
                     project_dir: str | os.PathLike | None = None):  # fmt: skip
    """An Accelerator for ``run``; each process seeds itself with seed + rank (DESIGN, PPO detail 9).

    ``log_with="tensorboard"`` adds Accelerate's TensorBoard tracker, writing under ``project_dir``.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if run.num_threads > 0:
        torch.set_num_threads(run.num_threads)
    cpu = run.device == "cpu" or (run.device == "auto" and not torch.cuda.is_available())
    if run.device.startswith("cuda") and not torch.cuda.is_available():
        raise RlhfkitError(f"run.device={run.device!r} but no CUDA device is available; use run.device=cpu or auto.")
    precision = resolve_precision(run.precision, cpu)
    if precision == "fp16" and cpu:
        raise RlhfkitError("run.precision=fp16 needs a GPU; on a CPU use bf16 (where supported) or fp32.")
    if log_with == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise RlhfkitError("TensorBoard logging is on but tensorboard is not installed: pip install "
                               "'rlhfkit[tracking]', or set ppo.tensorboard=false.") from None  # fmt: skip
    from accelerate.state import AcceleratorState

    # Accelerate keeps one state per process and refuses a second Accelerator with another precision; a
    # process that runs several trainings (the demo, a notebook, the tests) starts each from a fresh state.
    # The distributed part (PartialState: ranks, backend) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=_PRECISION_TO_ACCELERATE[precision],
        gradient_accumulation_steps=gradient_accumulation_steps,
        log_with=log_with,
        project_dir=str(project_dir) if project_dir is not None else None,
    )
    set_seed(run.seed + accelerator.process_index)
    return accelerator
