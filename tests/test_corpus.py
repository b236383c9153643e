"""The judges' corpus, before the judges: mock racks built from the spec tables, run through
``burnin run RACK --plan quick|standard --json OUT``, every card checked against the outcome the
rules give (verdict, fail codes, actions, location), and healthy cards of every profile never
failing. Cases come from ``tests/corpus_cases.py`` (every fault kind of mock-faults.md with
several parameter values, addresses, memory sizes and seeds, on every profile, plus pairs).

Runtime: by default one card per (fault kinds, profile, bench) group and plan, with a few seeded
healthy cards per profile, plus a healthy card and one signature fault of every other profile
(``other_profiles``, about 35 more cards): about 100 s on an idle 2-core machine. ``BURNIN_CORPUS=full`` runs every
case (about 290 per plan) and 30 healthy cards per profile per plan: about 5 minutes.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from drivers.profiles import load_profile
from harness.cli import main
from tests.conftest import rack_toml
from tests.corpus_cases import OTHER_PROFILES, PROFILES, Case, cases, healthy, signature_cases
from tests.corpus_run import problems, run_rack

FULL = os.environ.get("BURNIN_CORPUS") == "full"
HEALTHY_PER_PROFILE = {"quick": 30 if FULL else 6, "standard": 30 if FULL else 3}


def select(plan: str) -> list[Case]:
    """Every case (full), else one seeded pick per group (one fault kind on one profile; pairs;
    passive cards without a bench), a different pick per plan, so both see parameter variety."""
    all_cases = cases(plan)
    if FULL:
        return all_cases
    groups: dict[tuple, list[Case]] = defaultdict(list)
    for c in all_cases:
        if len(c.faults) > 1 or not c.bench:  # pairs, and passive cards without a bench: one group each
            groups[("pair" if len(c.faults) > 1 else "no bench", c.profile)].append(c)
        else:
            groups[(c.faults[0]["kind"], c.profile)].append(c)
    return [g[random.Random(f"{plan}/{key}").randrange(len(g))] for key, g in groups.items()]


def other_profiles(plan: str) -> list[Case]:
    """Every profile beyond the core three: a healthy card each, and the faults each kind of board
    is repaired for: its own fans on fan cards (quick), a memory cell on every GDDR board and on
    a few HBM ones, rotating (standard). ``bench/corpus_profiles.py`` runs all of them on more seeds."""
    sig = signature_cases(plan)
    if FULL:
        return [c for cs in sig.values() for c in cs] + healthy(plan, HEALTHY_PER_PROFILE[plan], profiles=OTHER_PROFILES)
    half = OTHER_PROFILES[plan == "standard"::2]  # each profile's healthy card in one of the two plans
    out = healthy(plan, 1, start=1, profiles=half)
    hbm = [p for p in OTHER_PROFILES if load_profile(p).memory.kind == "hbm"]
    for k, (profile, cs) in enumerate(sig.items()):
        kind = load_profile(profile).memory.kind
        cooling = load_profile(profile).cooling.kind
        if plan == "quick" and (cooling == "fan" or k == 0):
            out += [c for c in cs if c.serial.endswith("-stall")]
        if plan == "standard" and (kind == "gddr" or profile == hbm[len(hbm) // 2]):
            out += [c for c in cs if c.serial.endswith("-stuck")]
    return out


PLAN_CASES = {plan: select(plan) + healthy(plan, HEALTHY_PER_PROFILE[plan]) + other_profiles(plan)
              for plan in ("quick", "standard")}


class _Docs(dict):
    """Each plan's rack runs when a test first needs it, so each run has a test's timeout to itself."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        super().__init__()
        self.tmp = tmp

    def __missing__(self, plan: str) -> dict:
        self[plan] = run_rack(PLAN_CASES[plan], plan, self.tmp.mktemp(f"corpus-{plan}"))
        return self[plan]


@pytest.fixture(scope="module")
def corpus_docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    return _Docs(tmp_path_factory)


def _card(doc: dict, serial: str) -> dict:
    return next(c for c in doc["cards"] if c["serial"] == serial)


@pytest.mark.parametrize("case", PLAN_CASES["quick"], ids=lambda c: c.serial)
def test_quick(corpus_docs: dict[str, dict], case: Case) -> None:
    card = _card(corpus_docs["quick"], case.serial)
    assert not problems(case, card), (case.faults, problems(case, card), card["findings"])


@pytest.mark.parametrize("case", PLAN_CASES["standard"], ids=lambda c: c.serial)
def test_standard(corpus_docs: dict[str, dict], case: Case) -> None:
    card = _card(corpus_docs["standard"], case.serial)
    assert not problems(case, card), (case.faults, problems(case, card), card["findings"])


def test_every_profile_has_a_healthy_card_and_its_faults_in_the_corpus() -> None:
    for plan, todo in PLAN_CASES.items():
        assert set(PROFILES) <= {c.profile for c in todo if not c.faults}, plan
    assert set(OTHER_PROFILES) <= {c.profile for todo in PLAN_CASES.values() for c in todo if not c.faults}
    fans = {c.profile for c in PLAN_CASES["quick"] if c.faults and c.faults[0]["kind"] == "fan.stalled"}
    assert {p for p in OTHER_PROFILES if load_profile(p).cooling.kind == "fan"} <= fans
    mem = {c.profile for c in PLAN_CASES["standard"] if c.faults and c.faults[0]["kind"] == "memory.stuck_bit"}
    assert {p for p in OTHER_PROFILES if load_profile(p).memory.kind == "gddr"} <= mem
    assert any(load_profile(p).memory.kind == "hbm" for p in mem & set(OTHER_PROFILES))


def test_every_fault_kind_on_every_profile_in_both_plans() -> None:
    from drivers.mock.faults import FAULT_KINDS

    LINK_KINDS = {"link.down", "link.degraded", "p2p.corrupt"}  # noqa: N806 - a card without links cannot have them

    for plan, todo in PLAN_CASES.items():
        seen = {(f["kind"], c.profile) for c in todo for f in c.faults}
        missing = {(k, p) for k in FAULT_KINDS for p in PROFILES
                   if not (k in LINK_KINDS and load_profile(p).links is None)} - seen
        assert not missing, (plan, sorted(missing))


def test_documents_follow_the_contract(corpus_docs: dict[str, dict]) -> None:
    for plan in PLAN_CASES:
        doc = corpus_docs[plan]
        assert doc["schema"] == "burnin.result/1" and doc["plan"] == plan
        assert len(doc["cards"]) == len(PLAN_CASES[plan])
        for c in doc["cards"]:
            fails = [f for f in c["findings"] if f["severity"] == "fail"]
            assert c["actions"] == sorted(set(c["actions"])) and "none" not in c["actions"]
            assert (c["verdict"] == "pass") == (not fails), c
            for f in c["findings"]:
                if f["code"].startswith("memory.") and f["severity"] == "fail":
                    assert {"address", "bit"} <= set(f["location"]), f  # contract: always both


# -- fault specs the config must refuse: exit 2, one line naming the device, the fault, the field --
BAD_FAULTS = [
    ("rtx4090-blower-48gb", 1, {"kind": "memory.stuck_bit", "address": 1 << 20, "bit": 0, "value": 1}, "address"),
    ("h100-sxm5-80gb", 16, {"kind": "memory.stuck_bit", "address": 16 << 20, "bit": 0, "value": 1}, "address"),
    ("ascend-910b", 64, {"kind": "memory.transition", "address": 5, "bit": 8, "direction": "up"}, "bit"),
    ("ascend-910b", 64, {"kind": "memory.coupling", "aggressor": 1, "aggressor_bit": 0, "victim": 1 << 30,
                         "victim_bit": 0, "trigger": "up", "effect": "set"}, "victim"),
    ("h100-sxm5-80gb", 64, {"kind": "memory.address_decoder", "address": 3, "alias": 64 << 20}, "alias"),
    ("h100-sxm5-80gb", 64, {"kind": "memory.retention", "address": -1, "bit": 0, "seconds": 5}, "address"),
    ("h100-sxm5-80gb", 64, {"kind": "memory.intermittent", "address": 9, "bit": -1, "probability": 0.1}, "bit"),
    ("h100-sxm5-80gb", 64, {"kind": "memory.stuck_bit", "address": 9, "bit": 1}, "value"),
    ("h100-sxm5-80gb", 64, {"kind": "fan.stalled", "fan": 5}, "fan"),
    ("rtx4090-blower-48gb", 64, {"kind": "fan.weak", "fan": 2, "max_fraction": 0.5}, "fan"),
    ("h100-sxm5-80gb", 64, {"kind": "pcie.replays", "per_minute": 5, "lanes": 16}, "lanes"),
    ("h100-sxm5-80gb", 64, {"kind": "gpu.melted"}, "kind"),
    ("h100-sxm5-80gb", 64, {"kind": "compute.sdc"}, "sdc"),
]


@pytest.mark.parametrize("profile, mib, fault, field", BAD_FAULTS, ids=lambda x: str(x)[:40])
def test_bad_fault_spec_is_exit_2_naming_device_and_fault(tmp_path: Path, profile: str, mib: int, fault: dict,
                                                          field: str) -> None:
    dev = {"backend": "mock", "profile": profile, "serial": "BAD-1", "slot": 3, "memory_mib": mib,
           "faults": [{"kind": "xid", "code": 13}, fault]}
    rack = tmp_path / "bad.toml"
    rack.write_text(rack_toml([dev], name="bad"), encoding="utf-8")
    res = CliRunner().invoke(main, ["run", str(rack), "--json", str(tmp_path / "o.json"), "-q"])
    assert res.exit_code == 2, res.output
    line = res.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "BAD-1" in line and "faults[1]" in line and field in line, line


def test_same_config_and_seed_give_the_same_outcome(tmp_path: Path) -> None:
    """mock-faults.md: deterministic. Two runs of one small rack agree on everything measured."""
    picks = [c for c in cases("quick") if c.serial.split("-", 2)[2] in
             {"sdcP0.03", "intermittent", "paste1.8", "replay1.3", "weak1"}][:4] + healthy("quick", 1)
    docs = []
    for i in range(2):
        (tmp_path / str(i)).mkdir()
        docs.append(run_rack(picks, "quick", tmp_path / str(i)))
    assert len(picks) >= 5

    def essence(doc: dict) -> list:
        return [(c["serial"], c["verdict"], c["actions"],
                 json.dumps([(f["code"], f["severity"], f["location"], f["message"]) for f in c["findings"]]),
                 json.dumps([(t["name"], t["status"], t["duration_s"], t["metrics"]) for t in c["tests"]],
                            default=str))
                for c in doc["cards"]]

    first, second = (essence(d) for d in docs)
    for a, b in zip(first, second, strict=True):
        assert a[:4] == b[:4]
        assert _strip_wall(a[4]) == _strip_wall(b[4]), a[0]


def _strip_wall(tests_json: str) -> list:
    """Test metrics without the wall-clock ones (``*wall*``), which differ run to run."""
    out = []
    for name, status, dur, metrics in json.loads(tests_json):
        m = {k: v for k, v in (metrics or {}).items() if "wall" not in k}
        out.append((name, status, dur, json.dumps(m, sort_keys=True)))
    return out
