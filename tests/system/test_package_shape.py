"""The package's shape: concept sub-packages in a one-way layer order, no import cycle, modules of
about one idea (at most 400 lines), no module named like a function or class it exports.

The layer order, bottom to top (an import may only point to its own layer or one below):

``errors``, ``_lazy`` -> ``task``, ``policy``, ``device``, ``unpack``, ``distill_losses`` -> ``analysis`` ->
``techniques`` -> ``measure`` -> ``targets`` -> ``pipeline`` -> ``integrations`` -> ``study`` ->
``reporting`` -> ``api``, ``cli`` (and the package ``__init__``).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "autocompress"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> package modules it imports anywhere (top level, functions, TYPE_CHECKING)."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                while target and target not in paths:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None. Importing a package's ``__init__`` from
    its own submodule is not counted (Python imports the parent first anyway)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_import_graph_resolves_relative_imports():
    graph = import_graph()
    assert "autocompress.study.session" in graph["autocompress.study.backends.local"]
    assert "autocompress.errors" in graph["autocompress.study.rundir"]


LAYERS: list[set[str]] = [
    {"errors", "_lazy"},
    {"task", "policy", "device", "unpack", "distill_losses"},
    {"analysis"},
    {"techniques"},
    {"measure"},
    {"targets"},
    {"pipeline"},
    {"integrations"},
    {"study"},
    {"reporting"},
    {"api", "cli", ""},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def layer_of(module: str) -> int:
    """The layer index of a package module (``autocompress.x.y`` -> the rank of ``x``)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top not in RANK:
        raise AssertionError(f"{module}: {top!r} is in no layer; add it to LAYERS")
    return RANK[top]


def upward_edges(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{a} -> {b}"
        for a, targets in sorted(graph.items())
        for b in sorted(targets)
        if b != "autocompress" and layer_of(b) > layer_of(a)
    ]


def test_layer_check_finds_an_upward_edge():
    graph = {
        "autocompress.task": {"autocompress.study.session"},
        "autocompress.study.session": set(),
    }
    assert upward_edges(graph) == ["autocompress.task -> autocompress.study.session"]
    assert upward_edges({"autocompress.study.session": {"autocompress.task"}}) == []


def test_every_import_points_down_the_layer_order():
    assert upward_edges(import_graph()) == []


def test_the_top_level_holds_only_the_layers():
    tops = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    assert tops - {"__init__"} <= set(RANK), tops - set(RANK)


def test_no_package_module_over_400_lines():
    long = {
        _module_name(p): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}


def _exported(path: Path) -> set[str]:
    """Top-level functions and classes a module defines (its own names, not imports)."""
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}


def test_no_module_named_like_a_function_or_class_it_defines():
    # ``autocompress.compress`` was both a module and a function: ``import autocompress.compress
    # as m`` returned the function. A package attribute must mean one thing.
    clashes = [
        _module_name(p)
        for p in PACKAGE.rglob("*.py")
        if p.stem != "__init__" and p.stem in _exported(p)
    ]
    assert clashes == []


def test_every_sub_package_declares_its_public_surface():
    missing = [
        _module_name(init)
        for init in PACKAGE.rglob("__init__.py")
        if "__all__" not in init.read_text()
    ]
    assert missing == []


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_ray_is_imported_only_by_its_backend():
    users = {
        _module_name(p)
        for p in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        and any(
            (n.name if isinstance(node, ast.Import) else (node.module or "")).split(".")[0] == "ray"
            for n in node.names
        )
        and not getattr(node, "level", 0)
    }
    # the ray backend is a package (its Tune driver objects in a private module of it)
    assert users and all(
        u == "autocompress.study.backends.ray" or u.startswith("autocompress.study.backends.ray.")
        for u in users
    ), users
