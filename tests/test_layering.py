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


def _is_module(dotted: str) -> bool:
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or base.is_dir()


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
            # "pkg.mod" or "pkg.mod:Attr" in a string naming a module of the project: a lazy import
            # by name (finding codes such as "harness.stage_timeout" name no module)
            named |= {m for m in re.findall(r"\b((?:harness|stress|drivers)(?:\.\w+)+)", node.value)
                      if _is_module(m)}
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
    f.write_text("def f():\n    from harness.store import Store\n    return 'stress.health:HealthStage', 'harness.no_profile'\n")
    named = _modules_named(f)
    assert {"harness.store", "stress.health"} <= named and "harness.no_profile" not in named


STAGE_API = {"stress", "stress.base", "stress.model", "stress.events", "stress.record",
             "stress.readiness",  # readiness: the skip rules the session applies to every stage
             "stress.hoststage"}  # the host stage API (a stage run once per host over its cards)
BACKENDS = ("drivers.mock", "drivers.nvml", "drivers.ascend", "drivers.cuda")


def test_harness_names_no_particular_stage_or_backend() -> None:
    """The harness reaches stages through the stage API and its hooks, and backends through the
    registry: adding either touches nothing in harness/."""
    bad = []
    for p in _files("harness"):
        for m in sorted(_modules_named(p)):
            mod = m.split(":")[0]
            if mod.startswith("stress") and not any(mod == a or mod.startswith(a + ".") and a != "stress"
                                                    for a in STAGE_API):
                bad.append(f"{p.relative_to(ROOT)}: {m}")
            elif mod.startswith(BACKENDS):
                bad.append(f"{p.relative_to(ROOT)}: {m}")
    assert not bad, "harness/ must not name a stage module or a backend:\n" + "\n".join(bad)


def test_every_doc_the_code_cites_is_in_the_repository():
    """A spec the code cites as docs/NAME.md is in docs/ (not only in a folder outside the repo)."""
    cited: dict[str, str] = {}
    for root in ("harness", "stress", "drivers", "bench", "fixtures"):
        for path in sorted((ROOT / root).rglob("*")):
            if path.suffix in (".py", ".toml", ".md") and path.is_file():
                for name in re.findall(r"\bdocs/([\w.-]+\.md)", path.read_text(encoding="utf-8")):
                    cited.setdefault(name, str(path.relative_to(ROOT)))
    missing = {name: where for name, where in cited.items() if not (ROOT / "docs" / name).is_file()}
    assert cited and missing == {}
