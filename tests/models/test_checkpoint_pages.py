"""Giving back a memory-mapped checkpoint's pages once the weights are copied out (Linux only)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rlhfkit.models.checkpoint_pages import CheckpointPages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")


def resident_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path``."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and not head[0].endswith(":"):
            inside = len(head) == 6 and head[5] == str(path)
        elif inside and head[0] == "Rss:":
            total += int(head[1])
    return total


@pytest.fixture
def mapped(tmp_path):
    """Four 4 MiB weights memory-mapped from a safetensors file, every page read once."""
    path = tmp_path / "model.safetensors"
    save_file({f"w{i}": torch.full((1024, 1024), float(i)) for i in range(4)}, str(path))
    with safe_open(str(path), framework="pt") as f:
        weights = [torch.nn.Parameter(f.get_tensor(f"w{i}"), requires_grad=False) for i in range(4)]
    assert sum(float(w.sum()) for w in weights) > 0  # reads every page
    return path, weights


def test_pages_of_copied_weights_are_given_back_and_the_copies_keep_their_values(mapped):
    path, weights = mapped
    before = resident_kib(path)
    assert before >= 4 * 4096
    pages = CheckpointPages(weights)
    for i, w in enumerate(weights):
        old, w.data = w.data, w.data.to(torch.bfloat16)
        assert pages.release(old) > 4000 * 1024  # all but the partial pages at the tensor's ends
    assert pages.released_bytes > 15 * 2**20
    assert resident_kib(path) < before / 10
    assert all(
        torch.equal(w, torch.full((1024, 1024), float(i), dtype=torch.bfloat16))
        for i, w in enumerate(weights)
    )


def test_pages_another_tensor_still_reads_are_kept(mapped):
    path, weights = mapped
    alias = torch.nn.Parameter(weights[0].data[:512], requires_grad=False)  # a second view of w0's first half
    pages = CheckpointPages([*weights, alias])
    old, weights[0].data = weights[0].data, weights[0].data.clone()
    assert pages.release(old) == 0  # the alias still points into these pages
    assert torch.equal(alias, torch.zeros(512, 1024))
    old_alias, alias.data = alias.data, alias.data.clone()
    assert pages.release(old_alias) > 0  # now nothing reads them


def test_a_page_changed_in_place_is_kept_by_the_copy(mapped):
    """An SFT adapter merged into a weight writes into the map (copy-on-write); the copy carries the change."""
    _, weights = mapped
    weights[1].data.add_(0.5)
    pages = CheckpointPages(weights)
    old, weights[1].data = weights[1].data, weights[1].data.clone()
    assert pages.release(old) > 0
    assert torch.equal(weights[1], torch.full((1024, 1024), 1.5))


def test_heap_memory_is_never_touched():
    weight = torch.nn.Parameter(torch.ones(1024, 1024), requires_grad=False)
    pages = CheckpointPages([weight])
    old, weight.data = weight.data, weight.data.to(torch.bfloat16)
    assert pages.release(old) == 0
    assert torch.equal(old, torch.ones(1024, 1024))  # still intact: it was not in a checkpoint map
