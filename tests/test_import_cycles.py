"""No import cycle among the modules of the ``ecgstream`` package.

Every ``.py`` file under ``ecgstream/`` is parsed with :mod:`ast` (nothing is
imported) and every ``import`` / ``from ... import`` in it becomes an edge,
wherever it stands: at module level, inside a function (the lazy imports that
keep start-up short), and under ``if TYPE_CHECKING:``. A lazy or type-only
import does not fail at run time, but it still ties two modules together: a
circle of them is a circle in the design, and one refactoring away from a
real import error, so all of them count.

An import names a module: ``from X import name`` is an edge to ``X.name``
when that is a module of the package, else to ``X`` (a package's
``__init__``). The parent packages Python imports along the way are not
edges: every module would otherwise sit in a circle with its own
``__init__``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = "ecgstream"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_names(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted name -> file of every module of the package (``__init__`` as the package)."""
    names: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join([package, *parts])] = path
    return names


def _resolve(current: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute module a relative ``from`` names."""
    if level == 0:
        return module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(name: str, path: Path, modules: Iterable[str]) -> set[str]:
    """Modules of the package that ``name`` imports anywhere in its file."""
    known = set(modules)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_package, node.level, node.module)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import ecgstream.dsp.x as y` names a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    mods = module_names(root, package)
    return {name: imports_of(name, path, mods) for name, path in mods.items()}


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Each strongly connected component of more than one module (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

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
            if len(comp) > 1 or v in graph.get(v, ()):
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


def test_cycle_finder_finds_a_circle_and_only_a_circle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) == []
    assert find_cycles({"a": {"a"}}) == [["a"]]
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}) == [["a", "b"], ["c", "d"]]


def test_graph_sees_module_function_and_type_only_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .b import B\n")
    (pkg / "a.py").write_text("from .sub import b\nimport pkg.c as c\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..c import C\n"
        "def f():\n    from .. import a\n"
    )
    (pkg / "c.py").write_text("import os\n")
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b", "pkg.c"}
    assert graph["pkg.sub"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.c", "pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b"]]


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50, "the walk found too few modules"
    assert find_cycles(graph) == []


def test_the_top_level_is_parts_not_loose_modules():
    """At most 6 modules beside the packages (issue 19), and no module that only re-exports another.

    A package's ``__init__`` may gather its own submodules' names; any other
    module whose body is nothing but imports (and ``__all__``) is a shim for an
    old import path, and there are none to keep.
    """
    loose = sorted(p.name for p in ROOT.glob("*.py"))
    assert len(loose) <= 6, loose
    shims = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        body = [n for n in ast.parse(path.read_text()).body
                if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        if body and all(isinstance(n, ast.Import | ast.ImportFrom)
                        or (isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "__all__")
                        for n in body):
            shims.append(str(path.relative_to(ROOT)))
    assert shims == []
