"""Checkpoints of a training run: everything needed to continue as if the run had never stopped.

Layout: ``<run>/checkpoints/step-000010/`` holding

* ``trainable.safetensors`` — the trainable tensors (adapter, fully trained modules, value head);
* ``training_state.pt`` — optimiser and scheduler states, RNG states (one set per process of a
  multi-process run). It holds only tensors and plain Python values, so it is read with
  ``torch.load(weights_only=True)``: a crafted checkpoint cannot run code on ``--resume``;
* ``state.json`` — the step counters, the KL controller and other small state;
* ``manifest.json`` — the SHA-256 of each of the files above, written last.

Only the main process writes. Each checkpoint folder is written aside and renamed into place (see
:func:`rlhfkit.io.atomic_dir`), so a process killed mid-write, or a full disk, leaves the previous
checkpoint intact. On resume every file is checked against the manifest before anything is loaded: a
truncated, emptied or bit-flipped file is refused with the same message as an unreadable one (which
checkpoint, what is wrong, delete it to resume from the one before), never a traceback and never a
silent resume from damaged weights. A checkpoint is never written with a non-finite trainable tensor.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rlhfkit.errors import RlhfkitError
from rlhfkit.io import atomic_dir, describe_os_error

PREFIX = "step-"
MANIFEST = "manifest.json"
FILES = ("trainable.safetensors", "training_state.pt", "state.json")


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
    """The RNG states of this process, as tensors and plain values (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}  # fmt: skip


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors holding a NaN or ±inf."""
    return [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(run_dir: Path, step: int, trainable: dict[str, torch.Tensor], optimizer: Any, scheduler: Any,
                    state: dict[str, Any], keep: int,
                    per_process: list[dict[str, Any]] | None = None) -> Path:  # fmt: skip
    """Write checkpoint ``step`` atomically, then delete all but the newest ``keep`` checkpoints.

    ``per_process``: what each process of a multi-process run must get back on resume (its RNG states,
    its reward normalisers), in process order; the main process writes them all, so one writer suffices.
    Raises RlhfkitError (and writes nothing) when a trainable tensor is not finite or the disk is full.
    """
    bad = nonfinite_tensors(trainable)
    if bad:  # a NaN checkpoint would be resumed from and fail later, far from the cause
        raise RlhfkitError(f"not writing checkpoint {step}: {len(bad)} trainable tensor(s) hold NaN or inf "
                           f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}). The run diverged; lower the "
                           "learning rate or check the reward's scale, and resume from the checkpoint before.")  # fmt: skip
    target = checkpoint_dir(run_dir, step)
    try:
        with atomic_dir(target) as staging:
            save_file({k: v.contiguous() for k, v in trainable.items()}, str(staging / "trainable.safetensors"))
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "rng": rng_state(), "per_process": per_process}, staging / "training_state.pt")  # fmt: skip
            (staging / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
            hashes = {name: sha256_of(staging / name) for name in FILES}
            (staging / MANIFEST).write_text(json.dumps({"sha256": hashes}, indent=2))
    except (OSError, RuntimeError, SafetensorError) as e:
        before = list_checkpoints(run_dir)
        kept = f"the previous checkpoint {str(before[-1])!r} is intact" if before else "no earlier checkpoint exists"
        raise RlhfkitError(f"could not write checkpoint {str(target)!r}: {describe_os_error(e)}; {kept}. Free some "
                           "disk space (or choose another run.output_dir) and continue with --resume.") from None  # fmt: skip
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def verify_checkpoint(path: Path) -> None:
    """Raise RlhfkitError unless every file of the checkpoint matches the SHA-256 its manifest recorded."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        _unreadable(path, f"{MANIFEST} is missing (it is written last, so the checkpoint is incomplete, or it was "
                          "written by an rlhfkit older than the integrity check)")  # fmt: skip
    try:
        recorded = json.loads(manifest.read_text(encoding="utf-8"))["sha256"]
        names = set(recorded)
    except (OSError, ValueError, KeyError, TypeError) as e:
        _unreadable(path, f"{MANIFEST} cannot be read ({type(e).__name__}: {e})")
    if names != set(FILES):
        _unreadable(path, f"{MANIFEST} lists {sorted(names)}, expected {sorted(FILES)}")
    for name in FILES:
        file = path / name
        if not file.is_file():
            _unreadable(path, f"{name} is missing")
        if sha256_of(file) != recorded[name]:
            _unreadable(path, f"{name} does not match the SHA-256 recorded when it was written (the file was "
                              "changed or damaged on disk)")  # fmt: skip


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(trainable tensors, optimizer/scheduler/rng states, step state) of the verified checkpoint in ``path``."""
    verify_checkpoint(path)
    try:
        trainable = load_file(str(path / "trainable.safetensors"))
        training = torch.load(path / "training_state.pt", weights_only=True, map_location="cpu")
        state = json.loads((path / "state.json").read_text())
    except (OSError, RuntimeError, ValueError, SafetensorError, pickle.UnpicklingError, EOFError) as e:
        _unreadable(path, f"{type(e).__name__}: {_first_line(e)}")
    bad = nonfinite_tensors(trainable)
    if bad:
        _unreadable(path, f"{len(bad)} trainable tensor(s) hold NaN or inf ({', '.join(bad[:3])})")
    return trainable, training, state


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else ""


def _unreadable(path: Path, why: str) -> None:
    raise RlhfkitError(f"checkpoint {str(path)!r} cannot be read: {why}. Delete it to resume from the one before "
                       "(or start the run again without --resume if it is the only one).")  # fmt: skip
