"""Fixtures of the data tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def write_jsonl():
    """``write_jsonl(path, rows)`` writes one JSON object per line and returns the path."""

    def write(path: Path, rows: list[dict]) -> Path:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path

    return write
