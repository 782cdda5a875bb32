"""Checkpoint files: integrity (SHA-256 manifest), safe loading (no pickle code), full disk, non-finite tensors.

Every damaged-checkpoint case must end in the same one-paragraph error ("cannot be read: ... Delete it to resume
from the one before"), never a traceback from safetensors or torch, and never a silent resume.
"""

from __future__ import annotations

import errno
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from rlhfkit.engine import checkpoint as ckpt
from rlhfkit.engine.checkpoint import (
    MANIFEST,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    sha256_of,
)
from rlhfkit.errors import RlhfkitError


def _training_objects():
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 64)  # 16 KiB of weights: room for a 4 KiB bit flip inside the tensor data
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    layer(torch.randn(3, 64)).sum().backward()
    optimizer.step()
    scheduler.step()
    return layer, optimizer, scheduler


def _save(run: Path, step: int = 2, **kw) -> Path:
    layer, optimizer, scheduler = _training_objects()
    trainable = kw.pop("trainable", {k: v.detach() for k, v in layer.state_dict().items()})
    return save_checkpoint(run, step, trainable, optimizer, scheduler, {"skipped_steps": 0}, keep=2, **kw)


def test_a_checkpoint_round_trips_with_its_manifest_and_rng_states(tmp_path):
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    path = _save(tmp_path)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    manifest = json.loads((path / MANIFEST).read_text())["sha256"]
    assert set(manifest) == {"trainable.safetensors", "training_state.pt", "state.json"}
    assert all(manifest[name] == sha256_of(path / name) for name in manifest)
    trainable, training, state = load_checkpoint(path)
    assert state["step"] == 2 and set(trainable) == {"weight", "bias"}
    _, optimizer, scheduler = _training_objects()
    optimizer.load_state_dict(training["optimizer"])  # loaded with weights_only=True, usable as it is
    scheduler.load_state_dict(training["scheduler"])
    assert scheduler.last_epoch == 1
    set_rng_state(training["rng"])  # the states saved above: the same draws come again, from every generator
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_rng_state_holds_only_tensors_and_plain_values(tmp_path):
    torch.save(rng_state(), tmp_path / "rng.pt")
    torch.load(tmp_path / "rng.pt", weights_only=True)  # raises on a numpy array or any other pickled object


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _garbage_header(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(b"\xff" * 16 + data[16:])


def _flip_4kib_of_tensor_data(p: Path) -> None:
    data = bytearray(p.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")  # safetensors: u64 header length, JSON header, then tensors
    for i in range(header + 1024, header + 1024 + 4096):
        data[i] ^= 0xFF
    p.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _empty, _garbage_header])
@pytest.mark.parametrize("name", ["trainable.safetensors", "training_state.pt", "state.json"])
def test_a_damaged_file_is_refused_with_the_same_clear_message(tmp_path, name, damage):
    path = _save(tmp_path)
    damage(path / name)
    with pytest.raises(RlhfkitError, match=rf"cannot be read: {name} .*SHA-256.*Delete it to resume from the one before"):
        load_checkpoint(path)


def test_silently_flipped_tensor_data_is_caught_by_its_hash(tmp_path):
    """4 KiB of weights flipped still parse as a valid file: only the hash recorded at write time tells."""
    path = _save(tmp_path)
    _flip_4kib_of_tensor_data(path / "trainable.safetensors")
    from safetensors.torch import load_file

    assert set(load_file(str(path / "trainable.safetensors"))) == {"weight", "bias"}  # readable, but wrong
    with pytest.raises(RlhfkitError, match="trainable.safetensors does not match the SHA-256 recorded"):
        load_checkpoint(path)


@pytest.mark.parametrize("damage", [_truncate, _empty, _garbage_header])
def test_a_damaged_safetensors_file_with_a_matching_manifest_is_still_a_clear_error(tmp_path, damage):
    """Damage that happened before the hashes were taken (or a manifest rewritten to match) reaches the loaders:
    their SafetensorError must not escape either."""
    path = _save(tmp_path)
    damage(path / "trainable.safetensors")
    _rehash(path)
    with pytest.raises(RlhfkitError, match="cannot be read: SafetensorError"):
        load_checkpoint(path)


def _rehash(path: Path) -> None:
    hashes = {name: sha256_of(path / name) for name in ckpt.FILES}
    (path / MANIFEST).write_text(json.dumps({"sha256": hashes}))


class _RunsCode:
    """Unpickling this calls os.system: what a crafted training_state.pt would do under weights_only=False."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_does_not_run_code_on_resume(tmp_path):
    path = _save(tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"optimizer": _RunsCode(marker)}, path / "training_state.pt")
    _rehash(path)  # the attacker controls the whole folder, manifest included
    with pytest.raises(RlhfkitError, match="cannot be read: UnpicklingError"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_missing_or_unreadable_manifest_is_refused(tmp_path):
    path = _save(tmp_path)
    (path / MANIFEST).write_text("{not json")
    with pytest.raises(RlhfkitError, match=f"cannot be read: {MANIFEST} cannot be read"):
        load_checkpoint(path)
    (path / MANIFEST).unlink()
    with pytest.raises(RlhfkitError, match=f"cannot be read: {MANIFEST} is missing"):
        load_checkpoint(path)


def test_a_non_finite_trainable_tensor_is_never_written(tmp_path):
    good = _save(tmp_path, step=1)
    with pytest.raises(RlhfkitError, match=r"not writing checkpoint 2: 1 trainable tensor\(s\) hold NaN or inf \(w\)"):
        _save(tmp_path, step=2, trainable={"w": torch.tensor([1.0, float("nan")]), "b": torch.zeros(2)})
    assert list_checkpoints(tmp_path) == [good]


def _full_disk_in_safetensors(monkeypatch) -> None:
    def fail(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", fail)


def _full_disk_in_torch_save(monkeypatch) -> None:
    def fail(*_args, **_kwargs):  # what torch.save raises on a full disk
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", fail)


@pytest.mark.parametrize("fill_disk", [_full_disk_in_safetensors, _full_disk_in_torch_save])
def test_a_full_disk_leaves_the_previous_checkpoint_and_says_what_to_do(tmp_path, monkeypatch, fill_disk):
    previous = _save(tmp_path, step=1)
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    fill_disk(monkeypatch)
    with pytest.raises(RlhfkitError, match="no space left on device; the previous checkpoint .*step-000001' is "
                                           "intact. Free some disk space .* --resume"):  # fmt: skip
        _save(tmp_path, step=2)
    assert list_checkpoints(tmp_path) == [previous]
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000001"]  # no staging folder left


def test_old_checkpoints_are_deleted_only_after_the_new_one_is_in_place(tmp_path):
    first = _save(tmp_path, step=1)
    _save(tmp_path, step=2)
    _save(tmp_path, step=3)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002", "step-000003"]
    assert not first.exists()
