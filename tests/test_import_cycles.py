"""No import cycles in worker/ or producer/ (nor through celeryconfig): each module can be
read, and changed, on its own.

Static: every ``import`` in a module counts (at the top, inside a function, or under
``TYPE_CHECKING``), since an import moved into a function to dodge a cycle still ties the
two modules to each other.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("worker", "producer")
#: Modules beside the packages that import from them.
MODULES = ("celeryconfig",)


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, packages: tuple[str, ...],
                 modules: tuple[str, ...] = ()) -> dict[str, dict[str, int]]:
    """Each module of ``packages`` (and each of ``modules``) under ``root``, and the modules
    among them it imports (with the line of the first such import)."""
    files = {module_name(path, root): path for package in packages
             for path in sorted((root / package).rglob("*.py"))}
    files.update({name: root / f"{name}.py" for name in modules})
    graph: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, name, is_package)
                # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name`` mod.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                # ``import pkg.mod.x`` names the nearest module of ours it runs.
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".")
    if not is_package:
        package = package[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (``[a, b, …, a]``) for each group of modules that import one another."""
    cycles = []
    for group in _strongly_connected(graph):
        if len(group) < 2:
            continue
        start = min(group)
        # Shortest way back to ``start`` inside the group: a cycle to name in the failure.
        came_from: dict[str, str] = {}
        frontier = [start]
        while start not in came_from:
            following = []
            for here in frontier:
                for there in sorted(graph[here]):
                    if there in group and there not in came_from:
                        came_from[there] = here
                        following.append(there)
            frontier = following
        path = [start]
        while len(path) == 1 or path[-1] != start:
            path.append(came_from[path[-1]])
        cycles.append(path[::-1])
    return sorted(cycles)


def _strongly_connected(graph: dict[str, dict[str, int]]) -> list[set[str]]:
    """Tarjan's algorithm, without recursion."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
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
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                groups.append(group)
    return groups


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    steps = [f"{a} (line {graph[a][b]}) -> " for a, b in itertools.pairwise(cycle)]
    return "".join(steps) + cycle[-1]


def test_worker_and_producer_have_no_import_cycle() -> None:
    graph = import_graph(ROOT, PACKAGES, MODULES)
    assert "worker.jobs" in graph
    assert "producer.cli" in graph
    assert "worker.redisurl" in graph["celeryconfig"]
    cycles = find_cycles(graph)
    tangled = sorted(m for group in _strongly_connected(graph) if len(group) > 1 for m in group)
    assert not cycles, ("import cycles:\n" + "\n".join(describe(c, graph) for c in cycles)
                        + "\nevery module on a cycle: " + ", ".join(tangled))


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_detector_names_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import helper\n",
        "pkg/b.py": "import os\n\n\ndef helper():\n    from pkg import c\n    return c\n",
        "pkg/c.py": "import pkg.a\n",
        "pkg/d.py": "from pkg.a import x\n",
    })
    graph = import_graph(tmp_path, ("pkg",))
    cycles = find_cycles(graph)
    assert cycles == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert describe(cycles[0], graph) == "pkg.a (line 1) -> pkg.b (line 5) -> pkg.c (line 1) -> pkg.a"


def test_the_detector_follows_relative_and_type_checking_imports_across_packages(
        tmp_path: Path) -> None:
    write_package(tmp_path, {
        "one/__init__.py": "",
        "one/helper.py": "from .sub import a\n",
        "one/sub/__init__.py": "",
        "one/sub/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from two.b import B\n",
        "one/sub/d.py": "from .. import helper\n",
        "two/__init__.py": "",
        "two/b.py": "from . import c\n",
        "two/c.py": "from one import helper\n",
    })
    graph = import_graph(tmp_path, ("one", "two"))
    assert graph["one.sub.d"] == {"one.helper": 1}
    assert find_cycles(graph) == [["one.helper", "one.sub.a", "two.b", "two.c", "one.helper"]]


def test_the_detector_passes_a_package_without_cycles(tmp_path: Path) -> None:
    write_package(tmp_path, {
        "pkg/__init__.py": "from pkg.a import A\n",
        "pkg/a.py": "import json\nfrom pkg import b\n",
        "pkg/b.py": "from pkg.c import C\nimport pkg.c\n",
        "pkg/c.py": "import json\n",
    })
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.a"] == {"pkg.b": 2}
    assert graph["pkg.b"] == {"pkg.c": 1}
    assert find_cycles(graph) == []
