"""Declared finding codes (issue 18 item 3): every code burnin can raise is declared by a stage
(``Stage.codes``) or the harness (``harness/codes.py``), and every declared code can be raised.

Two views, since each misses what the other sees: the source, read statically
(tests/finding_scan.py: every ``Finding``/``Diagnosis`` code followed back to its literals), and
the suite's own runs (tests/code_capture.py, installed by conftest: a test in which burnin raises
an undeclared code fails). The tests here check the static view, the catalogues the health stage
reads, and that the run-time check itself catches what it should.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from drivers.ascend.codes import load_catalogue
from drivers.xid import bench_rules, nvidia_catalog, xid_rule
from harness.codes import HARNESS_CODES
from stress.base import declares, stages
from stress.model import Finding
from tests import code_capture
from tests.finding_scan import Scan, scan_source

ROOT = Path(__file__).resolve().parent.parent


def xid_codes() -> set[str]:
    """Every finding an XID can become: the catalogue's and the overrides' XIDs, and xid.N for the rest."""
    xids = set(nvidia_catalog()) | {int(k) for k in bench_rules()["xid"]}
    return {xid_rule(x).finding for x in xids} | {"xid.*"}


def ascend_codes() -> set[str]:
    known, _ = load_catalogue()
    return {c.finding for c in known.values()} | {"npu.*"}


# expressions the scan cannot follow, and where their codes come from
KNOWN = {
    ("stress/health.py", "rule.finding"): xid_codes(),  # drivers/xid.py: NVIDIA's catalogue + the bench rules
    ("stress/health.py", "c['code']"): ascend_codes(),  # drivers/ascend/codes.py: fixtures/ascend/fault_codes.toml
    ("stress/memory/stage.py", "d.code"): set(),  # a Diagnosis: its construction sites are scanned themselves
    ("harness/runner.py", "get_stage(stage).watchdog_code"): {c.watchdog_code for c in stages().values()},
    # drivers/api.py HostUnfit.code: its default and what drivers/cuda/errors.py gives it
    ("harness/session.py", "getattr(err, 'code', None)"): {"harness.handle_unavailable", "harness.kernel_unavailable",
                                                           "host.driver_old"},
    ("harness/store.py", "r['code']"): set(),  # a host finding read back: raised where it was first made
    # a triage symptom (drivers/evidence.py Symptom): field.* from the readers, ecc.unrepairable
    ("harness/triage/rules.py", "s.code"): {"field.*", "ecc.unrepairable"},
}


@pytest.fixture(scope="module")
def source() -> Scan:
    return scan_source(ROOT, ("harness", "stress", "drivers"), KNOWN)


def all_declared() -> frozenset[str]:
    out = HARNESS_CODES
    for cls in stages().values():
        out |= cls.codes
    return out


def test_the_scan_follows_every_code_to_its_source(source: Scan) -> None:
    assert not source.unresolved, "finding codes the scan cannot follow (use a literal, or say in KNOWN " \
        "where they come from):\n" + "\n".join(f"{where}: {expr}" for (_, expr), where in source.unresolved.items())
    assert len(source.codes) > 50  # the scan sees the whole rule table, not a handful


def test_every_code_the_source_can_raise_is_declared(source: Scan) -> None:
    declared = all_declared()
    missing = {c: sorted(w) for c, w in source.codes.items() if not declares(declared, c)}
    assert not missing, "raised but declared by no stage nor the harness:\n" + \
        "\n".join(f"{c} ({', '.join(w)})" for c, w in sorted(missing.items()))


def test_every_declared_code_can_be_raised(source: Scan) -> None:
    """A declared code nothing raises is a typo or a leftover: say which stage declares it."""
    raisable = set(source.codes)
    owners = [("harness", HARNESS_CODES)] + [(n, cls.codes) for n, cls in sorted(stages().items())]
    dead = [f"{owner}: {c}" for owner, codes in owners for c in sorted(codes)
            if not (c in raisable or (c.endswith(".*") and any(r.startswith(c[:-1]) for r in raisable)))]
    assert not dead, "declared but raised nowhere:\n" + "\n".join(dead)


def test_every_stage_declares_what_it_raises_and_its_watchdog_code() -> None:
    for name, cls in stages().items():
        assert cls.codes, f"stage {name} declares no finding codes"
        assert all(c.count(".") >= 1 and (not c.endswith("*") or c.endswith(".*")) for c in cls.codes), name
        assert declares(cls.codes | HARNESS_CODES, cls.watchdog_code), (name, cls.watchdog_code)


def test_the_health_stage_declares_every_catalogue_finding() -> None:
    health = stages()["health"].codes
    assert not [c for c in sorted(xid_codes() | ascend_codes()) if not declares(health, c)]
    assert declares(health, "xid.13") and declares(health, "npu.80E01801") and not declares(health, "memory.cell")


def test_declares_reads_families() -> None:
    codes = frozenset({"xid.*", "fan.stalled"})
    assert declares(codes, "xid.79") and declares(codes, "fan.stalled") and declares(codes, "xid.*")
    assert not declares(codes, "fan.weak") and not declares(codes, "xidx.1")
    assert not declares(frozenset({"instrument.unavailable"}), "instrument.*")  # a literal covers no family


def test_the_run_time_check_catches_an_undeclared_code() -> None:
    """What conftest's per-test check sees: a finding burnin's code makes (here the health stage's
    factory) and one arriving from a worker (unpickled); not one a test makes, nor one read back."""
    from stress.health import _f

    code_capture.undeclared()  # start from nothing pending
    _f("health.bogus", "warn", "none", "made by the stage's own factory")
    pickle.loads(pickle.dumps(Finding("worker.bogus", "warn", "none", "pcie", "from a worker")))
    Finding("test.synthetic", "warn", "none", "health", "a test's own")
    Finding.from_dict({"code": "store.old", "severity": "warn", "action": "none", "test": "x", "message": ""})
    _f("pcie.replays", "warn", "none", "declared by health")
    assert code_capture.undeclared() == ["health.bogus (raised by 'health')", "worker.bogus (raised by 'pcie')"]
    assert ("pcie.replays", "health") in code_capture.SEEN


def test_a_code_is_declared_by_the_stage_that_raised_it() -> None:
    from stress.health import _f

    code_capture.undeclared()
    _f("memory.stuck_bit", "warn", "none", "health never raises a memory cell")  # declared, but by memory
    _f("bus.lost", "warn", "none", "the harness's own code, raised anywhere")
    assert code_capture.undeclared() == ["memory.stuck_bit (raised by 'health')"]


def test_burnin_stages_lists_codes(burnin) -> None:
    import json

    rc, out, _ = burnin("stages", "--json")
    by_stage = {s["stage"]: s for s in json.loads(out)}
    assert rc == 0 and "memory.stuck_bit" in by_stage["memory"]["codes"] and "xid.*" in by_stage["health"]["codes"]
    rc, out, _ = burnin("stages")
    assert rc == 0 and "finding codes: compute.fault" in out and "the harness itself raises: bus.lost" in out


def test_the_scan_follows_factories_locals_loops_and_fstrings(tmp_path: Path) -> None:
    (tmp_path / "stress").mkdir()
    (tmp_path / "stress" / "a.py").write_text(
        "from stress.model import Finding\n"
        "def make(kind, code='a.default'):\n    return Finding(code, 'fail', 'none', 't', '')\n"
        "def use(x, ev):\n"
        "    make(0, 'a.one')\n    make(kind=1, code='a.two' if x else 'a.three')\n"
        "    code = 'a.local'\n    Finding(code, 'fail', 'none', 't', '')\n"
        "    for c, _ in (('a.loop', 1), ('a.loop2', 2)):\n        Finding(c, 'fail', 'none', 't', '')\n"
        "    Finding(f'fam.{x}', 'fail', 'none', 't', '')\n"
        "    Finding(ev.code, 'fail', 'none', 't', '')\n", encoding="utf-8")
    (tmp_path / "stress" / "b.py").write_text(
        "from stress.a import make\nmake(0, 'b.imported')\n"
        "def make2(code):\n    pass\n", encoding="utf-8")
    (tmp_path / "stress" / "c.py").write_text("def make(code):\n    pass\nmake(0, 'c.not_a_factory_here')\n",
                                              encoding="utf-8")
    got = scan_source(tmp_path, ("stress",), {})
    assert set(got.codes) == {"a.default", "a.one", "a.two", "a.three", "a.local", "a.loop", "a.loop2", "fam.*",
                              "b.imported"}
    assert list(got.unresolved) == [("stress/a.py", "ev.code")]
    known = scan_source(tmp_path, ("stress",), {("stress/a.py", "ev.code"): {"a.known"}})
    assert "a.known" in known.codes and not known.unresolved
