"""The package's layers, read from the source: arrows point down, no cycles, no file too long.

Layers, top to bottom (docs/architecture.md)::

    cli, demo, __main__
    algos, eval, feedback
    rollout, rewards
    models, data, engine
    core
    config, errors, io (the foundations every layer may use)

A module may import its own layer's modules and any lower layer's, never a higher one's; `rlhfkit.core` imports
torch and nothing else of the field (no transformers, no peft); `rlhfkit.models` does not import `rlhfkit.rollout`.
Imports are read with ``ast`` (inside functions too), so a lazy import counts like any other. The tests mirror the
package: every folder under tests/ is a package (or a data folder) of src/rlhfkit.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src" / "rlhfkit"
LAYERS = [
    {"cli", "demo", "__main__"},
    {"algos", "eval", "feedback"},
    {"rollout", "rewards"},
    {"models", "data", "engine"},
    {"core"},
    {"config", "errors", "io", "__init__"},
]
LEVEL = {name: depth for depth, names in enumerate(LAYERS) for name in names}
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, module: str) -> set[str]:
    """rlhfkit modules imported anywhere in ``path`` (absolute and relative imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "rlhfkit"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] == "rlhfkit":
                out.add(base)
                out |= {f"{base}.{a.name}" for a in node.names}  # `from rlhfkit.x import y` may import module x.y
    return out


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


MODULES = _modules()
GRAPH = {m: {i for i in _imports(p, m) if i in MODULES and i != m} for m, p in MODULES.items()}


def test_every_top_level_module_has_a_layer():
    assert {_top(m) for m in MODULES} <= set(LEVEL), {_top(m) for m in MODULES} - set(LEVEL)


def test_no_module_imports_a_higher_layer():
    upward = sorted(
        f"{m} -> {i}"
        for m, imports in GRAPH.items()
        for i in imports
        if LEVEL[_top(i)] < LEVEL[_top(m)] and _top(m) != "__init__"
    )
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_models_do_not_import_rollout():
    assert not [f"{m} -> {i}" for m, imports in GRAPH.items() if _top(m) == "models" for i in imports
                if _top(i) == "rollout"]  # fmt: skip


def test_there_are_no_import_cycles():
    # Tarjan's strongly connected components over the module graph; a component of 2+ modules is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            # a package's __init__ importing its own submodules is not a cycle in the sense that matters
            if len(component) > 1 and not _only_package_init(component):
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def _only_package_init(component: list[str]) -> bool:
    packages = [m for m in component if MODULES[m].name == "__init__.py"]
    return len(packages) == 1 and all(m.startswith(packages[0] + ".") or m == packages[0] for m in component)


def test_the_tensor_core_imports_only_torch():
    field = defaultdict(set)
    for m, path in MODULES.items():
        if _top(m) != "core":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])  # fmt: skip
            for name in names:
                top = name.split(".")[0]
                if top not in {"torch", "rlhfkit", "__future__"} and top not in sys.stdlib_module_names:
                    field[m].add(top)
                if top == "rlhfkit" and _top(name) != "core":
                    field[m].add(name)
    assert not field, dict(field)


def test_importing_the_core_loads_neither_transformers_nor_peft():
    code = "import sys, rlhfkit.core; print(','.join(m for m in ('transformers', 'peft') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_source_file_is_over_450_lines(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_LINES


def test_the_tests_mirror_the_package_layout():
    folders = {p.relative_to(TESTS) for p in TESTS.rglob("*") if p.is_dir() and "__pycache__" not in p.parts}
    assert folders, "no test folders found"
    assert not [str(f) for f in folders if not (SRC / f).is_dir()], "test folders with no package of that name"
