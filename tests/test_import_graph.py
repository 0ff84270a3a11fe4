"""The import graph of hsm_lab, infra and policy has no cycle (issue 10's first check for reviewers).

Every import counts, as a reviewer's tool (pydeps, import-linter) draws them: module level,
inside functions (the CLI defers its heavy imports that way) and under `if TYPE_CHECKING:`.
`from pkg import name` is an edge to `pkg.name` when that is a module, else to `pkg`.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("hsm_lab", "infra", "policy")


def modules(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _owner(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.stmt, module: str, is_package: bool, known: dict[str, Path]) -> set[str | None]:
    if isinstance(node, ast.Import):
        return {_owner(alias.name, known) for alias in node.names}
    if not isinstance(node, ast.ImportFrom):
        return set()
    base = node.module or ""
    if node.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    return {
        _owner(f"{base}.{alias.name}", known) if f"{base}.{alias.name}" in known else _owner(base, known)
        for alias in node.names
    }


def import_graph(root: Path) -> dict[str, set[str]]:
    known = modules(root)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, name, path.name == "__init__.py", known):
                    if target and target != name:
                        graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
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
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph(REPO)
    assert len(graph) > 100  # every module of the three packages was read
    assert cycles(graph) == []


def test_a_planted_cycle_is_found(tmp_path: Path) -> None:
    """The check can fail: a package whose modules import each other, and one through __init__."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "hsm_lab" / "a.py").write_text("from hsm_lab import b\n")
    (tmp_path / "hsm_lab" / "b.py").write_text("import hsm_lab.c\n")
    (tmp_path / "hsm_lab" / "c.py").write_text("from .a import thing\n")
    (tmp_path / "infra" / "__init__.py").write_text("from infra.d import x\n")
    (tmp_path / "infra" / "d.py").write_text("from infra import y\n")
    (tmp_path / "policy" / "e.py").write_text("def f():\n    import policy.g\n")  # deferred, still an edge
    (tmp_path / "policy" / "g.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import policy.e\n"
    )
    (tmp_path / "policy" / "h.py").write_text("import policy.e\n")  # into a cycle, not part of it
    assert sorted(cycles(import_graph(tmp_path))) == [
        ["hsm_lab.a", "hsm_lab.b", "hsm_lab.c"],
        ["infra", "infra.d"],
        ["policy.e", "policy.g"],
    ]
