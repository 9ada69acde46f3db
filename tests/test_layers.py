"""Layers point one way: ``fedkd`` -> ``fedkd.server``/``fedkd.client`` -> ``fedkd.simulations``.

The folders ``server/``, ``client/`` and ``simulations/`` install as ``fedkd.server``,
``fedkd.client`` and ``fedkd.simulations`` (``pyproject.toml``); the rest of ``fedkd/`` is
the core. The import graph is read from the source with :mod:`ast` (every ``import``
statement, function-level ones included; those under ``if TYPE_CHECKING:`` never run and
are left out). The core imports none of the other three; ``fedkd.server`` and
``fedkd.client`` import only the core (and themselves); nothing imports a top-level
``server``, ``client`` or ``simulations`` (that would load a second copy of a module
beside the installed one); no two modules import each other in a cycle, however long.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Source folder -> the package it installs as.
FOLDERS = {
    "fedkd": "fedkd",
    "server": "fedkd.server",
    "client": "fedkd.client",
    "simulations": "fedkd.simulations",
}
#: Layers each layer may import (besides third-party libraries).
ALLOWED = {
    "core": {"core"},
    "server": {"core", "server"},
    "client": {"core", "client"},
    "simulations": {"core", "server", "client", "simulations"},
}
#: Names that exist only as folders of the repository, never as installed packages.
TOP_LEVEL = ("server", "client", "simulations")


def layer(module: str) -> str:
    """``core``, ``server``, ``client`` or ``simulations``: the layer of a module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in TOP_LEVEL else "core"


def _modules(root: Path) -> dict[str, Path]:
    mods = {}
    for folder, package in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            if folder == "fedkd" and path.relative_to(root / folder).parts[0] in TOP_LEVEL:
                continue
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join([package, *parts])] = path
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
            if imported.split(".")[0] in TOP_LEVEL:
                targets.add(imported)  # reported by forbidden_imports
                continue
            while imported and imported not in mods:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        # ``from server.b import x`` gives server.b and server.b.x: keep the module named
        top = {t for t in targets if t.split(".")[0] in TOP_LEVEL}
        graph[name] = targets - {t for t in top if any(t.startswith(f"{u}.") for u in top)}
    return graph


def forbidden_imports(graph: dict[str, set[str]]) -> list[str]:
    """``"a -> b"`` for every import that crosses the layers the wrong way."""
    bad = []
    for name, targets in sorted(graph.items()):
        allowed = ALLOWED[layer(name)]
        bad += [
            f"{name} -> {t}"
            for t in sorted(targets)
            if t.split(".")[0] in TOP_LEVEL or layer(t) not in allowed
        ]
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
    for pkg in FOLDERS:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    for rel, text in files.items():
        (tmp_path / rel).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"fedkd/a.py": "def f():\n    from fedkd.simulations import runner\n"},
            ["fedkd.a -> fedkd.simulations"],
        ),
        (
            {"server/a.py": "from fedkd.client.b import x\n", "client/b.py": ""},
            ["fedkd.server.a -> fedkd.client.b"],
        ),
        ({"client/a.py": "from ..server import b\n"}, ["fedkd.client.a -> fedkd.server"]),
        ({"simulations/a.py": "import server.app\n"}, ["fedkd.simulations.a -> server.app"]),
        ({"server/a.py": "from server.b import x\n"}, ["fedkd.server.a -> server.b"]),
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
