"""Layers point one way: ``fedkd`` -> ``server``/``client`` -> ``simulations``, no cycles.

The import graph is read from the source with :mod:`ast` (every ``import`` statement,
function-level ones included; those under ``if TYPE_CHECKING:`` never run and are left
out). ``fedkd/`` imports none of the other three packages; ``server/`` and ``client/``
import only ``fedkd`` (and themselves); no two modules of the four packages import each
other in a cycle, however long.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fedkd", "server", "client", "simulations")
#: Project packages each package may import (besides third-party libraries).
ALLOWED = {
    "fedkd": {"fedkd"},
    "server": {"fedkd", "server"},
    "client": {"fedkd", "client"},
    "simulations": set(PACKAGES),
}


def _modules(root: Path) -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                skipped.update(id(sub) for sub in ast.walk(stmt))
    return skipped


def _imported_names(name: str, path: Path) -> set[str]:
    """Dotted names ``name`` imports (``from a import b`` gives ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_nodes(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports (each name resolved to its module)."""
    mods = _modules(root)
    graph = {}
    for name, path in mods.items():
        targets = set()
        for imported in _imported_names(name, path):
            while imported and imported not in mods:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def forbidden_imports(graph: dict[str, set[str]]) -> list[str]:
    """``"a -> b"`` for every import that crosses the layers the wrong way."""
    bad = []
    for name, targets in sorted(graph.items()):
        allowed = ALLOWED[name.split(".")[0]]
        bad += [f"{name} -> {t}" for t in sorted(targets) if t.split(".")[0] not in allowed]
    return bad


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for start in sorted(graph):
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
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    cycles.append(sorted(group))
    return cycles


def test_no_import_crosses_the_layers_the_wrong_way() -> None:
    assert forbidden_imports(import_graph(ROOT)) == []


def test_no_import_cycle_between_modules() -> None:
    assert import_cycles(import_graph(ROOT)) == []


def test_the_graph_sees_lazy_and_relative_imports_but_not_type_checking_ones() -> None:
    graph = import_graph(ROOT)
    assert "fedkd.config" in graph["fedkd.rundir"]  # a plain module-level import
    assert "fedkd.models" in graph["fedkd.config"]  # imported inside a function
    assert "fedkd.config" not in graph["fedkd.mechanisms.base"]  # only under TYPE_CHECKING


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    for rel, text in files.items():
        (tmp_path / rel).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"fedkd/a.py": "def f():\n    from simulations import runner\n"},
            ["fedkd.a -> simulations"],
        ),
        ({"server/a.py": "from client.b import x\n", "client/b.py": ""}, ["server.a -> client.b"]),
        ({"client/a.py": "import server\n"}, ["client.a -> server"]),
    ],
)
def test_a_forbidden_import_is_reported(tmp_path: Path, files, expected) -> None:
    assert forbidden_imports(import_graph(_tree(tmp_path, files))) == expected


def test_a_cycle_through_a_relative_and_a_lazy_import_is_reported(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "fedkd/a.py": "from .b import x\n",
            "fedkd/b.py": "def g():\n    import fedkd.c\n",
            "fedkd/c.py": "from fedkd import a\n",
            "fedkd/d.py": "import typing\nif typing.TYPE_CHECKING:\n    import fedkd.a\n",
        },
    )
    graph = import_graph(root)
    assert import_cycles(graph) == [["fedkd.a", "fedkd.b", "fedkd.c"]]
    assert graph["fedkd.d"] == set()
