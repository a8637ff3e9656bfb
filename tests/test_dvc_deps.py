"""dvc.yaml lists the code each stage runs, derived from the imports of the command it runs.

For every stage (each runs ``ganops ...``) the command is resolved through the CLI to the
function that runs it. From there the code it can run is followed statically, by name, through
the ``gan_models`` package:

- a function or class that runs brings in its whole body: every package import in it (imports
  inside functions count) and the functions, classes and module-level values of its own module
  that it names; a class counts whole, all its methods;
- ``from M import name`` brings in ``name`` of ``M``; ``import M``, or a module imported by name
  (``from pkg import mod``), brings in all of ``M``;
- a module that is imported runs its top level: the packages above it (``a/b/__init__.py`` for
  ``a.b.c``) and its own top-level imports, followed the same way; ``if TYPE_CHECKING:``
  imports never run and are skipped;
- names a package serves lazily (PEP 562 ``__getattr__`` with a ``{name: submodule}`` table)
  lead to that submodule; without such a table, to every submodule.

Not followed: the CLI's wiring of *other* commands (a top-level call such as
``_mount_subapps()`` registers them; their code does not run). A module whose code is reached
must be covered by the stage's deps: its own file, or a folder above it.
"""

from __future__ import annotations

import ast
import shlex
from functools import cache
from pathlib import Path

import pytest
import typer
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "gan_models"
WHOLE = "*"  # a use of a whole module
TOP = ""  # a use of a module's top level only (importing it)
DEFS = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def module_file(name: str) -> Path | None:
    base = REPO / Path(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


@cache
def parse(module: str) -> ast.Module:
    path = module_file(module)
    assert path is not None, module
    return ast.parse(path.read_text())


def _is_type_checking(node: ast.AST) -> bool:
    t = getattr(node, "test", None)
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _walk(nodes, nested: bool = True):
    """ast.walk over ``nodes``, without TYPE_CHECKING blocks (and, unless ``nested``, without
    the bodies of functions and classes)."""
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        yield node
        if not nested and isinstance(node, DEFS):
            continue
        stack.extend(ast.iter_child_nodes(node))


def _source(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    is_package = module_file(module).name == "__init__.py"
    parts = parts[: len(parts) - node.level + (1 if is_package else 0)]
    return ".".join(parts + ([node.module] if node.module else []))


def _uses_of_imports(module: str, nodes, nested: bool = True) -> set[tuple[str, str]]:
    """(module, name) uses that the import statements among ``nodes`` make."""
    out = set()
    for node in _walk(nodes, nested):
        if isinstance(node, ast.Import):
            out |= {(a.name, WHOLE) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            source = _source(module, node)
            for a in node.names:
                if module_file(f"{source}.{a.name}") is not None:  # a submodule: all of it
                    out.add((f"{source}.{a.name}", WHOLE))
                else:
                    out.add((source, a.name))
    return {(m, n) for m, n in out if m.split(".")[0] == PACKAGE and module_file(m)}


def _top_level(module: str) -> dict[str, list[ast.AST]]:
    """The module's own top-level definitions: functions, classes and assigned names."""
    out: dict[str, list[ast.AST]] = {}
    for node in parse(module).body:
        if isinstance(node, DEFS):
            out.setdefault(node.name, []).append(node)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        out.setdefault(n.id, []).append(node)
    return out


def _submodules(module: str) -> list[str]:
    path = module_file(module)
    if path.name != "__init__.py":
        return []
    return [
        f"{module}.{p.stem if p.suffix == '.py' else p.name}"
        for p in sorted(path.parent.iterdir())
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    ]


def _bindings(module: str) -> dict[str, tuple[str, str]]:
    """Names that the module's top-level imports bind, and the (module, name) each stands for."""
    out = {}
    for node in _walk(parse(module).body, nested=False):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = (a.name if a.asname else a.name, WHOLE)
        elif isinstance(node, ast.ImportFrom):
            source = _source(module, node)
            for a in node.names:
                sub = f"{source}.{a.name}"
                out[a.asname or a.name] = (sub, WHOLE) if module_file(sub) else (source, a.name)
    return {k: v for k, v in out.items() if v[0].split(".")[0] == PACKAGE and module_file(v[0])}


def _registers_commands(node: ast.AST) -> bool:
    """A function that wires CLI commands (``add_typer``, ``command``): it runs none of them."""
    return any(
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr in ("add_typer", "command")
        for n in ast.walk(node)
    )


def _names(module: str, nodes) -> set[tuple[str, str]]:
    """The uses that the names in ``nodes`` make: the module's own definitions and what its
    top-level imports bound."""
    defs, bound = _top_level(module), _bindings(module)
    out = set()
    for node in nodes:
        for n in ast.walk(node):
            if isinstance(n, ast.Name):
                if n.id in defs:
                    out.add((module, n.id))
                elif n.id in bound:
                    out.add(bound[n.id])
    return out


def _lazy_target(module: str, name: str) -> list[tuple[str, str]]:
    """Where a PEP 562 package serves ``name`` from."""
    defs = _top_level(module)
    if "__getattr__" not in defs:
        return []
    for node in parse(module).body:
        value = getattr(node, "value", None)
        if isinstance(value, ast.Dict):
            table = {
                k.value: v.value
                for k, v in zip(value.keys, value.values, strict=True)
                if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)
            }
            if name in table and module_file(f"{module}.{table[name]}"):
                return [(f"{module}.{table[name]}", name)]
    return [(sub, WHOLE) for sub in _submodules(module)]


def reached(start: set[tuple[str, str]]) -> set[Path]:
    """Files of every package module whose code the uses ``start`` can run."""
    seen: set[tuple[str, str]] = set()
    loaded: set[str] = set()
    used: set[str] = set()
    todo = list(start)
    while todo:
        use = todo.pop()
        if use in seen:
            continue
        seen.add(use)
        module, name = use
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # importing it runs the packages above it first
            mod = ".".join(parts[:i])
            if mod in loaded:
                continue
            loaded.add(mod)
            # Its top level runs: its imports load their modules; a top-level call runs what it
            # names (one that wires CLI commands aside). Its definitions and values matter only
            # where code that runs uses them, and are followed from there.
            body = parse(mod).body
            todo.extend((m, TOP) for m, _ in _uses_of_imports(mod, body, nested=False))
            calls = [n for n in _side_effects(mod)]
            if calls:
                used.add(mod)
            todo.extend(_names(mod, calls))
        if name == TOP:
            continue
        used.add(module)
        tree, defs = parse(module), _top_level(module)
        if name == WHOLE:
            todo.extend(_uses_of_imports(module, tree.body))
            todo.extend((module, n) for n in defs)
            continue
        nodes = defs.get(name)
        if nodes is None:  # bound by a top-level import, or served lazily
            bound = _bindings(module)
            todo.extend([bound[name]] if name in bound else _lazy_target(module, name))
            continue
        todo.extend(_uses_of_imports(module, nodes))  # imports inside it: taken as used
        todo.extend(_names(module, nodes))
    return {module_file(mod).relative_to(REPO) for mod in used}


def _side_effects(module: str) -> list[ast.AST]:
    """Top-level calls that run on import, other than docstrings and CLI wiring."""
    body, defs = parse(module).body, _top_level(module)
    out = []
    for i, node in enumerate(body):
        if not isinstance(node, ast.Expr | ast.For) or (
            i == 0 and isinstance(getattr(node, "value", None), ast.Constant)
        ):
            continue  # a top-level loop runs too (e.g. the family registry's registrations)
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        wiring = _registers_commands(node) or any(
            _registers_commands(d) or d.name.startswith(("_mount", "_register"))
            for n in names
            for d in defs.get(n, [])
            if isinstance(d, DEFS)
        )
        if not wiring:
            out.append(node)
    return out


def command_code(tokens: list[str]) -> tuple[str, set[Path]]:
    """The function that ``ganops TOKENS...`` runs, and the package files its code spans."""
    from gan_models.cli import app

    command = typer.main.get_command(app)
    for token in tokens:
        subcommands = getattr(command, "commands", None)
        if not subcommands or token not in subcommands:
            break
        command = subcommands[token]
    func = getattr(command.callback, "__wrapped__", command.callback)
    module = func.__module__
    # The command's own function, found through its qualified name (it may be nested).
    scope: list[ast.AST] = [parse(module)]
    enclosing: list[ast.AST] = []
    for part in func.__qualname__.split("."):
        if part == "<locals>":
            continue
        matches = [
            n
            for s in scope
            for n in ast.iter_child_nodes(s)
            if isinstance(n, DEFS) and n.name == part
        ]
        assert matches, f"{func.__qualname__} not found in {module}"
        enclosing.append(matches[0])
        scope = matches
    target = enclosing.pop()
    start: set[tuple[str, str]] = set()
    for outer in enclosing:  # what registering the command runs
        start |= _uses_of_imports(module, outer.body, nested=False)
    start |= _uses_of_imports(module, [target])
    defs = _top_level(module)
    for outer in enclosing:  # the command's siblings in the function that defines it
        for node in outer.body:
            if isinstance(node, DEFS):
                defs.setdefault(node.name, []).append(node)
    bound = _bindings(module)
    todo, done = [target], set()
    while todo:  # the functions and values the command names, transitively
        node = todo.pop()
        if id(node) in done:
            continue
        done.add(id(node))
        start |= _uses_of_imports(module, [node])
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and n.id in defs:
                todo.extend(defs[n.id])
            elif isinstance(n, ast.Name) and n.id in bound:
                start.add(bound[n.id])
    files = reached(start | {(module, TOP)})
    return f"{module}.{func.__qualname__}", files | {module_file(module).relative_to(REPO)}


# Pipelines beside the root one; their stages run from the repository root (wdir ../..).
PIPELINES = ["dvc.yaml", "pipelines/augment/dvc.yaml", "pipelines/emoji/dvc.yaml"]


def stages() -> dict[str, dict]:
    out = {}
    for file in PIPELINES:
        for name, stage in yaml.safe_load((REPO / file).read_text())["stages"].items():
            if file != "dvc.yaml":
                assert (REPO / file).parent.joinpath(stage.get("wdir", ".")).resolve() == REPO
                name = f"{file}:{name}"
            out[name] = stage
    return out


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in deps)


def code_deps(stage: dict) -> list[str]:
    return [d for d in stage.get("deps", []) if d.split("/")[0] == PACKAGE]


@pytest.mark.parametrize("name", list(stages()))
def test_stage_deps_cover_the_code_its_command_runs(name):
    stage = stages()[name]
    words = shlex.split(stage["cmd"])
    assert words[0] == "ganops", f"{name}: not a ganops command: {stage['cmd']}"
    func, files = command_code(words[1:])
    deps = code_deps(stage)
    missing = sorted(str(f) for f in files if not covered(f, deps))
    assert not missing, (
        f"dvc.yaml stage {name!r} runs {func}, which imports these modules that its deps do not "
        f"list: {', '.join(missing)}"
    )


@pytest.mark.parametrize("name", list(stages()))
def test_stage_code_deps_exist_and_are_run(name):
    """Every code dep names a real file or folder, and the stage runs something in it."""
    stage = stages()[name]
    _, files = command_code(shlex.split(stage["cmd"])[1:])
    for dep in code_deps(stage):
        path = REPO / dep
        assert path.exists(), f"{name}: {dep} does not exist"
        if path.is_dir() and any(path.rglob("*.py")):  # a folder of data files is read, not run
            assert any(Path(dep) in f.parents for f in files), f"{name}: nothing in {dep} runs"
        else:
            assert Path(dep) in files or path.suffix != ".py", f"{name}: {dep} is not run"


def missing(tokens: list[str], deps: list[str]) -> set[str]:
    _, files = command_code(tokens)
    return {str(f) for f in files if not covered(f, deps)}


def test_the_deps_that_went_stale_are_caught():
    """The deps dvc.yaml had before this check: evaluate without the sampling, families,
    training and data-split code it runs; train without config.py and data/format.py."""
    evaluate = ["gan_models/metrics", "gan_models/evaluation.py"]
    gone = missing(["evaluate"], evaluate)
    assert {
        "gan_models/sampling.py",
        "gan_models/data/splits.py",
        "gan_models/families/dcgan.py",
        "gan_models/training/generate.py",
    } <= gone
    assert not any(g.startswith("gan_models/metrics/") for g in gone)  # the folder covers them
    train = ["gan_models/families", "gan_models/training", "gan_models/losses.py"]
    train.append("gan_models/layers.py")
    assert {"gan_models/config.py", "gan_models/data/format.py"} <= missing(["train"], train)
