"""The layer order of docs/architecture.md holds in the code: a module imports only from its own
layer or lower ones, and no modules import each other in a cycle.

The import graph is read from the source (every ``import`` statement, inside functions too;
those under ``if TYPE_CHECKING:`` run only for type checkers and are left out), so a lazy import
cannot hide a dependency.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("gan_models", "flows")


def layer_table() -> list[tuple[str, list[str]]]:
    """(layer name, module prefixes) from the ```layers block of docs/architecture.md, lowest first."""
    text = (REPO / "docs/architecture.md").read_text()
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no ```layers block"
    table = []
    for line in block.group(1).splitlines():
        if line.strip():
            number, name, *modules = line.split()
            assert int(number) == len(table), line
            table.append((name, modules))
    return table


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _runtime_imports(tree: ast.Module):
    """Import nodes, skipping ``if TYPE_CHECKING:`` blocks."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (``from pkg import mod`` counts as ``pkg.mod``)."""

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                targets = [f"{base}.{a.name}" for a in node.names]
            edges |= {t for t in map(resolve, targets) if t and t != name}
        graph[name] = edges
    return graph


def layer_of(module: str, table: list[tuple[str, list[str]]]) -> int | None:
    best = None
    for i, (_, prefixes) in enumerate(table):
        for p in prefixes:
            within = module == p or module.startswith(p + ".")
            if within and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return None if best is None else best[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(modules())


def test_every_module_has_a_layer(graph):
    table = layer_table()
    assert [m for m in graph if layer_of(m, table) is None] == []


def test_imports_run_down_the_layers(graph):
    table = layer_table()
    upward = [
        f"{src} ({table[a][0]}) imports {dst} ({table[b][0]})"
        for src, dsts in sorted(graph.items())
        for dst in sorted(dsts)
        if (a := layer_of(src, table)) is not None
        and (b := layer_of(dst, table)) is not None
        and b > a
    ]
    assert upward == []


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The graph sees lazy imports, skips type-only ones, and finds an upward import and a cycle."""
    src = tmp_path / "gan_models"
    src.mkdir()
    (src / "__init__.py").write_text("")
    (src / "a.py").write_text("def f():\n    from gan_models import b\n")
    (src / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import gan_models.c\n"
        "import gan_models.a\n"
    )
    (src / "c.py").write_text("")
    mods = {f"gan_models.{p.stem}": p for p in src.glob("[abc].py")}
    g = import_graph(mods)
    assert g == {
        "gan_models.a": {"gan_models.b"},
        "gan_models.b": {"gan_models.a"},
        "gan_models.c": set(),
    }
    assert cycles(g) == [["gan_models.a", "gan_models.b"]]
    table = [("low", ["gan_models.a"]), ("high", ["gan_models.b", "gan_models.c"])]
    assert layer_of("gan_models.a", table) == 0 and layer_of("gan_models.b", table) == 1
    assert layer_of("gan_models.a.x", [("x", ["gan_models"]), ("y", ["gan_models.a"])]) == 1
