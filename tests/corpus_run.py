"""Run corpus cards through the real CLI and check each card against its expected outcome.

Usable from the tests and by hand: ``python -m tests.corpus_run quick`` prints every card whose
outcome disagrees with the rules.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from harness.cli import main
from tests.conftest import rack_toml
from tests.corpus_cases import Case, cases, healthy


def run_rack(cards: list[Case], plan: str, workdir: Path, name: str = "corpus") -> dict[str, Any]:
    """One ``burnin run RACK --plan PLAN --json OUT`` over all ``cards`` (fresh database)."""
    devices = [c.device(slot) for slot, c in enumerate(cards)]
    bench_slots = [slot for slot, c in enumerate(cards) if c.bench]
    host_extra = (f'\n[[hosts.instruments]]\nkind = "bench"\nport = "sim"\npower_cycle = true\n'
                  f'slots = {bench_slots}\n')
    rack = workdir / f"{name}-{plan}.toml"
    rack.write_text(rack_toml(devices, name=name, host_extra=host_extra), encoding="utf-8")
    out = workdir / f"{name}-{plan}.json"
    db = workdir / f"{name}-{plan}.db"
    res = CliRunner().invoke(main, ["run", str(rack), "--plan", plan, "--json", str(out), "--db", str(db), "-q"])
    if res.exit_code not in (0, 1):
        raise AssertionError(f"burnin run exited {res.exit_code}: {res.output[-2000:]}")
    return json.loads(out.read_text(encoding="utf-8"))


def problems(case: Case, card: dict[str, Any]) -> list[str]:
    """Every way ``card`` (a result-document card) disagrees with ``case.expect``."""
    e = case.expect
    fails = [f for f in card["findings"] if f["severity"] == "fail"]
    codes = {f["code"] for f in fails}
    acts = set(card["actions"])
    out: list[str] = []
    want = e.verdict if isinstance(e.verdict, set) else {e.verdict}
    if card["verdict"] not in want:
        out.append(f"verdict {card['verdict']} (want {sorted(want)})")
    for group in e.codes:
        if not group & codes:
            out.append(f"no fail finding among {sorted(group)}")
    if not e.actions <= acts:
        out.append(f"actions {sorted(acts)} miss {sorted(e.actions - acts)}")
    allowed = e.allowed if e.allowed is not None else e.actions
    fail_acts = {f["action"] for f in fails} - {"none"}
    if not fail_acts <= allowed:  # warn findings may advise (contract: actions list every finding's)
        out.append(f"unexpected fail actions {sorted(fail_acts - allowed)}")
    if not case.faults and card["findings"]:
        out.append("healthy card with findings")
    if e.location is not None:
        loc_codes, loc = e.location
        cand = [f["location"] for f in fails if f["code"] in loc_codes]
        if not any(all(lf.get(k) == v for k, v in loc.items()) for lf in cand):
            out.append(f"no {sorted(loc_codes)} finding at {loc} (have {cand})")
    if e.warn and not any(f["code"] == e.warn for f in card["findings"]):
        out.append(f"no {e.warn} finding")
    return out


def report(cards: list[Case], doc: dict[str, Any]) -> dict[str, list[str]]:
    by_serial = {c["serial"]: c for c in doc["cards"]}
    out = {}
    for case in cards:
        card = by_serial.get(case.serial)
        p = ["missing from the result"] if card is None else problems(case, card)
        if p:
            summary = [] if card is None else [
                f"{f['severity']} {f['code']} {f['action']} {f['location']}" for f in card["findings"]]
            out[case.serial] = p + [f"  faults={case.faults}", *("  " + s for s in summary)]
    return out


if __name__ == "__main__":  # pragma: no cover - a developer's tool
    plan = sys.argv[1] if len(sys.argv) > 1 else "quick"
    which = sys.argv[2] if len(sys.argv) > 2 else "all"
    todo = cases(plan) if which in ("all", "faults") else []
    if which in ("all", "healthy"):
        todo += healthy(plan, int(sys.argv[3]) if len(sys.argv) > 3 else 10)
    with tempfile.TemporaryDirectory() as d:
        doc = run_rack(todo, plan, Path(d))
    bad = report(todo, doc)
    for serial, lines in bad.items():
        print(serial, *lines, sep="\n  ")
    print(f"{len(todo)} cards, {len(bad)} disagree with the rules")
