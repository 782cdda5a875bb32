"""What every training loop sets up the same way: threads, seeds, the Accelerator, quiet libraries."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def library_bars_off() -> Iterator[None]:
    """Silence transformers' and the hub's tqdm bars inside the block (e.g. "Writing model shards" of
    ``save_pretrained``), then restore them as they were.

    Building a preset or a backbone can happen before any run calls :func:`quiet_libraries`, and a bar of
    theirs would leak into a log that is not a terminal; the caller's own setting is left as it found it.
    """
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    transformers_on, hub_on = hf_logging.is_progress_bar_enabled(), not are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # the hub's bars too
    try:
        yield
    finally:
        if transformers_on:
            hf_logging.enable_progress_bar()  # turns the hub's back on as well
        if not hub_on:
            disable_progress_bars()
        elif not transformers_on:
            enable_progress_bars()


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, cpu: bool) -> str:
    """'auto' → the launcher's mixed precision if it asked for bf16/fp16, else bf16 where the hardware runs it
    natively (on a CPU: AVX512-BF16/AMX; a GPU: Ampere or newer), else fp32. An explicit setting wins."""
    if precision != "auto":
        return precision
    # `accelerate launch --mixed_precision bf16` (or an Accelerate config file) sets this variable; its own
    # default is "no", which cannot be told apart from a deliberate "no", so only bf16/fp16 are followed
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if launcher in ("bf16", "fp16"):
        return launcher
    if cpu:
        return "bf16" if cpu_supports_bf16() else "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp32"


def make_accelerator(run: RunConfig, gradient_accumulation_steps: int = 1, log_with: str | None = None,
                     project_dir: str | os.PathLike | None = None, split_batches: bool = False):  # fmt: skip
    """An Accelerator for ``run``; each process seeds itself with seed + rank (docs/ppo.md, detail 9).

    Started by `accelerate launch` (or torchrun), the Accelerator joins the other processes; started by
    plain `python`, it is one process. ``log_with="tensorboard"`` adds Accelerate's TensorBoard tracker,
    writing under ``project_dir``. ``split_batches=True`` makes a prepared DataLoader's batch size global:
    each process gets batch_size / num_processes of every batch (see :mod:`rlhfkit.engine.distributed`).
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, GradientAccumulationPlugin, set_seed

    from rlhfkit.engine.distributed import check_backend

    if run.num_threads > 0:
        torch.set_num_threads(run.num_threads)
    cpu = run.device == "cpu" or (run.device == "auto" and not torch.cuda.is_available())
    if run.device.startswith("cuda") and not torch.cuda.is_available():
        raise RlhfkitError(f"run.device={run.device!r} but no CUDA device is available; use run.device=cpu or auto.")
    check_backend(cpu)
    precision = resolve_precision(run.precision, cpu)
    if precision == "fp16" and cpu:
        raise RlhfkitError("run.precision=fp16 needs a GPU; on a CPU use bf16 (where supported) or fp32.")
    if log_with == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise RlhfkitError("TensorBoard logging is on but tensorboard is not installed: pip install "
                               "'rlhfkit[tracking]', or set ppo.tensorboard=false.") from None  # fmt: skip
    launcher_steps = os.environ.get("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "").strip()
    if launcher_steps.isdigit() and int(launcher_steps) != gradient_accumulation_steps:
        # the losses are scaled for rlhfkit's own accumulation count; another one would silently change them
        raise RlhfkitError(
            f"the launcher sets gradient_accumulation_steps={launcher_steps}, but rlhfkit takes gradient "
            f"accumulation from its own configuration (here {gradient_accumulation_steps}): "
            "sft.gradient_accumulation_steps for SFT, ppo.mini_batch_size / ppo.micro_batch_size for PPO. Remove "
            "gradient_accumulation_steps from the Accelerate config (and --gradient_accumulation_steps from the "
            "command) and set it in the rlhfkit config instead."
        )
    from accelerate.state import AcceleratorState, GradientState

    # Accelerate keeps one state per process and refuses a second Accelerator with another precision; a
    # process that runs several trainings (the demo, a notebook, the tests) starts each from a fresh state.
    # The distributed part (PartialState: ranks, backend) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=_PRECISION_TO_ACCELERATE[precision],
        # given as a plugin, so that an ACCELERATE_GRADIENT_ACCUMULATION_STEPS variable cannot override it
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=gradient_accumulation_steps),
        log_with=log_with,
        project_dir=str(project_dir) if project_dir is not None else None,
        dataloader_config=DataLoaderConfiguration(split_batches=split_batches),
    )
    set_seed(run.seed + accelerator.process_index)
    return accelerator
