"""May this run folder be resumed with this configuration? The same check for every algorithm."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rlhfkit.config import load_config
from rlhfkit.errors import RlhfkitError


def differences(a: Any, b: Any, prefix: str = "") -> set[str]:
    """Dotted keys whose values differ between two configurations (nested dataclasses)."""
    if dataclasses.is_dataclass(a):
        out: set[str] = set()
        for f in dataclasses.fields(a):
            out |= differences(getattr(a, f.name), getattr(b, f.name), f"{prefix}{f.name}.")
        return out
    return set() if a == b else {prefix.rstrip(".")}


def check_resumable(cfg: Any, out: Path, may_change: set[str], kind: str) -> None:
    """Refuse to resume ``out`` unless its saved config.yaml equals ``cfg`` up to the keys in ``may_change``
    (settings that do not change what was computed so far, e.g. the number of steps)."""
    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        raise RlhfkitError(f"cannot resume: {str(out)!r} has no config.yaml, so it is not a {kind} run folder.")
    saved = load_config([saved_path])
    diffs = differences(saved, cfg) - may_change - {"run.output_dir"}
    if diffs:
        raise RlhfkitError(
            f"cannot resume {str(out)!r}: the configuration differs from the run's in {sorted(diffs)}. Resume with "
            f"the same settings (only {sorted(may_change)} may change), or start a new run in another folder."
        )
