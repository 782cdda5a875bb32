"""Checkpoints of a PPO run: everything needed to continue as if the run had never stopped.

Layout: ``<run>/checkpoints/step-000010/`` holding the trainable tensors (adapter, fully trained modules,
value head) as safetensors, the optimiser and scheduler states, the KL controller, RNG states (one set
per process of a multi-process run) and the step counters; only the main process writes. Each checkpoint
folder is written aside and renamed into place (see :func:`rlhfkit.io.atomic_dir`), so a process killed
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rlhfkit.errors import RlhfkitError
from rlhfkit.io import atomic_dir

PREFIX = "step-"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"{PREFIX}{step:06d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first (staging folders of an interrupted write are ignored)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}  # fmt: skip


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, trainable: dict[str, torch.Tensor], optimizer: Any, scheduler: Any,
                    state: dict[str, Any], keep: int,
                    per_process: list[dict[str, Any]] | None = None) -> Path:  # fmt: skip
    """Write checkpoint ``step`` atomically, then delete all but the newest ``keep`` checkpoints.

    ``per_process``: what each process of a multi-process run must get back on resume (its RNG states,
    its reward normalisers), in process order; the main process writes them all, so one writer suffices.
    """
    target = checkpoint_dir(run_dir, step)
    with atomic_dir(target) as staging:
        save_file({k: v.contiguous() for k, v in trainable.items()}, str(staging / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": rng_state(), "per_process": per_process}, staging / "training_state.pt")  # fmt: skip
        (staging / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(trainable tensors, optimizer/scheduler/rng states, step state) of the checkpoint in ``path``."""
    try:
        trainable = load_file(str(path / "trainable.safetensors"))
        training = torch.load(path / "training_state.pt", weights_only=False)
        state = json.loads((path / "state.json").read_text())
    except (OSError, RuntimeError, ValueError, json.JSONDecodeError) as e:
        raise RlhfkitError(f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}: {e}); "
                           "delete it to resume from the one before.") from None  # fmt: skip
    return trainable, training, state
