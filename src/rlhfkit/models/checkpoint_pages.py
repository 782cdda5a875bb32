"""Handing a memory-mapped checkpoint's pages back to the OS once the weights have been copied out of them.

transformers loads a ``.safetensors`` checkpoint as a memory map: each weight is a view into the file, and a
page of the file counts towards the process's resident memory from the first time it is read. When rlhfkit
then copies the weights out of the map (stores the frozen linear layers in bf16, see
:meth:`rlhfkit.models.policy.PolicyWithValueHead.store_frozen_weights_in`), every page of the file is read
once, and the map is only unmapped when its last weight has been replaced. Until then the whole fp32 file is
resident next to the new copies: on the FLAN-T5-base shape that transient was the peak of the whole PPO run
(~1970 MiB, against ~1600 MiB while training).

:class:`CheckpointPages` gives back the pages of each weight as soon as it has been copied, with
``madvise(MADV_DONTNEED)``. For a private file mapping that drops the pages from this process; reading them
again would fetch them from the file. Two rules keep that safe:

* only pages inside a mapping of a ``.safetensors`` file are touched (never heap memory), and only the pages
  that lie wholly inside the replaced tensor's bytes;
* a page is given back only when no tensor of the model still points into it. A page that something had
  modified in place (e.g. an SFT adapter merged into the weights) is therefore only dropped once the new
  copy, which holds the modification, has replaced every view of it.

Where ``/proc/self/maps`` or ``madvise`` is missing (macOS, Windows) nothing is given back: the weights are
the same, only the transient peak stays.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from pathlib import Path
from typing import Iterable

import torch

_MADV_DONTNEED = 4  # Linux's value (<sys/mman.h>); the only platform where this module acts


def _checkpoint_mappings() -> list[tuple[int, int]]:
    """(start, end) address ranges of the private mappings of ``.safetensors`` files in this process."""
    maps = Path("/proc/self/maps")
    if not sys.platform.startswith("linux") or not maps.exists():
        return []
    ranges = []
    for line in maps.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].endswith(".safetensors") and fields[1].endswith("p"):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def _span(t: torch.Tensor) -> tuple[int, int]:
    """[first, last) addresses of the bytes ``t`` reads (any non-negative strides)."""
    if t.numel() == 0:
        return 0, 0
    extent = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
    return t.data_ptr(), t.data_ptr() + extent * t.element_size()


class CheckpointPages:
    """Gives back the checkpoint pages of tensors that have been replaced by copies.

    ``tensors`` are the model's parameters and buffers, the objects whose ``.data`` the caller replaces; the
    ones that point into a checkpoint map are remembered, and a page is only given back when none of them
    points into it any more.
    """

    def __init__(self, tensors: Iterable[torch.Tensor]) -> None:
        self._mappings = _checkpoint_mappings()
        self._libc = ctypes.CDLL(None, use_errno=True) if self._mappings else None
        self._mapped = [t for t in tensors if self._in_checkpoint(_span(t))]
        self.released_bytes = 0

    def _in_checkpoint(self, span: tuple[int, int]) -> bool:
        first, last = span
        return last > first and any(start <= first and last <= end for start, end in self._mappings)

    def release(self, replaced: torch.Tensor) -> int:
        """Give back the pages of ``replaced`` (a tensor the model no longer uses); returns the bytes given back."""
        if self._libc is None or replaced.device.type != "cpu":
            return 0
        first, last = _span(replaced)
        if not self._in_checkpoint((first, last)):
            return 0  # not in a checkpoint map (heap memory, say): never touched here
        page = mmap.PAGESIZE
        lo, hi = -(-first // page) * page, last // page * page  # whole pages inside the tensor's bytes only
        self._mapped = [t for t in self._mapped if self._in_checkpoint(_span(t))]  # drop the replaced ones
        if hi <= lo or any(t_first < hi and lo < t_last for t_first, t_last in map(_span, self._mapped)):
            return 0  # less than a page, or a tensor of the model still reads these pages
        if self._libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), _MADV_DONTNEED) != 0:
            return 0  # refused by the kernel: the memory stays, nothing is lost
        self.released_bytes += hi - lo
        return hi - lo
