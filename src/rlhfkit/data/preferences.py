"""Preference records: what a judgment between responses is, and how it is written for TRL.

The feedback app, ``rlhfkit reward train`` and the trainers to come all speak these types:

- :class:`PreferencePair`: ``chosen`` is better than ``rejected`` as a response to ``prompt`` (as read from
  a file or exported from the feedback store);
- :class:`UnpairedLabel`: one response judged good or bad (TRL's unpaired, KTO-style data);
- :class:`Comparison`: a cleaned pair as a trainer sees it, with a margin and a tie flag.

Reading every input format into them is :mod:`rlhfkit.data.preference_readers` (line by line) and
:mod:`rlhfkit.data.preference_sources` (files, Parquet tables, hub datasets, cleaning). Writing is TRL's
JSONL here; every write is atomic.
"""

from __future__ import annotations

import errno
import json
import os
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.errors import RlhfkitError
from rlhfkit.io import write_lines_atomic


class FormatError(RlhfkitError):
    """A line of an input file does not have the fields its format needs."""


@dataclass(frozen=True)
class PreferencePair:
    """One judgment that ``chosen`` is a better response to ``prompt`` than ``rejected``."""

    prompt: str
    chosen: str
    rejected: str
    margin: float | None = None
    """How much better, on TRL's margin scale; None when the source states no strength."""
    annotator: str | None = None
    """Who judged (a worker id, an annotator name), when the source says."""
    chosen_source: str | None = None
    """Which policy produced ``chosen`` (e.g. ``sft``), when known."""
    rejected_source: str | None = None
    """Which policy produced ``rejected``, when known."""
    line: int | None = field(default=None, compare=False)
    """Line of the file it was read from (for error messages); not part of the record's identity."""


@dataclass(frozen=True)
class UnpairedLabel:
    """One judgment that ``completion`` is a good (True) or bad (False) response to ``prompt``."""

    prompt: str
    completion: str
    label: bool
    annotator: str | None = None
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Comparison:
    """One judgment between two responses to a prompt (``chosen`` preferred, unless ``tie``)."""

    prompt: str
    chosen: str
    rejected: str
    margin: float = 0.0
    """Required reward gap (TRL's margin); 0 when the source states none."""
    tie: bool = False
    """The judge found both equally good; ``chosen`` / ``rejected`` are then just the two candidates."""
    annotator: str | None = None


# ---------------------------------------------------------------------------------------------- writing


def pair_to_trl(pair: PreferencePair) -> dict[str, object]:
    """The TRL JSON object of a pair: exactly ``prompt``, ``chosen``, ``rejected`` and a float ``margin``.

    A pair without a stated strength gets margin 0.0, which makes TRL's loss the plain Bradley–Terry loss.
    """
    margin = 0.0 if pair.margin is None else float(pair.margin)
    return {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected, "margin": margin}


def unpaired_to_trl(label: UnpairedLabel) -> dict[str, object]:
    """The TRL JSON object of an unpaired label: exactly ``prompt``, ``completion`` and a bool ``label``."""
    return {"prompt": label.prompt, "completion": label.completion, "label": bool(label.label)}


def write_jsonl_atomic(objects: Iterable[dict[str, object]], path: str | os.PathLike[str]) -> int:
    """Write one JSON object per line to ``path`` atomically; returns the number of lines.

    Streams through :func:`rlhfkit.io.write_lines_atomic`: a reader (or a crash) sees the old file or the
    complete new one, never half of it.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise RlhfkitError(f"cannot write {path}: directory {directory} does not exist")
    try:
        return write_lines_atomic(path, (json.dumps(obj, ensure_ascii=False) + "\n" for obj in objects))
    except OSError as exc:
        raise RlhfkitError(_write_failure(path, exc)) from None


def _write_failure(path: Path, exc: OSError) -> str:
    """One paragraph: which file, why, that nothing changed (the write is atomic), and what to do."""
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    cause = "no space left on device" if full else (exc.strerror or str(exc)).lower()
    kept = f" (the previous {path} is intact)" if path.is_file() else ""
    todo = (
        "free some space on that disk, or write the file to another disk"
        if full
        else "check that the path names a file (not a folder) in a folder you can write to"
    )
    return f"could not write {path}: {cause}. Nothing was changed{kept}. Please {todo}, then run the command again."


# -------------------------------------------------------------------------------------------- splitting


def split_by_prompt(items: Sequence[Any], test_size: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Hold out ``test_size`` of the distinct prompts; every item of a prompt lands on the same side.

    Splitting by prompt, not by pair, keeps the held-out accuracy honest: a model must not have seen
    another judgment about the same prompt (often with the very same responses) during training.
    """
    groups: dict[str, list[Any]] = defaultdict(list)
    for item in items:
        groups[item.prompt].append(item)
    prompts = sorted(groups)
    if len(prompts) < 2:
        raise RlhfkitError(
            "all preference examples share one prompt, so none can be held out by prompt; give held-out data "
            "in data.eval_files."
        )
    random.Random(seed).shuffle(prompts)
    n_test = min(len(prompts) - 1, max(1, round(test_size * len(prompts))))
    test = [x for p in prompts[:n_test] for x in groups[p]]
    train = [x for p in prompts[n_test:] for x in groups[p]]
    return train, test


def cap_by_prompt(items: list[Any], limit: int | None) -> list[Any]:
    """The first whole prompt groups of ``items`` holding at least ``limit`` items (all when None)."""
    if limit is None or len(items) <= limit:
        return items
    out: list[Any] = []
    seen: set[str] = set()
    for item in items:
        if item.prompt not in seen and len(out) >= limit:
            break
        seen.add(item.prompt)
        out.append(item)
    return out
