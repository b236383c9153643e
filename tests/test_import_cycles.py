"""No import cycles among burnin's own modules (issue 18 item 5).

The graph is built from the source (AST), not from what happens to be imported at run time, so
every import counts: one inside a function, one under ``TYPE_CHECKING``, one in a branch that
never runs. A lazy import hides a cycle; it does not remove it. ``from x import y`` where ``y``
is a submodule is an edge to ``x.y`` (otherwise to ``x``); a package's own ``__init__`` being run
first by Python is not an edge (every submodule would then be in a cycle with a package that
re-exports it).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "stress", "drivers", "bench")


def module_files(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the packages."""
    out: dict[str, Path] = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    if not node.level:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else [])) or None


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in its source."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(name, is_package, node)
                if base is None:
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in modules:
                        deps.add(sub)
                    elif base in modules:
                        deps.add(base)
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative), each
    sorted, the list sorted: every cycle is inside exactly one of them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return sorted(found)


def describe(comp: list[str], graph: dict[str, set[str]]) -> str:
    members = set(comp)
    return "; ".join(f"{m} -> {', '.join(sorted(graph[m] & members))}" for m in comp)


def test_no_import_cycles() -> None:
    graph = import_graph(module_files())
    found = cycles(graph)
    assert not found, "import cycles (each line: the modules of one cycle and their edges inside it):\n" + \
        "\n".join(describe(c, graph) for c in found)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_checker_sees_lazy_type_checking_and_submodule_imports(tmp_path: Path) -> None:
    _write(tmp_path, {
        "drivers/__init__.py": "",
        "drivers/a.py": "def f():\n    from drivers import b\n    return b\n",
        "drivers/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from drivers.c import C\n",
        "drivers/c.py": "from . import a\n",
        "drivers/pkg/__init__.py": "from drivers.pkg.mod import X\n",
        "drivers/pkg/mod.py": "X = 1\n",
        "drivers/d.py": "import drivers.pkg\n",
    })
    graph = import_graph(module_files(tmp_path, ("drivers",)))
    assert graph["drivers.a"] == {"drivers.b"}  # `from drivers import b`: the submodule, not the package
    assert graph["drivers.c"] == {"drivers.a"}  # relative import
    assert cycles(graph) == [["drivers.a", "drivers.b", "drivers.c"]]  # lazy + TYPE_CHECKING + relative
    assert "drivers.pkg" in graph["drivers.d"] and graph["drivers.pkg.mod"] == set()  # no implicit parent edge


def test_the_checker_finds_two_separate_cycles(tmp_path: Path) -> None:
    _write(tmp_path, {
        "stress/__init__.py": "",
        "stress/x.py": "import stress.y\n",
        "stress/y.py": "from stress import x\n",
        "stress/p.py": "from stress.q import Q\n",
        "stress/q.py": "from stress.p import P\nQ = 1\n",
        "stress/r.py": "from stress.p import P\n",
    })
    graph = import_graph(module_files(tmp_path, ("stress",)))
    assert cycles(graph) == [["stress.p", "stress.q"], ["stress.x", "stress.y"]]
