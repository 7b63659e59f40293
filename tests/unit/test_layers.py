"""The package layout docs/architecture.md describes, checked on the source.

Every import counts, the ones inside functions too: an import deferred to call
time still ties the two modules together. Only imports under ``if TYPE_CHECKING:``
are left out (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import haeedge

ROOT = Path(haeedge.__file__).parent

#: Package -> the packages it may not import (imports only go downwards).
FORBIDDEN = {
    "repo": {"cli", "ui", "operations", "archiver", "restorer", "mount"},
    "backends": {"cli", "ui", "operations", "archiver", "restorer", "mount", "repo", "crypto"},
    "crypto": {"cli", "ui", "operations", "archiver", "restorer", "mount", "repo", "backends"},
    "chunking": {"cli", "ui", "operations", "archiver", "restorer", "mount", "repo", "backends", "crypto"},
    "operations": {"cli"},
    "archiver": {"cli", "restorer", "mount"},
    "restorer": {"cli", "archiver", "mount"},
    "mount": {"cli"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for inner in node.body:
                skip.update(id(n) for n in ast.walk(inner))
    return skip


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_only(tree)
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # "from haeedge.repo import lock": the submodule when there is one, else the package
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            deps.update(t for t in targets if t in modules and t != name)
        graph[name] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if d.startswith(n + ".") or n.startswith(d + "."):
                continue  # a package and its own modules (re-exports in __init__)
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 80  # the walk found the package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_imports_only_go_downwards():
    wrong = []
    for name, deps in import_graph().items():
        parts = name.split(".")
        package = parts[1] if len(parts) > 1 else ""
        for dep in deps:
            dep_parts = dep.split(".")
            if len(dep_parts) > 1 and dep_parts[1] in FORBIDDEN.get(package, ()):
                wrong.append(f"{name} imports {dep}")
    assert not wrong, wrong
