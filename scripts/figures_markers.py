"""Markers for `make figures` (scripts/figures.py): finding the <!-- figures:NAME --> blocks of README.md and
docs/*.md and replacing what lies between them, nothing else."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from figures_render import RENDERERS
from figures_runs import ROOT, FiguresError

# --------------------------------------------------------------------------------------------------
# Markers: finding the blocks and replacing what lies between them

MARKER = re.compile(r"<!-- (/?)figures:([a-z0-9-]+) -->")


@dataclass(frozen=True)
class Block:
    name: str
    start: int
    """Offset just after the opening marker."""
    end: int
    """Offset of the closing marker."""


def find_blocks(text: str, where: str = "text") -> list[Block]:
    """The marked blocks of a document, in order; an unbalanced, nested or repeated marker is an error."""
    blocks: list[Block] = []
    open_: tuple[str, int] | None = None
    for m in MARKER.finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        line = text.count("\n", 0, m.start()) + 1
        if not closing:
            if open_ is not None:
                raise FiguresError(f"{where}:{line}: marker figures:{name} opens inside figures:{open_[0]}, "
                                   f"which is not closed")
            if any(b.name == name for b in blocks):
                raise FiguresError(f"{where}:{line}: figures:{name} appears twice")
            open_ = (name, m.end())
        else:
            if open_ is None or open_[0] != name:
                expected = f"<!-- /figures:{open_[0]} -->" if open_ else "an opening marker before it"
                raise FiguresError(f"{where}:{line}: closing marker /figures:{name} without its opening "
                                   f"(expected {expected})")
            blocks.append(Block(name, open_[1], m.start()))
            open_ = None
    if open_ is not None:
        raise FiguresError(f"{where}: marker figures:{open_[0]} is never closed (<!-- /figures:{open_[0]} -->)")
    return blocks


def replace_blocks(text: str, rendered: dict[str, str | None], where: str = "text") -> str:
    """``text`` with the inside of each marked block replaced by its rendering (None: left as it is); nothing
    else changes."""
    pieces, last = [], 0
    for block in find_blocks(text, where):
        if block.name not in rendered:
            raise FiguresError(f"{where}: no renderer for marker figures:{block.name}")
        new = rendered[block.name]
        if new is None:
            continue
        pieces += [text[last : block.start], "\n", new.strip("\n"), "\n"]
        last = block.end
    pieces.append(text[last:])
    return "".join(pieces)


def documents(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def check_markers(texts: dict[str, str], renderers: dict[str, Any] = RENDERERS) -> dict[str, str]:
    """Marker name → document for every block; every marker has a renderer, every renderer a marker, once."""
    where: dict[str, str] = {}
    for name, text in texts.items():
        for block in find_blocks(text, name):
            if block.name in where:
                raise FiguresError(f"figures:{block.name} appears in both {where[block.name]} and {name}")
            where[block.name] = name
    unknown = sorted(set(where) - set(renderers))
    missing = sorted(set(renderers) - set(where))
    if unknown:
        raise FiguresError("markers without a renderer: " + ", ".join(f"figures:{n} ({where[n]})" for n in unknown))
    if missing:
        raise FiguresError("renderers whose marker is missing from README.md and docs/*.md: "
                           + ", ".join(f"figures:{n}" for n in missing))
    return where
