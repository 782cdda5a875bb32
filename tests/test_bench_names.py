"""A benchmark script's folder comes first on sys.path, so a module in bench/ named like an installed package
shadows it for everything the script imports: bench/kernels.py once hid the `kernels` package that transformers
imports, and `python bench/ppo_step.py` failed while building its preset."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_no_benchmark_module_shadows_an_installed_package(script):
    assert importlib.util.find_spec(script.stem) is None, f"bench/{script.name} shadows the package {script.stem!r}"
