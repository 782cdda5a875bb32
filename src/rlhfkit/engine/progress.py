"""A progress bar for training loops, with live figures (loss, score, KL) beside it (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class StepProgress:
    """``with StepProgress("sft", total) as bar: bar.advance(loss=0.3)``; silent when not enabled."""

    def __init__(self, label: str, total: int, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn(f"[bold]{label}[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[figures]}"),
            console=console or Console(stderr=True),
            disable=not enabled,
            transient=False,
        )
        self._task = self._progress.add_task(label, total=total, figures="")

    def __enter__(self) -> "StepProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def advance(self, steps: int = 1, **figures: float) -> None:
        shown = "  ".join(f"{k} {v:.4g}" for k, v in figures.items())
        self._progress.update(self._task, advance=steps, figures=shown)
