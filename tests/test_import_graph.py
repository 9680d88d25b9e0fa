"""omen_local's import graph has no cycle, lazy (function-level) imports included.

A cycle hidden behind an import inside a function still couples the two modules both ways
(and breaks the moment someone hoists the import). Excluded: ``if TYPE_CHECKING:`` blocks
(never run) and a module's import of its own ancestor packages (Python runs the package's
``__init__`` first anyway, so the edge carries no order). Also holds what
docs/architecture.md promises: omen_local imports the app, Glyph or Rune only in the two
places it names, and only inside a function.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import omen_local

ROOT = Path(omen_local.__file__).parent
PKG = "omen_local"
OUTSIDE = ("app", "glyph", "rune", "PySide6", "qasync")
# docs/architecture.md: the only imports of OUTSIDE packages, each inside a function.
ALLOWED_OUTSIDE = {("omen_local.cli", "app.main"), ("omen_local.doctor", "glyph.config")}


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it runs inside a function; TYPE_CHECKING blocks skipped."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), in_function)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield from _imports(node, inner)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute names the statement imports (a ``from X import y`` may import module X.y)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        here = module.split(".")
        if MODULES[module].name != "__init__.py":
            here = here[:-1]
        here = here[: len(here) - (node.level - 1)]
        base = ".".join(here + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _known(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        deps: set[str] = set()
        for node, _ in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            for name in _targets(module, node):
                dep = _known(name)
                if dep is not None and dep != module and not module.startswith(dep + "."):
                    deps.add(dep)
        graph[module] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_checker_finds_a_cycle_and_ignores_what_it_should() -> None:
    """The checker itself can fail: a made-up cycle is found, ancestors and TYPE_CHECKING are not edges."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    code = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\ndef f():\n    import y\n"
    assert [(n.names[0].name, lazy) for n, lazy in _imports(ast.parse(code)) if isinstance(n, ast.Import)] == [("y", True)]
    graph = _graph()
    assert "omen_local.metering" not in graph["omen_local.metering.meter"]  # its own package
    assert "omen_local.service" not in graph["omen_local.endpoint"]  # only under TYPE_CHECKING


def test_no_import_cycle() -> None:
    graph = _graph()
    cycles = _cycles(graph)
    described = [
        "among " + ", ".join(cycle) + ": " + "; ".join(f"{m} imports {', '.join(sorted(graph[m] & set(cycle)))}" for m in cycle)
        for cycle in cycles
    ]
    assert not cycles, "import cycles in omen_local:\n" + "\n".join(described)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_outside_packages_only_where_the_doc_says(module: str) -> None:
    """docs/architecture.md: omen_local imports the app or Glyph only lazily, in cli.py's
    `omen app` and doctor.py's Glyph check; Qt and Rune never."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node, lazy in _imports(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            continue
        for name in _targets(module, node)[:1] if isinstance(node, ast.ImportFrom) else _targets(module, node):
            if name.split(".")[0] in OUTSIDE:
                assert (module, name) in ALLOWED_OUTSIDE and lazy, (
                    f"{module} line {node.lineno} imports {name}"
                    + ("" if lazy else " at module level")
                    + ": docs/architecture.md allows only cli.py's app.main and doctor.py's glyph.config, in a function"
                )
