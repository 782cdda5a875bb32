"""What changes when a training loop runs as several processes (`accelerate launch`, torchrun, multi-node).

The rule every loop follows: **batch sizes in the configuration are global**. With N processes each
process takes size / N of every batch, so 2 processes × 8 examples see, and average their gradients over,
exactly the data 1 process × 16 would. Losses are sums over the local examples (or tokens) divided by
the *global* count, so the all-reduced gradient is the gradient of the global mean, however unevenly
tokens fall across processes. Statistics are reduced across processes before they are logged, and only
the main process writes files.

The checks here run before any model is loaded, so a launch that cannot work fails in seconds with a
message that names the numbers.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from rlhfkit.errors import RlhfkitError


def is_main_process() -> bool:
    """True in the process that reports (global rank 0), also before or without an Accelerator."""
    return int(os.environ.get("RANK", "0")) == 0


def requested_backend() -> str | None:
    """'deepspeed' or 'fsdp' when the launcher asked for one (accelerate launch sets these variables), else None."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return "deepspeed"
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "fsdp"
    return None


def check_backend(cpu: bool) -> None:
    """Refuse a launch that cannot work, before Accelerate is even started.

    More processes on this machine than visible GPUs would fail deep inside torch ("invalid device ordinal");
    a DeepSpeed launch fails later with an ImportError (DeepSpeed missing) or, on a CPU, silently trains
    without DeepSpeed: all are worse than a message that says what to change.
    """
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)  # set by torchrun / accelerate launch
    hide_gpus = "run every process on the CPU by hiding the GPUs: CUDA_VISIBLE_DEVICES= accelerate launch ..."
    if not cpu and local_processes > torch.cuda.device_count():
        raise RlhfkitError(
            f"{local_processes} processes were launched on this machine but only {torch.cuda.device_count()} GPU(s) "
            "are visible: launch at most one process per GPU (accelerate launch --num_processes N, or "
            f"num_processes in the Accelerate config), or {hide_gpus}"
        )
    if cpu and local_processes > 1 and torch.cuda.is_available():
        # Accelerate's barrier passes the process's index as a CUDA device id whenever CUDA is visible, so CPU
        # processes on a GPU machine fail with "invalid device ordinal" (seen with accelerate 1.15, torch 2.11)
        raise RlhfkitError(
            f"run.device=cpu with {local_processes} processes on a machine with visible GPUs does not work "
            f"through Accelerate; {hide_gpus} (or drop run.device=cpu to train on the GPUs)."
        )
    if requested_backend() != "deepspeed":
        return
    if importlib.util.find_spec("deepspeed") is None:
        raise RlhfkitError(
            "the launcher asked for DeepSpeed (an Accelerate config with distributed_type: DEEPSPEED, i.e. "
            "ACCELERATE_USE_DEEPSPEED=true), but the deepspeed package is not installed. Install it on every "
            "node (pip install deepspeed), or launch with a config that needs no DeepSpeed: "
            "configs/accelerate/multi-gpu.yaml (DDP) or configs/accelerate/fsdp.yaml."
        )
    if cpu:
        raise RlhfkitError(
            "the launcher asked for DeepSpeed, but this run is on the CPU (run.device=cpu, or no CUDA device is "
            "visible), where Accelerate does not use DeepSpeed and would silently fall back to plain data "
            "parallelism. Launch on GPUs, or use configs/accelerate/multi-cpu.yaml for several CPU processes."
        )


def check_split(num_processes: int, sizes: dict[str, int], hint: str = "") -> None:
    """Every global batch size in ``sizes`` (config key → value) must divide evenly across the processes.

    Raises RlhfkitError naming the key, its value and the process count; ``hint`` adds what else to change.
    """
    if num_processes <= 1:
        return
    for key, size in sizes.items():
        if size < num_processes:
            raise RlhfkitError(
                f"{key}={size} is smaller than the {num_processes} processes launched: batch sizes are global "
                f"(each process takes {key} / {num_processes}), so every process would not get one example. "
                f"Launch at most {size} processes (accelerate launch --num_processes {size}), or raise {key} to "
                f"a multiple of {num_processes}.{hint}"
            )
        if size % num_processes:
            lower, upper = size - size % num_processes, size + num_processes - size % num_processes
            raise RlhfkitError(
                f"{key}={size} does not divide across {num_processes} processes: batch sizes are global and "
                f"each process takes an equal share. Use a multiple of {num_processes} (e.g. {lower or upper} "
                f"or {upper}), or launch a number of processes that divides {size}.{hint}"
            )


def shard_bounds(total: int, rank: int, num_processes: int) -> tuple[int, int]:
    """[start, end) of process ``rank``'s contiguous share of ``total`` rows (the first shares get the extra rows)."""
    base, extra = divmod(total, num_processes)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def padded_shard(total: int, rank: int, num_processes: int) -> tuple[list[int], int]:
    """Indices of this process's share of ``total`` items, padded to the same length on every process.

    Under ZeRO-3 / FSDP every forward pass is a collective operation, so each process must run as many of
    them as the others; the padding repeats an index, and ``real`` says how many leading indices count.
    """
    per = math.ceil(total / num_processes) if total else 0
    start = rank * per
    own = list(range(start, min(start + per, total)))
    real = len(own)
    filler = own[-1] if own else 0
    return own + [filler] * (per - real), real


def all_reduce_sum(accelerator: Any, values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Element-wise sum of ``values`` over all processes, in float64 (counts stay exact), on the CPU."""
    t = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if accelerator.num_processes == 1:
        return t
    return accelerator.reduce(t.to(accelerator.device), reduction="sum").cpu()


def clip_gradients(accelerator: Any, parameters: Any, max_norm: float) -> float:
    """Clip the (all-reduced) gradients to ``max_norm``; their norm before clipping, NaN when unknown.

    Under DeepSpeed the engine clips by its own ``gradient_clipping`` setting and Accelerate can only report
    the norm (or nothing, before the engine's first step).
    """
    norm = accelerator.clip_grad_norm_(parameters, max_norm)
    return float(norm) if norm is not None else float("nan")


def gather_rows(accelerator: Any, t: torch.Tensor, pad_value: float = 0) -> torch.Tensor:
    """Rows of ``t`` from every process, in process order; a (B, T) tensor is padded to the widest T first."""
    if accelerator.num_processes == 1:
        return t
    device_t = t.to(accelerator.device)
    if t.dim() >= 2:
        device_t = accelerator.pad_across_processes(device_t, dim=1, pad_index=pad_value)
    return accelerator.gather(device_t).cpu()


def gather_objects(accelerator: Any, items: list[Any]) -> list[Any]:
    """The concatenation of every process's ``items`` list, in process order."""
    if accelerator.num_processes == 1:
        return list(items)
    from accelerate.utils import gather_object

    return list(gather_object(list(items)))


def broadcast_objects(accelerator: Any, *objects: Any) -> list[Any]:
    """The main process's ``objects`` on every process (picklable values, e.g. an evaluation record)."""
    if accelerator.num_processes == 1:
        return list(objects)
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list(list(objects), from_process=0)


def is_sharded(accelerator: Any) -> bool:
    """True under DeepSpeed or FSDP: parameters, gradients or optimiser states are split across processes."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)


def params_sharded(accelerator: Any) -> bool:
    """True under ZeRO-3 or FSDP: no process holds whole parameters outside a forward pass."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    return (
        accelerator.distributed_type == DistributedType.DEEPSPEED
        and accelerator.state.deepspeed_plugin.zero_stage == 3
    )


def set_deepspeed_micro_batch(accelerator: Any, per_process: int) -> None:
    """Tell DeepSpeed the per-process micro-batch when no DataLoader is prepared to infer it from ('auto')."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
    if ds_config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        ds_config["train_micro_batch_size_per_gpu"] = per_process


@contextmanager
def full_parameters(accelerator: Any, model: Any) -> Iterator[None]:
    """Every parameter whole on every process for the block: generation under ZeRO-3 or FSDP.

    ``generate`` runs many small forward passes; under ZeRO-3 each would all-gather every layer again, so
    the parameters are gathered once for the whole call (DeepSpeed's ``GatheredParameters``, read-only),
    as TRL does for its rollouts. FSDP's ``summon_full_params`` does the same for FSDP-wrapped models.
    This costs the memory of one full copy of the weights for the duration of the block. Every process
    must enter it (it is a collective operation). Elsewhere it does nothing.
    """
    from accelerate.utils import DistributedType

    if (
        accelerator.distributed_type == DistributedType.DEEPSPEED
        and accelerator.state.deepspeed_plugin.zero_stage == 3
    ):
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters())):
            yield
        return
    if accelerator.distributed_type == DistributedType.FSDP:
        from torch.distributed.fsdp import FullyShardedDataParallel

        wrapped = [
            m for m in (model, getattr(model, "module", None)) if isinstance(m, FullyShardedDataParallel)
        ]
        if wrapped:  # FSDP1; FSDP2 (fully_shard) modules gather themselves in every forward
            with FullyShardedDataParallel.summon_full_params(wrapped[0], writeback=False):
                yield
            return
    yield
