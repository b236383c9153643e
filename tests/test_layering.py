"""The import rule of docs/architecture.md: imports run harness -> stress -> drivers, never back.

Checked on the source text (every import statement, and every module named in a string, such as
the handle registry's lazy imports), so a lazy import inside a function is caught too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _modules_named(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    named: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named.add(node.module)
            named |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # "pkg.mod" or "pkg.mod:Attr" in a string: a lazy import by name
            named |= set(re.findall(r"\b((?:harness|stress|drivers)(?:\.\w+)+)", node.value))
    return named


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", ["stress", "drivers"])
def test_lower_layers_never_import_the_harness(package: str) -> None:
    bad = [f"{p.relative_to(ROOT)}: {m}" for p in _files(package) for m in sorted(_modules_named(p))
           if m == "harness" or m.startswith("harness.")]
    assert not bad, "imports must run harness -> stress -> drivers:\n" + "\n".join(bad)


def test_drivers_name_no_stress_module() -> None:
    bad = [f"{p.relative_to(ROOT)}: {m}" for p in _files("drivers") for m in sorted(_modules_named(p))
           if m == "stress" or m.startswith("stress.")]
    assert not bad, "drivers/ must not name a stress module:\n" + "\n".join(bad)


def test_the_checker_sees_a_lazy_import(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from harness.store import Store\n    return 'stress.health:HealthStage'\n")
    assert {"harness.store", "stress.health"} <= _modules_named(f)
