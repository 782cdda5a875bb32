"""Seconds per stage of a training step, for the metrics line (``time/generate``, ``time/update``, ...)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class StageTimer:
    """``with timer("update"): ...`` adds the block's wall time to ``timer.seconds["time/update"]``.

    On a GPU each stage waits for its kernels before the clock is read: CUDA runs them asynchronously, and
    without the wait a stage's time would land on the next one.
    """

    def __init__(self, device: torch.device) -> None:
        self.seconds: dict[str, float] = {}
        self._sync = torch.cuda.synchronize if device.type == "cuda" else None

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        if self._sync is not None:
            self._sync()
        self.seconds[f"time/{stage}"] = time.perf_counter() - start

    @property
    def total(self) -> float:
        return sum(self.seconds.values())
