"""Which finding codes burnin's source can raise, read from the source (AST), not from a run.

A code reaches a ``Finding`` (or a ``Diagnosis``, which the memory stage turns into one) as its
first argument or ``code=``. The scan follows it back: a literal is a code; an f-string is a
family (``f"instrument.{kind}"`` -> ``instrument.*``); a conditional gives both sides; a local
name gives what was assigned to it (a loop over literal tuples gives the code-shaped strings in
them); a parameter makes the function a *factory* whose callers' arguments (and the parameter's
default) are followed in turn. Whatever cannot be followed is reported as unresolved, unless the
test names where those codes come from (a catalogue, a stage attribute).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

CARRIERS = ("Finding", "Diagnosis")
CODE_SHAPE = re.compile(r"^[a-z][a-z0-9_]*\.[A-Za-z0-9_*]+$")


@dataclass
class Scan:
    codes: dict[str, set[str]] = field(default_factory=dict)  # code or family -> "path:line" where raised
    unresolved: dict[tuple[str, str], str] = field(default_factory=dict)  # (path, expression) -> "path:line"


@dataclass
class _Func:
    node: ast.FunctionDef | ast.AsyncFunctionDef
    params: list[str]  # without a leading self/cls
    defaults: dict[str, ast.expr]


class _Module:
    """One source file, walked once: its calls (with the function each is in) and its imports."""

    def __init__(self, rel: str, tree: ast.Module) -> None:
        self.rel = rel
        parts = Path(rel).with_suffix("").parts
        self.dotted = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        self.imported: dict[str, str] = {}  # names imported from other modules: name -> module
        self.calls: list[tuple[ast.Call, ast.FunctionDef | ast.AsyncFunctionDef | None]] = []
        stack: list[tuple[ast.AST, ast.FunctionDef | ast.AsyncFunctionDef | None]] = [(tree, None)]
        while stack:
            node, fn = stack.pop()
            if isinstance(node, ast.Call):
                self.calls.append((node, fn))
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                self.imported.update({a.asname or a.name: node.module for a in node.names})
            inner = node if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else fn
            stack.extend((child, inner) for child in ast.iter_child_nodes(node))


def _func_info(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> _Func:
    args = fn.args
    positional = [a.arg for a in args.posonlyargs + args.args]
    defaults = dict(zip(positional[len(positional) - len(args.defaults):], args.defaults, strict=True))
    defaults.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None})
    if positional and positional[0] in ("self", "cls"):
        positional = positional[1:]
    return _Func(fn, positional + [a.arg for a in args.kwonlyargs], defaults)


def _call_name(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _code_arg(call: ast.Call, index: int, name: str) -> ast.expr | None:
    if len(call.args) > index and not any(isinstance(a, ast.Starred) for a in call.args[:index + 1]):
        return call.args[index]
    return next((k.value for k in call.keywords if k.arg == name), None)


def _constants(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and CODE_SHAPE.match(n.value)}


class Scanner:
    def __init__(self, root: Path, packages: tuple[str, ...], known: dict[tuple[str, str], set[str]]) -> None:
        self.root = root
        self.known = known  # (path, expression) -> the codes it can hold (the test says where from)
        self.modules = [
            _Module(str(p.relative_to(root)), ast.parse(p.read_text(encoding="utf-8"), filename=str(p)))
            for pkg in packages for p in sorted((root / pkg).rglob("*.py"))
        ]
        self.scan = Scan()
        # called name -> (module, call, the function the call is in)
        self.calls: dict[str, list[tuple[_Module, ast.Call, ast.FunctionDef | ast.AsyncFunctionDef | None]]] = {}
        for mod in self.modules:
            for node, fn in mod.calls:
                if (name := _call_name(node)) is not None:
                    self.calls.setdefault(name, []).append((mod, node, fn))
        self._factories: set[tuple[str, str, int]] = set()  # (module, function name, parameter index)
        self._pending: list[tuple[str, int, str, _Module, ast.FunctionDef | ast.AsyncFunctionDef]] = []

    def run(self) -> Scan:
        for carrier in CARRIERS:
            for mod, node, fn in self.calls.get(carrier, []):
                arg = _code_arg(node, 0, "code")
                if arg is not None:
                    self._resolve(arg, mod, fn, node.lineno, set())
        while self._pending:
            fname, index, pname, mod, fn = self._pending.pop()
            default = _func_info(fn).defaults.get(pname)
            if default is not None:
                self._resolve(default, mod, None, fn.lineno, set())
            for caller, node, caller_fn in self.calls.get(fname, []):
                if caller is not mod and caller.imported.get(fname) != mod.dotted:
                    continue  # a factory is called in its own module or where it is imported
                arg = _code_arg(node, index, pname)
                if arg is not None:
                    self._resolve(arg, caller, caller_fn, node.lineno, set())
        return self.scan

    def _add(self, code: str, mod: _Module, line: int) -> None:
        self.scan.codes.setdefault(code, set()).add(f"{mod.rel}:{line}")

    def _resolve(self, expr: ast.expr, mod: _Module, fn: ast.FunctionDef | ast.AsyncFunctionDef | None,
                 line: int, seen: set[tuple[str, str]]) -> None:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            self._add(expr.value, mod, line)
        elif isinstance(expr, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "*" for v in expr.values)
            self._add(re.sub(r"\*.*$", "*", text), mod, line)
        elif isinstance(expr, ast.IfExp):
            self._resolve(expr.body, mod, fn, line, seen)
            self._resolve(expr.orelse, mod, fn, line, seen)
        elif isinstance(expr, ast.BoolOp):
            for v in expr.values:
                self._resolve(v, mod, fn, line, seen)
        elif isinstance(expr, ast.Name) and fn is not None and (mod.rel, f"{fn.name}.{expr.id}") not in seen:
            seen = seen | {(mod.rel, f"{fn.name}.{expr.id}")}
            info = _func_info(fn)
            if expr.id in info.params:
                index = info.params.index(expr.id)
                if (mod.rel, fn.name, index) not in self._factories:
                    self._factories.add((mod.rel, fn.name, index))
                    self._pending.append((fn.name, index, expr.id, mod, fn))
                return
            if not self._bindings(expr.id, mod, fn, line, seen):
                self._unresolved(expr, mod, line)
        else:
            self._unresolved(expr, mod, line)

    def _bindings(self, name: str, mod: _Module, fn: ast.FunctionDef | ast.AsyncFunctionDef, line: int,
                  seen: set[tuple[str, str]]) -> bool:
        """Follow what the function binds to ``name``; False when it binds nothing."""
        found = False
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name) and t.id == name:
                        found = True
                        self._resolve(node.value, mod, fn, line, seen)
                    elif isinstance(t, ast.Tuple) and any(isinstance(e, ast.Name) and e.id == name for e in t.elts):
                        found = True
                        i = next(i for i, e in enumerate(t.elts) if isinstance(e, ast.Name) and e.id == name)
                        if isinstance(node.value, ast.Tuple) and len(node.value.elts) == len(t.elts):
                            self._resolve(node.value.elts[i], mod, fn, line, seen)
                        else:
                            self._unresolved(node.value, mod, line)
            elif isinstance(node, ast.For) and any(isinstance(n, ast.Name) and n.id == name
                                                   for n in ast.walk(node.target)):
                found = True
                source: ast.AST = node.iter
                if isinstance(source, ast.Name):  # a loop over a local tuple: what was assigned to it
                    source = next((a.value for a in ast.walk(fn) if isinstance(a, ast.Assign)
                                   and any(isinstance(t, ast.Name) and t.id == source.id for t in a.targets)), source)
                consts = _constants(source)
                for c in consts:
                    self._add(c, mod, line)
                if not consts:
                    self._unresolved(node.iter, mod, line)
        return found

    def _unresolved(self, expr: ast.AST, mod: _Module, line: int) -> None:
        key = (mod.rel, ast.unparse(expr))
        if key in self.known:
            for c in self.known[key]:
                self._add(c, mod, line)
        else:
            self.scan.unresolved[key] = f"{mod.rel}:{line}"


def scan_source(root: Path, packages: tuple[str, ...], known: dict[tuple[str, str], set[str]]) -> Scan:
    return Scanner(root, packages, known).run()
