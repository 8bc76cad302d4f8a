"""The package's import graph (docs/architecture.md): no cycle, lazy imports inside
functions included (a cycle hidden in a method is still a cycle), and the pure stage
modules import no I/O. Read with `ast`, nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "edgeprof"
PURE = {"edgeprof.shapes", "edgeprof.hardware", "edgeprof.floor"}  # no file, driver or torch access
PURE_MAY_IMPORT = {"__future__", "dataclasses", "typing", "re", "math", "collections.abc", "edgeprof.errors",
                   "edgeprof.shapes", "edgeprof.hardware"}


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _imports(tree: ast.AST, modules: dict[str, Path]) -> set[str]:
    """Every module a file imports, anywhere in it; `from a import b` is a.b when b is a module."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in modules else node.module)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {t for t in _imports(ast.parse(f.read_text()), modules) if t in modules and t != name}
            for name, f in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_package_has_no_import_cycle() -> None:
    graph = _graph()
    assert "edgeprof.timing" in graph and graph["edgeprof.backends.base"]  # the walk sees the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_pure_stage_modules_do_no_io() -> None:
    modules = _modules()
    for name in PURE:
        extra = _imports(ast.parse(modules[name].read_text()), modules) - PURE_MAY_IMPORT
        assert not extra, f"{name} is pure (docs/architecture.md) but imports {sorted(extra)}"
